"""The dot-product loop of the numba and Cython kernels, against the float64 reference.

Products whose a rows and b columns run contiguously along k (a layer's x @ W.T) with k >= 512 and
a short side of at most 64 take it on AVX-512, by the C++ backend's rule: which products do (each
kernel's loop_for, the function its dispatch calls, and the same answers as gemmlab._cpp.loop_for);
k with and without a vector tail; m and n around the 4 x 6 tile (1, 5, 50, 64) and one longer side;
float32 and float64; sliced, every-other-row, stride-0 and negatively strided operands; strided
outputs; 1 and 2 threads; batches through the dispatch core; exact results on small integers. Every
Cython build this CPU supports runs these products (the portable and AVX2 ones by their other
loops).
"""

from functools import partial

import numpy as np
import pytest
import torch
from conftest import assert_untouched_outside, out_views, poisoned, randn, small_integers
from test_jit_kernels import KERNELS, cython_build, kernel_for, numba_jit
from test_kernel_abi import product

from gemmlab import _cpp
from gemmlab.reference import assert_close_to_reference, assert_exact

DTYPES = [torch.float32, torch.float64]
SIDES = [1, 5, 50, 64]  # one row or column, part of a tile, a layer's widths
KS = [512, 517, 784, 1000, 1001]  # tails of 0, 5, 0, 8, 9 float32 (0, 5, 0, 0, 1 float64) past whole vectors
LONG = [(512, 784, 50), (50, 784, 512), (301, 1000, 7), (3, 700, 257)]  # one side longer than 64


def shapes():
    return [(m, k, n) for k in KS for m in SIDES for n in SIDES] + LONG


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


def module(kernel):
    return numba_jit if kernel == "numba" else cython_build(kernel.removeprefix("cython-"))


def takes_dot_products(kernel) -> bool:
    """Whether the kernel has the loop: on AVX-512 only, as the C++ backend."""
    return numba_jit.WIDE if kernel == "numba" else kernel == "cython-avx512"


def loop(kernel, a, b) -> str:
    """The loop kernel's dispatch picks for a @ b (2-D tensors)."""
    size = a.element_size()
    return module(kernel).loop_for(a.shape[0], a.shape[1], b.shape[1], size, a.stride(1) * size, b.stride(0) * size)


def transposed_weights(m, k, n, dtype, make=randn):
    """(name, a, b) with a's rows and b's columns contiguous along k: x @ W.T and views of it."""
    yield "x @ W.T", make(m, k, dtype=dtype, seed=1), make(n, k, dtype=dtype, seed=2).T
    a, w = make(m + 2, k + 7, dtype=dtype, seed=3), make(n + 1, k + 5, dtype=dtype, seed=4)
    yield "sliced", a[1:m + 1, 3:3 + k], w[1:, 2:2 + k].T  # leading strides k + 7 and k + 5
    yield "every other row", make(2 * m, k, dtype=dtype, seed=5)[::2], make(3 * n, k, dtype=dtype, seed=6)[::3].T
    yield "stride-0 rows", make(1, k, dtype=dtype, seed=7).expand(m, k), make(k, 1, dtype=dtype, seed=8).expand(k, n)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_which_products_take_it(kernel, dtype):
    size = torch.tensor([], dtype=dtype).element_size()
    dot = "dot products" if takes_dot_products(kernel) else None

    def loop_of(m, k, n, a_step=1, b_step=1):
        return module(kernel).loop_for(m, k, n, size, a_step * size, b_step * size)

    small_work = numba_jit.SMALL_WORK if kernel == "numba" else module(kernel).BLOCKING["SMALL_WORK"]
    for m, k, n in shapes():
        assert loop_of(m, k, n) == (dot or ("packed" if m * k * n > small_work else "small")), (m, k, n)
    if dot is None:
        return
    assert loop_of(64, 511, 50) != dot  # rows too short
    assert loop_of(65, 784, 65) != dot and loop_of(64, 784, 65) == dot  # the short side
    assert loop_of(64, 784, 50, a_step=2) != dot and loop_of(64, 784, 50, b_step=50) != dot  # not contiguous along k
    reread = (1 << 20) // (64 * size)  # the longest k whose 64 short rows are 1 MiB
    assert loop_of(64, reread, 100) == dot and loop_of(64, reread + 1, 100) != dot
    assert loop_of(100, reread, 64) == dot and loop_of(100, reread + 1, 64) != dot
    assert loop_of(5, 784, 10, b_step=10) == "small" and loop_of(256, 256, 256) == "packed"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_rule_is_the_cpp_backends(kernel, dtype):
    """Where both run AVX-512, a product of row-major A and transposed B takes dot products here
    exactly where it does in the C++ backend."""
    if not takes_dot_products(kernel) or _cpp.cpu_path() != "avx512":
        pytest.skip("the loop runs on AVX-512 only")
    name = str(dtype).removeprefix("torch.")
    size = torch.tensor([], dtype=dtype).element_size()
    reread = (1 << 20) // (64 * size)
    for m, k, n in shapes() + [(64, 511, 50), (65, 784, 65), (64, reread, 100), (64, reread + 1, 100), (1, 4096, 1)]:
        ours = module(kernel).loop_for(m, k, n, size, size, size) == "dot products"
        assert ours == (_cpp.loop_for(m, k, n, name, b_transposed=True) == "dot products"), (m, k, n)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_shapes_and_layouts(kernel, dtype, nthreads, threads):
    torch.set_num_threads(nthreads)
    fn = kernel_for(kernel)
    for m, k, n in shapes():
        for name, a, b in transposed_weights(m, k, n, dtype):
            assert (loop(kernel, a, b) == "dot products") == takes_dot_products(kernel)
            out = poisoned(m, n, dtype=dtype)
            fn(a, b, out)
            assert_close_to_reference(out, a, b, what=f"{kernel} {name} ({m}, {k}) @ ({k}, {n}), {nthreads} threads")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(64, 784, 50), (5, 1001, 64), (301, 1000, 7)], ids=str)
def test_strided_outputs(kernel, dtype, shape, threads):
    """x @ W.T (the dot-product loop, where it runs) into outputs of other strides, nothing written
    outside them. (Every operand layout at these sizes: test_jit_kernels.test_views.)"""
    torch.set_num_threads(2)
    fn = kernel_for(kernel)
    m, k, n = shape
    a, b = randn(m, k, dtype=dtype, seed=11), randn(n, k, dtype=dtype, seed=12).T
    for name, out in out_views(m, n, dtype):
        fn(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} into a {name} out {shape}")
        assert_untouched_outside(out, f"{kernel} into a {name} out {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_exact_on_small_integers(kernel, dtype, nthreads, threads):
    """Every partial sum exact: a tile that drops, repeats or misplaces one product, a tail step
    included, is caught."""
    torch.set_num_threads(nthreads)
    fn = kernel_for(kernel)
    for m, k, n in [(64, 784, 50), (5, 1001, 7), (50, 517, 64), (1, 1000, 13), (301, 1001, 7)]:
        for name, a, b in transposed_weights(m, k, n, dtype, make=partial(small_integers, k=k)):
            out = poisoned(m, n, dtype=dtype)
            fn(a, b, out)
            assert_exact(out, a, b, what=f"{kernel} {name} ({m}, {k}) @ ({k}, {n}), {nthreads} threads")


def test_negative_strides():
    """The NumPy-level entry points take rows in reverse order (negative leading strides)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 784))[::-1]
    b = rng.standard_normal((50, 784))[::-1].T
    entry_points = [("numba", numba_jit.matmul_2d_numpy)] + [
        (kernel, lambda a, b, out, build=module(kernel): build.matmul_2d(a, b, out, num_threads=2))
        for kernel in KERNELS if kernel != "numba"
    ]
    for kernel, fn in entry_points:
        out = np.full((64, 50), np.nan)
        fn(a, b, out)
        assert_close_to_reference(torch.from_numpy(out), torch.from_numpy(a.copy()), torch.from_numpy(b.copy()),
                                  what=f"{kernel} on negative strides")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_batched_through_the_dispatch_core(kernel, dtype, nthreads, threads):
    """Each batch entry takes the loop through the kernel's C ABI function."""
    torch.set_num_threads(nthreads)
    m, k, n = 64, 784, 50
    cases = [
        ("one W for all", randn(3, m, k, dtype=dtype, seed=1), randn(n, k, dtype=dtype, seed=2).T),
        ("a W per entry", randn(4, m, k, dtype=dtype, seed=3), randn(4, n, k, dtype=dtype, seed=4).mT),
        ("broadcast", randn(2, 1, 5, 1001, dtype=dtype, seed=5), randn(3, 7, 1001, dtype=dtype, seed=6).mT),
        ("a stride-0 batch", randn(m, k, dtype=dtype, seed=7).expand(3, m, k), randn(3, n, k, dtype=dtype, seed=8).mT),
    ]
    for name, a, b in cases:
        assert_close_to_reference(product(kernel, a, b), a, b, what=f"{kernel} {name} {tuple(a.shape)} @ {tuple(b.shape)}")
