"""Every backend against the float64 reference: random shapes, views, batches, NumPy, autograd."""

from functools import partial

import numpy as np
import pytest
import torch
from conftest import COMPILED, MAX_DIM, layouts, max_dim, poisoned, randn, small_integers
from hypothesis import given
from hypothesis import strategies as st

import gemmlab
from gemmlab.reference import assert_close_to_reference, assert_exact, exact_integers
from gemmlab.registry import FLOATS, LADDER, get_backend

# Sizes that catch edge cases: empty, one, primes, and the rest at random.
SPECIAL = [0, 1, 2, 3, 5, 7, 13, 17, 31, 61, 64, 67]


def dims(backend):
    top = max_dim(backend)
    return st.one_of(st.sampled_from([d for d in SPECIAL if d <= top]), st.integers(0, top))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(data=st.data())
def test_2d_random_shapes(backend, dtype, data):
    m, k, n = (data.draw(dims(backend), label=label) for label in "mkn")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    a, b = randn(m, k, dtype=dtype, seed=seed), randn(k, n, dtype=dtype, seed=seed + 1)
    out = gemmlab.matmul(a, b, backend=backend)
    assert out.dtype == dtype and out.shape == (m, n)
    assert_close_to_reference(out, a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layouts(backend, dtype):
    m, k, n = (5, 7, 3) if backend == "loops" else (13, 17, 11)
    for name, a, b in layouts(m, k, n, dtype):
        assert_close_to_reference(gemmlab.matmul(a, b, backend=backend), a, b, what=f"{backend} on {name} views")


def exact_shapes(backend, dtype):
    """(m, k, n) for the exact checks: small for the Python-loop rungs, k up to 4097 for the rest
    (fewer where the dtype's exact integers run out: float16, bfloat16)."""
    top = max_dim(backend)
    shapes = [(top, top, top), (top - 2, top - 1, 3)] if backend in MAX_DIM else [(13, 31, 7), (29, 4097, 3), (67, 300, 61)]
    return [(m, min(k, exact_integers(dtype) // 16), n) for m, k, n in shapes]


def test_exact_on_small_integers(backend):
    """Integer inputs whose every partial sum is exact: the result must equal the product exactly, in
    every real dtype the backend takes, plain, through views and batched (a dropped term shows)."""
    for dtype in [d for d in get_backend(backend).dtypes if not d.is_complex]:
        for m, k, n in exact_shapes(backend, dtype):
            make = partial(small_integers, k=k)
            cases = [*layouts(m, k, n, dtype, make=make),
                     ("batched", make(2, m, k, dtype=dtype, seed=82), make(2, k, n, dtype=dtype, seed=83)),
                     ("batch folded into rows", make(3, m, k, dtype=dtype, seed=84), make(k, n, dtype=dtype, seed=85))]
            for name, a, b in cases:
                assert_exact(gemmlab.matmul(a, b, backend=backend), a, b, what=f"{backend} {name} {(m, k, n)}")


BATCHED = [
    ((4,), (4,)),
    ((4,), (4, 3)),
    ((2, 4), (4,)),
    ((3, 2, 4), (4, 5)),
    ((4,), (3, 4, 5)),
    ((3, 2, 4), (4,)),
    ((3, 2, 4), (3, 4, 5)),
    ((2, 1, 2, 4), (3, 4, 5)),
    ((1, 2, 4), (3, 4, 5)),
    ((2, 3, 2, 4), (1, 4, 5)),
    ((0, 2, 4), (4, 5)),
    ((2, 0, 4), (2, 4, 5)),
    ((2, 3, 0), (2, 0, 5)),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shapes", BATCHED, ids=str)
def test_batched_and_1d(backend, shapes, dtype):
    a, b = randn(*shapes[0], dtype=dtype, seed=20), randn(*shapes[1], dtype=dtype, seed=21)
    out = gemmlab.matmul(a, b, backend=backend)
    assert out.shape == torch.matmul(a, b).shape and out.dtype == dtype
    assert_close_to_reference(out, a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_transposed_views(backend, dtype):
    a = randn(3, 6, 4, dtype=dtype, seed=30).transpose(-1, -2)  # (3, 4, 6), each matrix transposed
    b = randn(6, 5, dtype=dtype, seed=31).expand(3, 6, 5)  # stride-0 batch
    assert_close_to_reference(gemmlab.matmul(a, b, backend=backend), a, b)


# The dtypes beyond float32 and float64 that CPU backends advertise (einsum and torch: float16,
# bfloat16, complex64, complex128), each checked on random data against the wide reference.
EXTRA_DTYPES = [(spec.name, dtype) for spec in LADDER if "cpu" in spec.devices for dtype in spec.dtypes if dtype not in FLOATS]


def test_extra_dtypes_are_the_advertised_ones():
    assert {name for name, _ in EXTRA_DTYPES} == {"einsum", "torch"}
    assert {dtype for _, dtype in EXTRA_DTYPES} == {torch.float16, torch.bfloat16, torch.complex64, torch.complex128}


@pytest.mark.parametrize("backend, dtype", EXTRA_DTYPES, ids=str)
def test_extra_dtypes_on_random_data(backend, dtype):
    cases = [("odd sizes", randn(13, 31, dtype=dtype, seed=70), randn(31, 7, dtype=dtype, seed=71))]
    cases += [(f"{name} views", a, b) for name, a, b in layouts(13, 17, 11, dtype)]
    cases += [(f"batched {sa} @ {sb}", randn(*sa, dtype=dtype, seed=72), randn(*sb, dtype=dtype, seed=73)) for sa, sb in BATCHED]
    for what, a, b in cases:
        if dtype.is_complex and a.numel() and b.numel():  # the imaginary parts must take part
            assert (a.imag != 0).all() and (b.imag != 0).all(), what
        out = gemmlab.matmul(a, b, backend=backend)
        assert out.dtype == dtype and out.shape == torch.matmul(a, b).shape, what
        assert_close_to_reference(out, a, b, what=f"{backend} {what}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(backend, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 5)).astype(dtype)
    b = rng.standard_normal((5, 4)).astype(dtype)
    cases = {
        "plain": (a, b),
        "negative strides": (a[::-1], b[:, ::-1]),
        "transposed": (np.asfortranarray(a), b.T.copy().T),
        "big-endian": (a.astype(a.dtype.newbyteorder(">")), b),
        "batched": (rng.standard_normal((2, 6, 5)).astype(dtype), b),
    }
    a_ro = a.copy()
    a_ro.flags.writeable = False
    cases["read-only"] = (a_ro, b)
    def tensor(x):  # torch cannot view negative strides or big-endian data: a native copy
        return torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))

    for name, (x, y) in cases.items():
        out = gemmlab.matmul(x, y, backend=backend)
        assert isinstance(out, np.ndarray) and out.dtype == dtype, name
        # The dtype's own bound: float64 results that went through float32 on the way fail it.
        assert_close_to_reference(tensor(out), tensor(x), tensor(y), what=f"{backend} on {name} NumPy arrays")


def test_numpy_vector_dot_is_a_scalar(backend):
    x, y = np.arange(1.0, 4.0), np.array([0.5, -2.0, 3.0])
    out = gemmlab.matmul(x, y, backend=backend)
    assert np.ndim(out) == 0 and out == pytest.approx(np.dot(x, y))


def test_kernel_writes_every_element(backend):
    """Call the backend's 2-D kernel on a NaN-filled output: an element it skips stays NaN."""
    kernel = get_backend(backend).kernel
    for m, k, n in [(5, 3, 4), (7, 0, 3), (1, 9, 1)]:
        a, b = randn(m, k, seed=40), randn(k, n, seed=41)
        out = poisoned(m, n)
        kernel(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{backend} kernel at {(m, k, n)}")


@pytest.mark.parametrize("backend", COMPILED)
def test_thread_counts_agree(backend, threads):
    """The threaded and the single-thread paths of a parallel kernel give the same answer."""
    a, b = randn(97, 61, dtype=torch.float32, seed=50), randn(61, 83, dtype=torch.float32, seed=51)
    results = []
    for count in (1, 2, 3):
        torch.set_num_threads(count)
        results.append(gemmlab.matmul(a, b, backend=backend))
        assert_close_to_reference(results[-1], a, b, what=f"{backend} with {count} threads")
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_backward_uses_same_backend_and_matches_torch(backend, kernel_calls):
    a = randn(2, 3, 4, seed=60).requires_grad_()
    b = randn(4, 5, seed=61).requires_grad_()
    calls = kernel_calls(backend)
    gemmlab.matmul(a, b, backend=backend).pow(2).sum().backward()
    # forward (batch folded into rows), grad_a, grad_b
    assert sorted((c.a, c.b) for c in calls) == sorted([((6, 4), (4, 5)), ((6, 5), (5, 4)), ((4, 6), (6, 5))])
    a_ref, b_ref = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.matmul(a_ref, b_ref).pow(2).sum().backward()
    torch.testing.assert_close(a.grad, a_ref.grad)
    torch.testing.assert_close(b.grad, b_ref.grad)
