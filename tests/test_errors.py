"""Bad input gets a clear Python exception naming what was wrong, never a crash or a wrong answer."""

import numpy as np
import pytest
import torch
from conftest import COMPILED, randn

import gemmlab
from gemmlab import BackendUnavailableError
from gemmlab.registry import BACKENDS, Backend


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown gemmlab backend 'blas'.*loops.*cython.*cpp.*torch"):
        gemmlab.matmul(randn(2, 2), randn(2, 2), backend="blas")


def test_unavailable_backend_says_why_and_how(monkeypatch):
    broken = Backend("broken", "gemmlab.backends.no_such_module", "test double", hint="rebuild it")
    monkeypatch.setitem(BACKENDS, "broken", broken)
    assert not broken.available and "No module named" in broken.info()["reason"]
    with pytest.raises(BackendUnavailableError, match=r"'broken' is not available here \(ModuleNotFoundError.*rebuild it"):
        gemmlab.matmul(randn(2, 2), randn(2, 2), backend="broken")


def test_inner_dimensions_differ(backend):
    with pytest.raises(ValueError, match=r"inner dimensions differ \(784 vs 785\).*\(5, 784\).*\(785, 10\)"):
        gemmlab.matmul(randn(5, 784), randn(785, 10), backend=backend)


def test_zero_dim_operand(backend):
    with pytest.raises(ValueError, match=r"at least 1 dimension.*shape \(\)"):
        gemmlab.matmul(torch.tensor(2.0, dtype=torch.float64), randn(3), backend=backend)


def test_batch_dimensions_do_not_broadcast(backend):
    with pytest.raises(ValueError, match=r"batch dimensions do not broadcast.*\(2, 3, 4\).*\(5, 4, 6\)"):
        gemmlab.matmul(randn(2, 3, 4), randn(5, 4, 6), backend=backend)


def test_mismatched_dtypes(backend):
    with pytest.raises(TypeError, match=r"different dtypes.*float32.*float64"):
        gemmlab.matmul(randn(2, 3, dtype=torch.float32), randn(3, 2), backend=backend)


def test_unsupported_dtype_names_what_is_supported(backend):
    # The dtypes a backend does support are checked on random data in test_correctness.py.
    candidates = [torch.int64, torch.int8, torch.bool, torch.float16, torch.bfloat16, torch.complex64, torch.complex128]
    unsupported = [dtype for dtype in candidates if dtype not in BACKENDS[backend].dtypes]
    assert {torch.int64, torch.int8, torch.bool} <= set(unsupported)  # no backend multiplies integers
    for dtype in unsupported:
        a, b = torch.ones(2, 3, dtype=dtype), torch.ones(3, 2, dtype=dtype)
        with pytest.raises(TypeError, match=rf"backend '{backend}' supports .*float32.*; got .*{str(dtype)[6:]}"):
            gemmlab.matmul(a, b, backend=backend)


def test_numpy_integer_arrays_rejected(backend):
    with pytest.raises(TypeError, match=r"supports .*int64"):
        gemmlab.matmul(np.ones((2, 3), dtype=np.int64), np.ones((3, 2), dtype=np.int64), backend=backend)


def test_device_errors(backend):
    meta = torch.empty(2, 3, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"different devices.*cpu.*meta"):
        gemmlab.matmul(randn(3, 2), meta, backend=backend)
    with pytest.raises(ValueError, match=rf"backend '{backend}' runs on cpu.*meta"):
        gemmlab.matmul(meta, meta.T, backend=backend)


@pytest.mark.parametrize("a, b", [(np.ones((2, 2)), torch.ones(2, 2)), ([[1.0]], [[1.0]]), (torch.ones(2, 2), 3.0)])
def test_operand_types(a, b):
    with pytest.raises(TypeError, match="two torch.Tensors or two numpy.ndarrays"):
        gemmlab.matmul(a, b)


def test_sparse_operand():
    with pytest.raises(TypeError, match="dense"):
        gemmlab.matmul(torch.eye(3, dtype=torch.float64).to_sparse(), randn(3, 3), backend="cpp")


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_empty_dimensions(backend, shape):
    m, k, n = shape
    out = gemmlab.matmul(randn(m, k), randn(k, n), backend=backend)
    assert out.shape == (m, n)
    assert torch.equal(out, torch.zeros(m, n, dtype=torch.float64))


# --- compiled entry points called directly: they check their own arguments -----------------------

def _entry_point(backend):
    """The compiled function itself, and how it is fed (tensors or NumPy arrays)."""
    if backend == "cpp":
        from gemmlab._cpp import matmul_2d

        return matmul_2d, lambda t: t
    if backend == "cython":
        from gemmlab.backends._cython_kernel import matmul_2d
    else:
        from gemmlab.backends.numba_jit import matmul_2d_numpy as matmul_2d
    return matmul_2d, lambda t: t.numpy()


def _bad_calls():
    a, b, out = randn(4, 3), randn(3, 5), torch.empty(4, 5, dtype=torch.float64)
    yield "inner dimensions", (a, randn(2, 5), out)
    yield "out shape", (a, b, torch.empty(5, 4, dtype=torch.float64))
    yield "1-D operand", (randn(3), b, out)
    yield "3-D operand", (a, randn(1, 3, 5), out)
    yield "dtype mismatch", (a.float(), b, out)
    yield "integer dtype", (a.long(), b.long(), out.long())
    yield "expanded out", (a, b, torch.empty(1, 5, dtype=torch.float64).expand(4, 5))
    yield "out aliases a", (a[:, :3], randn(3, 3), a[:, :3])
    base = randn(4, 4)
    yield "out overlaps b", (randn(4, 4), base, base.T)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("case", [name for name, _ in _bad_calls()])
def test_compiled_entry_point_rejects(backend, case):
    fn, convert = _entry_point(backend)
    args = dict(_bad_calls())[case]
    with pytest.raises((ValueError, TypeError, RuntimeError)):
        fn(*(convert(t) for t in args))


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_entry_point_rejects_non_arrays(backend):
    fn, _ = _entry_point(backend)
    with pytest.raises(TypeError):
        fn(None, None, None)


def test_cpp_entry_point_messages_name_the_arguments():
    from gemmlab._cpp import matmul_2d

    with pytest.raises(ValueError, match=r"inner dimensions differ.*a: \[4, 3\] Double on cpu, b: \[2, 5\]"):
        matmul_2d(randn(4, 3), randn(2, 5), torch.empty(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="runs on the CPU"):
        meta = torch.empty(2, 2, device="meta", dtype=torch.float64)
        matmul_2d(meta, meta, meta)


def test_compiled_entry_points_on_good_input_still_work():
    """The negative tests above mean something only if the same entry points accept good input."""
    for backend in COMPILED:
        fn, convert = _entry_point(backend)
        a, b = randn(4, 3), randn(3, 5)
        out = torch.full((4, 5), float("nan"), dtype=torch.float64)
        fn(convert(a), convert(b), convert(out))
        torch.testing.assert_close(out, a @ b)
