"""Bad input gets a clear Python exception naming what was wrong, never a crash or a wrong answer."""

import re

import numpy as np
import pytest
import torch
from conftest import COMPILED, poisoned, randn

import gemmlab
from gemmlab import BackendUnavailableError
from gemmlab.reference import assert_close_to_reference
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

WHO = {"cpp": "gemmlab._cpp.matmul_2d", "cython": "gemmlab cython matmul_2d", "numba": "gemmlab numba matmul_2d"}


def _entry_point(backend):
    """The compiled function itself, and how it is fed (tensors or NumPy arrays)."""
    if backend == "cpp":
        from gemmlab._cpp import matmul_2d

        return matmul_2d, lambda t: t
    if backend == "cython":
        from gemmlab.backends.cython_ext import matmul_2d_numpy as matmul_2d  # the build the backend runs
    else:
        from gemmlab.backends.numba_jit import matmul_2d_numpy as matmul_2d
    return matmul_2d, lambda t: t.numpy()


# Each bad call, and what the error must say: for the C++ entry point (tensors) and for the NumPy
# entry points of the Cython and Numba kernels ({who} is the entry point's name).
BAD_CALLS = {
    "inner dimensions": (
        lambda: (randn(4, 3), randn(2, 5), torch.empty(4, 5, dtype=torch.float64)),
        r"{who}: inner dimensions differ; got a: \[4, 3\] float64 on cpu, b: \[2, 5\] float64 on cpu, out: \[4, 5\]",
        r"{who}: shapes do not fit: a \(4, 3\), b \(2, 5\), out \(4, 5\); need a \(m, k\), b \(k, n\), out \(m, n\)"),
    "out shape": (
        lambda: (randn(4, 3), randn(3, 5), torch.empty(5, 4, dtype=torch.float64)),
        r"{who}: out must have shape \(a.size\(0\), b.size\(1\)\); got a: \[4, 3\] .*, out: \[5, 4\]",
        r"{who}: shapes do not fit: a \(4, 3\), b \(3, 5\), out \(5, 4\)"),
    "1-D operand": (
        lambda: (randn(3), randn(3, 5), torch.empty(4, 5, dtype=torch.float64)),
        r"{who} needs 2-D tensors; got a: \[3\] float64 on cpu",
        r"{who} needs 2-D arrays; got a \(3,\) float64, b \(3, 5\) float64"),
    "3-D operand": (
        lambda: (randn(4, 3), randn(1, 3, 5), torch.empty(4, 5, dtype=torch.float64)),
        r"{who} needs 2-D tensors; got .*b: \[1, 3, 5\] float64",
        r"{who} needs 2-D arrays; got .*b \(1, 3, 5\) float64"),
    "dtype mismatch": (
        lambda: (randn(4, 3).float(), randn(3, 5), torch.empty(4, 5, dtype=torch.float64)),
        r"{who} needs one dtype for a, b and out; got a: \[4, 3\] float32 on cpu, b: \[3, 5\] float64",
        r"{who} needs float32 or float64 arrays of one dtype.*; got a \(4, 3\) float32, b \(3, 5\) float64"),
    "integer dtype": (
        lambda: (randn(4, 3).long(), randn(3, 5).long(), torch.empty(4, 5, dtype=torch.int64)),
        r"{who} supports float32 and float64; got a: \[4, 3\] int64",
        r"{who} needs float32 or float64 arrays of one dtype.*; got a \(4, 3\) int64"),
    "expanded out": (
        lambda: (randn(4, 3), randn(3, 5), torch.empty(1, 5, dtype=torch.float64).expand(4, 5)),
        r"{who}: out has elements that share memory \(an expanded view\?\); got .* strides .*out: \[0, 1\]",
        r"{who}: out \(4, 5\) has elements that share memory \(byte strides \(0, 8\)"),
    "out aliases a": (
        lambda: (lambda a: (a, randn(3, 3), a))(randn(4, 3)),
        r"{who}: out shares memory with a; pass a separate output tensor; got a: \[4, 3\] .*; strides a: \[3, 1\]",
        r"{who}: out shares memory with a; pass a separate output array \(a \(4, 3\), b \(3, 3\), out \(4, 3\); "
        r"byte strides a \(24, 8\)"),
    "out overlaps b": (
        lambda: (lambda base: (randn(4, 4), base, base.T))(randn(4, 4)),
        r"{who}: out shares memory with b; .*strides a: \[4, 1\], b: \[4, 1\], out: \[1, 4\]",
        r"{who}: out shares memory with b; .*byte strides a \(32, 8\), b \(32, 8\), out \(8, 32\)"),
    "out overlaps a sliced view": (  # not dense: ATen's own overlap test would not see it
        lambda: (lambda base: (base[::2, :3], randn(3, 2), base[1::2, 1::3]))(randn(8, 6)),
        r"{who}: out shares memory with a",
        r"{who}: out shares memory with a"),
}


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_compiled_entry_point_rejects(backend, case):
    fn, convert = _entry_point(backend)
    make, cpp_message, numpy_message = BAD_CALLS[case]
    a, b, out = make()
    before = out.clone()
    message = (cpp_message if backend == "cpp" else numpy_message).format(who=re.escape(WHO[backend]))
    kind = TypeError if "dtype" in case else ValueError  # as gemmlab.matmul raises for the same fault
    with pytest.raises(kind, match=message):
        fn(convert(a), convert(b), convert(out))
    torch.testing.assert_close(out, before, rtol=0, atol=0, equal_nan=True, msg="the call wrote to out before raising")


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_entry_point_rejects_non_arrays(backend):
    fn, _ = _entry_point(backend)
    message = {"cpp": r"(?s)matmul_2d\(\): incompatible function arguments.*\(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor\)",
               "cython": r"gemmlab cython matmul_2d: a must be a 2-D float32 or float64 array; got NoneType",
               "numba": r"gemmlab numba matmul_2d: a must be a 2-D numpy array; got NoneType"}[backend]
    with pytest.raises(TypeError, match=message):
        fn(None, None, None)


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_numpy_entry_points_reject_read_only_and_byte_swapped_arrays(backend):
    fn, _ = _entry_point(backend)
    who = re.escape(WHO[backend])
    a, b = np.ones((4, 3)), np.ones((3, 5))
    frozen = np.full((4, 5), np.nan)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=rf"{who}: out is read-only; got a \(4, 3\) float64, b \(3, 5\) float64, out \(4, 5\)"):
        fn(a, b, frozen)
    with pytest.raises(TypeError, match=rf"{who} needs .*machine's byte order; got a \(4, 3\) >f8"):
        fn(a.astype(">f8"), b, np.empty((4, 5)))


def test_cython_address_entry_point_rejects():
    """The Cython kernel's internal entry point (operands as address, shape and element strides)."""
    from gemmlab.backends import by_address, cython_ext

    fn = cython_ext._kernel._matmul_2d_addresses
    a, b = randn(4, 3), randn(3, 5)
    out = poisoned(4, 5)
    args = by_address(a, b, out)
    with pytest.raises(TypeError, match=r"gemmlab cython matmul_2d: itemsize must be 4 \(float32\) or 8 \(float64\), got 2"):
        fn(2, *args, 1)
    with pytest.raises(ValueError, match=r"gemmlab cython matmul_2d: num_threads must be >= 1, got 0"):
        fn(8, *args, 0)
    with pytest.raises(ValueError, match=r"shapes do not fit: a \(4, 3\), b \(2, 5\), out \(4, 5\)"):
        fn(8, *by_address(a, randn(2, 5), out), 1)
    with pytest.raises(ValueError, match=r"out shares memory with a; .*\(a \(4, 3\), b \(3, 3\), out \(4, 3\); byte strides a \(24, 8\)"):
        fn(8, *by_address(a, randn(3, 3), a), 1)
    assert out.isnan().all()
    fn(8, *args, 1)
    torch.testing.assert_close(out, a @ b)


def test_cpp_entry_point_names_devices_and_negated_views():
    from gemmlab._cpp import matmul_2d

    meta = torch.empty(2, 2, device="meta", dtype=torch.float64)
    with pytest.raises(ValueError, match=r"gemmlab._cpp.matmul_2d runs on the CPU; got a: \[2, 2\] float64 on meta"):
        matmul_2d(meta, meta, meta)
    a, b, out = randn(4, 3), randn(3, 5), poisoned(4, 5)
    with pytest.raises(ValueError, match=r"gemmlab._cpp.matmul_2d cannot read lazily negated tensors \(call .resolve_neg\(\) "
                                         r"first\); got a: \[4, 3\] float64"):
        matmul_2d(torch._neg_view(a), b, out)  # its memory holds a, its value is -a: never read it as a
    with pytest.raises(ValueError, match=r"needs strided tensors; got a: \[3, 3\] float64"):
        matmul_2d(torch.eye(3, dtype=torch.float64).to_sparse(), randn(3, 3), torch.empty(3, 3, dtype=torch.float64))
    assert out.isnan().all()


def test_compiled_entry_points_on_good_input_still_work():
    """The negative tests above mean something only if the same entry points accept good input."""
    for backend in COMPILED:
        fn, convert = _entry_point(backend)
        a, b = randn(4, 3), randn(3, 5)
        out = poisoned(4, 5)
        fn(convert(a), convert(b), convert(out))
        torch.testing.assert_close(out, a @ b)


def test_lazily_negated_operands_are_read_as_their_value(backend):
    """z.conj().imag is a float tensor whose memory holds imag(z) and whose value is -imag(z): every
    backend must compute with the value (the compiled kernels read memory, so it is resolved first)."""
    z = torch.randn(5, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    x = z.conj().imag
    assert x.is_neg()
    b = randn(4, 3, seed=2)
    assert_close_to_reference(gemmlab.matmul(x, b, backend=backend), x.resolve_neg(), b, what=f"{backend}, negated a")
    assert_close_to_reference(gemmlab.matmul(b.T, x.T, backend=backend), b.T, x.resolve_neg().T, what=f"{backend}, negated b")
