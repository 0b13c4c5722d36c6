"""Every backend against the float64 reference: random shapes, views, batches, NumPy, autograd."""

import numpy as np
import pytest
import torch
from conftest import COMPILED, max_dim, randn
from hypothesis import given
from hypothesis import strategies as st

import gemmlab
from gemmlab.reference import assert_close_to_reference
from gemmlab.registry import get_backend

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


def views(m, k, n, dtype):
    """(name, a, b) pairs whose operands are not plain contiguous tensors."""
    a, b = randn(m, k, dtype=dtype, seed=1), randn(k, n, dtype=dtype, seed=2)
    yield "transposed", randn(k, m, dtype=dtype, seed=3).T, randn(n, k, dtype=dtype, seed=4).T
    yield "sliced", randn(2 * m + 1, 3 * k, dtype=dtype, seed=5)[1::2, 2::3], randn(k + 2, 2 * n, dtype=dtype, seed=6)[2:, ::2]
    yield "expanded rows", randn(1, k, dtype=dtype, seed=7).expand(m, k), randn(k, 1, dtype=dtype, seed=8).expand(k, n)
    yield "expanded columns", randn(m, 1, dtype=dtype, seed=9).expand(m, k), randn(1, n, dtype=dtype, seed=10).expand(k, n)
    yield "offset", randn(m * k + 3, dtype=dtype, seed=11)[3:].view(m, k), b
    yield "mixed", a, randn(n, k + 1, dtype=dtype, seed=12)[:, 1:].T


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_views(backend, dtype):
    m, k, n = (5, 7, 3) if backend == "loops" else (13, 17, 11)
    for name, a, b in views(m, k, n, dtype):
        assert_close_to_reference(gemmlab.matmul(a, b, backend=backend), a, b, what=f"{backend} on {name} views")


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


@pytest.mark.parametrize("shapes", BATCHED, ids=str)
def test_batched_and_1d(backend, shapes):
    a, b = randn(*shapes[0], seed=20), randn(*shapes[1], seed=21)
    out = gemmlab.matmul(a, b, backend=backend)
    assert out.shape == torch.matmul(a, b).shape
    assert_close_to_reference(out, a, b)


def test_batched_transposed_views(backend):
    a = randn(3, 6, 4, seed=30).transpose(-1, -2)  # (3, 4, 6), each matrix transposed
    b = randn(6, 5, seed=31).expand(3, 6, 5)  # stride-0 batch
    assert_close_to_reference(gemmlab.matmul(a, b, backend=backend), a, b)


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
    for name, (x, y) in cases.items():
        out = gemmlab.matmul(x, y, backend=backend)
        assert isinstance(out, np.ndarray) and out.dtype == dtype, name
        np.testing.assert_allclose(out, np.matmul(x.astype(np.float64), y.astype(np.float64)), rtol=1e-4, atol=1e-4, err_msg=name)


def test_numpy_vector_dot_is_a_scalar(backend):
    x, y = np.arange(1.0, 4.0), np.array([0.5, -2.0, 3.0])
    out = gemmlab.matmul(x, y, backend=backend)
    assert np.ndim(out) == 0 and out == pytest.approx(np.dot(x, y))


def test_kernel_writes_every_element(backend):
    """Call the backend's 2-D kernel on a NaN-filled output: an element it skips stays NaN."""
    kernel = get_backend(backend).kernel
    for m, k, n in [(5, 3, 4), (7, 0, 3), (1, 9, 1)]:
        a, b = randn(m, k, seed=40), randn(k, n, seed=41)
        out = torch.full((m, n), float("nan"), dtype=torch.float64)
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


def test_backward_uses_same_backend_and_matches_torch(backend, record_products):
    a = randn(2, 3, 4, seed=60).requires_grad_()
    b = randn(4, 5, seed=61).requires_grad_()
    products = record_products(backend)
    gemmlab.matmul(a, b, backend=backend).pow(2).sum().backward()
    # forward (batch folded into rows), grad_a, grad_b
    assert sorted(products()) == sorted([((6, 4), (4, 5)), ((6, 5), (5, 4)), ((4, 6), (6, 5))])
    a_ref, b_ref = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.matmul(a_ref, b_ref).pow(2).sum().backward()
    torch.testing.assert_close(a.grad, a_ref.grad)
    torch.testing.assert_close(b.grad, b_ref.grad)
