"""gemmlab's native road: the C++ dispatch core (csrc/dispatch.cpp) behind gemmlab.matmul, and out=.

out= on every backend (written, returned, refused with a clear error and left untouched); that the
backends the core serves really take it (one call, never the Python road) and that what it must
not take still works through the Python road; batched products through the core on both sides of
its thresholds, exact on small integers; garbage into its entry points; huge-page advice for the
large outputs it allocates; the default backend per thread on the native road.
"""

import contextlib
import ctypes
import os
import re
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CPU_BACKENDS, import_or_fail, poisoned, randn, require_backend, small_integers
from fresh_python import run_python
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import gemmlab
from gemmlab import dispatch, registry
from gemmlab.reference import assert_close_to_reference, assert_exact

core = import_or_fail("gemmlab._cpp")  # not built: every test here fails, saying why

NAN = float("nan")


def nan_like_product(a, b):
    """A NaN-filled tensor of a @ b's shape and dtype: an element the product does not write shows."""
    return poisoned(*torch.matmul(a, b).shape, dtype=a.dtype)


# --- out= on every backend -------------------------------------------------------------------------
OUT_SHAPES = [
    ((5, 7), (7, 3)),
    ((7,), (7,)),  # a 0-d out
    ((7,), (2, 7, 3)),
    ((2, 5, 7), (7,)),
    ((2, 1, 5, 7), (3, 7, 4)),  # batch dimensions broadcast both ways
    ((5, 0), (0, 3)),  # k = 0: zeros, NaN out or not
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shapes", OUT_SHAPES, ids=str)
def test_out_is_written_and_returned(backend, shapes, dtype):
    a, b = randn(*shapes[0], dtype=dtype, seed=1), randn(*shapes[1], dtype=dtype, seed=2)
    out = nan_like_product(a, b)
    assert gemmlab.matmul(a, b, backend=backend, out=out) is out
    assert_close_to_reference(out, a, b, what=f"{backend} into out")


def strided_outs(dtype):
    """(name, base, out): outs that are views of a NaN-filled base, for a (5, 7) @ (7, 3) product or,
    for the batched one, (2, 5, 7) @ (2, 7, 3) or (7, 3). Elements of base outside out must stay NaN."""
    base = poisoned(3, 5, dtype=dtype)
    yield "transposed", base, base.T
    base = poisoned(11, 10, dtype=dtype)
    yield "slice with gaps", base, base[1::2, 2::3]
    base = poisoned(5, 2, 4, dtype=dtype)
    yield "batch dimension permuted, a column left out", base, base.permute(1, 0, 2)[..., 1:]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_strided_out_gets_exactly_its_elements(backend, dtype):
    for name, base, out in strided_outs(dtype):
        a = randn(*out.shape[:-1], 7, dtype=dtype, seed=3)
        for b in (randn(*out.shape[:-2], 7, 3, dtype=dtype, seed=4), randn(7, 3, dtype=dtype, seed=5)):  # a batched b, a shared one
            base.fill_(NAN)
            assert gemmlab.matmul(a, b, backend=backend, out=out) is out, name
            assert_close_to_reference(out, a, b, what=f"{backend} into a {name} out, b {tuple(b.shape)}")
            outside = torch.ones_like(base, dtype=torch.bool)
            outside.as_strided(out.shape, out.stride(), out.storage_offset()).fill_(False)
            assert base[outside].isnan().all(), f"{backend} wrote outside a {name} out"


@pytest.mark.parametrize("shapes", OUT_SHAPES, ids=str)
def test_numpy_out_for_numpy_operands(backend, shapes):
    a, b = randn(*shapes[0], seed=5).numpy(), randn(*shapes[1], seed=6).numpy()
    for out in (np.full(np.matmul(a, b).shape, NAN), np.full(np.matmul(a, b).shape[::-1], NAN).T):
        result = gemmlab.matmul(a, b, backend=backend, out=out)
        assert result is out  # the array itself, also for 1-D @ 1-D (0-d), as np.matmul(out=) returns it
        assert_close_to_reference(torch.from_numpy(out), torch.from_numpy(a), torch.from_numpy(b))


def read_only(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


def out_refusals():
    """(name, a, b, out, error, match): out= calls every backend must refuse, before writing anything.
    Mostly a (6, 6) @ (6, 6) product, so that an operand has the result's shape."""
    a, b = randn(6, 6, seed=10), randn(6, 6, seed=11)
    zeros = partial(torch.zeros, dtype=torch.float64)
    wanted = r"out must have the product's shape \(6, 6\), dtype float64 and device cpu; got out: "
    shared = r"out shares memory with an operand; pass a separate output"
    autograd = r"out= does not support automatic differentiation, but "
    yield "wrong shape", a, b, zeros(6, 5), ValueError, wanted + r"shape \(6, 5\), float64 on cpu"
    yield "wrong dtype", a, b, zeros(6, 6, dtype=torch.float32), ValueError, wanted + r"shape \(6, 6\), float32 on cpu"
    yield "wrong device", a, b, zeros(6, 6, device="meta"), ValueError, wanted + r"shape \(6, 6\), float64 on meta"
    yield "out is a", a, b, a, ValueError, shared
    yield "out is a view of b", a, b, b.T, ValueError, shared
    rows = randn(7, 6, seed=12)
    yield "out overlaps a's rows", rows[:6], b, rows[1:], ValueError, shared
    x = randn(40, 100, seed=13).numpy()  # two views of one array: two storages, one memory
    yield "out over a's memory, another storage", torch.from_numpy(x[:, :40]), randn(40, 40), torch.from_numpy(x[:, 20:60]), ValueError, shared
    yield "expanded out (stride 0)", a, b, zeros(1, 6).expand(6, 6), ValueError, r"out has elements that share memory \(strides \(0, 1\)\)"
    yield "NumPy out for tensors", a, b, np.zeros((6, 6)), TypeError, r"out must be a torch.Tensor for tensor operands; got ndarray"
    yield "tensor out for NumPy operands", a.numpy(), b.numpy(), zeros(6, 6), TypeError, r"out must be a numpy.ndarray for NumPy operands; got Tensor"
    yield "read-only NumPy out", a.numpy(), b.numpy(), read_only(np.zeros((6, 6))), ValueError, r"out is a read-only array"
    yield "an operand requires grad", a.clone().requires_grad_(), b, zeros(6, 6), RuntimeError, autograd + "an operand requires grad"
    yield "out requires grad", a, b, zeros(6, 6, requires_grad=True), RuntimeError, autograd + "out requires grad"


@pytest.mark.parametrize("case", [case[0] for case in out_refusals()])
def test_refused_out_names_the_problem_and_stays_untouched(backend, case):
    _, a, b, out, error, match = next(c for c in out_refusals() if c[0] == case)

    def snapshot():  # out, and the operands it may share memory with
        return [x.copy() if isinstance(x, np.ndarray) else x.detach().clone() for x in (a, b, out)
                if not (isinstance(x, torch.Tensor) and x.is_meta)]

    before = snapshot()
    with pytest.raises(error, match=match):
        gemmlab.matmul(a, b, backend=backend, out=out)
    for now, then in zip(snapshot(), before):
        same = np.array_equal(now, then) if isinstance(now, np.ndarray) else torch.equal(now, then)
        assert same, f"{backend} wrote into a refused out ({case})"


def test_out_write_is_an_in_place_write_for_autograd(backend):
    """A backward pass that saved `out` must fail once out= overwrote it, as after any in-place op,
    instead of running on the new values."""
    a, b = randn(3, 4, seed=14), randn(4, 2, seed=15)
    weight, out = torch.ones(3, 2, dtype=torch.float64, requires_grad=True), randn(3, 2, seed=16)
    loss = (weight * out).sum()  # saves out for the backward pass
    gemmlab.matmul(a, b, backend=backend, out=out)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inference_tensor_out_outside_inference_mode(backend):
    """Refused outside inference mode, as torch refuses it, but before anything is written; inside, fine."""
    a, b = randn(3, 4, seed=17), randn(4, 2, seed=18)
    with torch.inference_mode():
        out = poisoned(3, 2)
    with pytest.raises(RuntimeError, match=r"out is an inference tensor, which cannot be written outside torch.inference_mode\(\)"):
        gemmlab.matmul(a, b, backend=backend, out=out)
    assert out.isnan().all()
    with torch.inference_mode():
        assert gemmlab.matmul(a, b, backend=backend, out=out) is out
    assert_close_to_reference(out, a, b)


# --- the native road is taken, and only where it should be --------------------------------------
@pytest.fixture
def native_road(monkeypatch):
    """Every name in registry.NATIVE_KERNELS (after every CPU backend and auto loaded, so each that has
    a core kernel is there) routed through a counting wrapper around the core, and the Python road
    (dispatch._matmul_python) recorded too. Returns (the names, the log): ("core", name, taken) per
    call into the core, ("python",) per entry into the Python road."""
    for name in CPU_BACKENDS:
        require_backend(name)
    assert registry.AUTO_BACKEND.available, registry.AUTO_BACKEND.info()
    assert {"cpp", "torch", "auto"} <= set(registry.NATIVE_KERNELS), registry.NATIVE_KERNELS
    log = []
    for name, (function, kernel) in list(registry.NATIVE_KERNELS.items()):
        def counting(a, b, kernel, out=None, function=function, name=name):
            result = function(a, b, kernel, out)
            log.append(("core", name, result is not None))
            return result

        monkeypatch.setitem(registry.NATIVE_KERNELS, name, (counting, kernel))
    python_road = dispatch._matmul_python
    monkeypatch.setattr(dispatch, "_matmul_python", lambda *args: log.append(("python",)) or python_road(*args))
    return sorted(registry.NATIVE_KERNELS), log


def taken_cases():
    """(name, a, b, out) the core takes: 2-D, 1-D, batched with broadcast, views, into out."""
    a, b = randn(5, 7, seed=20), randn(7, 3, seed=21)
    yield "2-D", a, b, None
    yield "1-D @ 1-D", randn(7, seed=22), randn(7, seed=23), None
    yield "broadcast batch", randn(2, 1, 5, 7, seed=24), randn(3, 7, 3, seed=25), None
    yield "transposed views", randn(7, 5, seed=26).T, randn(3, 7, seed=27).T, None
    yield "float32", a.float(), b.float(), None
    yield "into out", a, b, poisoned(5, 3)
    yield "into a transposed out", a, b, poisoned(3, 5).T
    yield "requires grad, under no_grad", a.clone().requires_grad_(), b, None  # (run under no_grad below)


def test_native_backends_make_one_call_into_the_core(native_road):
    names, log = native_road
    for name in names:
        for case, a, b, out in taken_cases():
            log.clear()
            with torch.no_grad() if a.requires_grad else contextlib.nullcontext():
                result = gemmlab.matmul(a, b, backend=name, out=out)
            assert log == [("core", name, True)], f"{name}, {case}: {log}"
            assert out is None or result is out
            assert_close_to_reference(result, a, b, what=f"{name}, {case}")


class Tagged(torch.Tensor):
    """A tensor subclass: its __torch_function__ may want to see every op, so the core must not take it."""


class Recording:
    """A torch mode that runs every function it sees and keeps a list of them."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def record(self, func, args, kwargs):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class RecordingFunctionMode(Recording, TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.record(func, args, kwargs)


class RecordingDispatchMode(Recording, TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.record(func, args, kwargs)


@pytest.mark.parametrize("mode", [RecordingFunctionMode, RecordingDispatchMode], ids=lambda m: m.__name__)
def test_modes_send_the_call_to_the_python_road(native_road, mode):
    names, log = native_road
    a, b = randn(5, 7, seed=30), randn(7, 3, seed=31)
    for name in names:
        log.clear()
        with mode() as recording:
            result = gemmlab.matmul(a, b, backend=name)
        assert log[:2] == [("core", name, False), ("python",)], f"{name}: {log}"
        assert recording.seen, f"{name}: the {mode.__name__} saw nothing"
        assert_close_to_reference(result, a, b, what=f"{name} inside a {mode.__name__}")


def test_what_the_core_declines_still_works_through_python(native_road):
    names, log = native_road
    a, b = randn(5, 7, seed=32), randn(7, 3, seed=33)
    for name in names:
        log.clear()  # inputs that need autograd: the core takes them too, through the op registered in C++
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        result = gemmlab.matmul(x, y, backend=name)
        assert log == [("core", name, True)], f"{name}, autograd: {log}"
        result.backward(torch.ones_like(result))
        assert_close_to_reference(result, a, b, what=f"{name} with autograd")
        assert_close_to_reference(x.grad, torch.ones(5, 3, dtype=torch.float64), b.T, what=f"{name}: grad of a")
        assert_close_to_reference(y.grad, a.T, torch.ones(5, 3, dtype=torch.float64), what=f"{name}: grad of b")

        log.clear()  # a tensor subclass
        result = gemmlab.matmul(a.as_subclass(Tagged), b, backend=name)
        assert log[:2] == [("core", name, False), ("python",)], f"{name}, subclass: {log}"
        assert_close_to_reference(result, a, b, what=f"{name} on a tensor subclass")

        log.clear()  # NumPy operands: converted by the Python road, which then hands the tensors to the core
        result = gemmlab.matmul(a.numpy(), b.numpy(), backend=name)
        assert log[:2] == [("core", name, False), ("python",)] and [log[2][0], log[2][2]] == ["core", True], f"{name}, NumPy: {log}"
        assert len(log) == 3, log
        assert isinstance(result, np.ndarray)
        assert_close_to_reference(torch.from_numpy(result), a, b, what=f"{name} on NumPy operands")


def declined_errors():
    """(name, a, b, error, match): calls the core declines and the Python road refuses, clearly."""
    a, b = randn(3, 4, seed=34), randn(4, 2, seed=35)
    yield "int64", a.long(), b.long(), TypeError, r"supports .*; got a: shape \(3, 4\), int64 on cpu"
    yield "mixed dtypes", a, b.float(), TypeError, r"operands have different dtypes \(a: shape \(3, 4\), float64 on cpu; b: shape \(4, 2\), float32"
    yield "mixed devices", a, b.to("meta"), ValueError, r"operands are on different devices .*b: shape \(4, 2\), float64 on meta"
    yield "meta operands", a.to("meta"), b.to("meta"), ValueError, r"runs on cpu(, cuda)?; got a: shape \(3, 4\), float64 on meta"
    yield "inner dimensions", a, b.T, ValueError, r"inner dimensions differ \(4 vs 2\)"
    yield "batch dimensions", randn(2, 3, 4), randn(3, 4, 2), ValueError, r"batch dimensions do not broadcast"
    yield "0-d operand", a, torch.tensor(2.0, dtype=torch.float64), ValueError, r"needs operands with at least 1 dimension"
    yield "a list", [[1.0]], b, TypeError, r"takes two torch.Tensors or two numpy.ndarrays; got Tensor and list"
    yield "sparse", a.to_sparse(), b, TypeError, r"needs dense \(strided\) tensors"


def test_what_the_core_declines_gets_the_python_roads_errors(native_road):
    names, log = native_road
    for name in names:
        for case, a, b, error, match in declined_errors():
            log.clear()
            with pytest.raises(error, match=match):
                gemmlab.matmul(a, b, backend=name)
            assert log[:2] == [("core", name, False), ("python",)], f"{name}, {case}: {log}"


# --- batched products through the core --------------------------------------------------------------
# The core's thresholds (csrc/dispatch.cpp): entries under BATCH_FMAS_PER_TASK = 2**16 multiply-adds
# run several per task, larger ones one per task, each on one thread; entries of at least
# threads * FMAS_PER_THREAD = threads * 2**20 multiply-adds, in a batch that does not share out
# evenly (count odd and under 4 * threads), run one after another on all the threads; products
# over RELEASE_GIL_FMAS = 2**18 run without the GIL.
def batched_cases(make):
    """(name, a, b, (count, m, k, n)): the products the core must run, after folding and merging."""
    yield "broadcast both ways", make(2, 1, 5, 9, seed=40), make(3, 9, 4, seed=41), (6, 5, 9, 4)
    yield "stride-0 batch of b: folded into rows", make(4, 5, 9, seed=42), make(9, 4, seed=43).expand(4, 9, 4), (1, 20, 9, 4)
    yield "b shared: folded into rows", make(3, 29, 2000, seed=44), make(2000, 3, seed=45), (1, 87, 2000, 3)
    yield "b shared, gaps between a's entries", make(3, 6, 9, seed=46)[:, :5], make(9, 4, seed=47), (3, 5, 9, 4)
    yield "batch dimensions permuted", make(4, 3, 5, 9, seed=48).permute(1, 0, 2, 3), make(3, 4, 9, 4, seed=49), (12, 5, 9, 4)
    yield "contiguous batch dimensions merged", make(2, 3, 5, 9, seed=50), make(2, 3, 9, 4, seed=51), (6, 5, 9, 4)
    yield "1-D @ batched", make(9, seed=52), make(3, 9, 4, seed=53), (3, 1, 9, 4)
    yield "batched @ 1-D", make(3, 5, 9, seed=54), make(9, seed=55), (1, 15, 9, 1)
    yield "batch of 1", make(1, 5, 9, seed=56), make(1, 9, 4, seed=57), (1, 5, 9, 4)
    yield "empty batch", make(0, 5, 9, seed=58), make(0, 9, 4, seed=59), None
    yield "k = 0", make(3, 5, 0, seed=60), make(3, 0, 4, seed=61), None
    yield "tiny entries, many per task", make(300, 6, 33, seed=62), make(300, 33, 5, seed=63), (300, 6, 33, 5)
    yield "entries one per task", make(6, 40, 50, seed=64), make(6, 50, 45, seed=65), (6, 40, 50, 45)
    yield "large entries, shared out", make(2, 130, 131, seed=66), make(2, 131, 129, seed=67), (2, 130, 131, 129)
    yield "large entries, one after another", make(3, 130, 131, seed=68), make(3, 131, 129, seed=69), (3, 130, 131, 129)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("exact", [True, False], ids=["small integers, float32", "random, float64"])
def test_batched_products_through_the_core(kernel_calls, threads, nthreads, exact):
    """Every case with and without out= (NaN-filled): exact where the operands are small integers
    (a race or a dropped term shows), and the products the core ran are the expected ones."""
    torch.set_num_threads(nthreads)
    require_backend("cpp")
    calls = kernel_calls("cpp")
    dtype = torch.float32 if exact else torch.float64
    make = partial(small_integers, k=2000, dtype=dtype) if exact else partial(randn, dtype=dtype)
    check = assert_exact if exact else assert_close_to_reference
    for name, a, b, products in batched_cases(make):
        expected = []
        if products is not None:
            count, m, k, n = products
            expected = [("cpp", (m, k), (k, n), dtype, threading.get_ident())] * count
        result = gemmlab.matmul(a, b, backend="cpp")
        assert result.shape == torch.matmul(a, b).shape, name
        check(result, a, b, what=f"{name}, {nthreads} threads")
        assert calls == expected, f"{name}: the core ran {list(calls)}"
        calls.clear()
        out = nan_like_product(a, b)
        assert gemmlab.matmul(a, b, backend="cpp", out=out) is out
        check(out, a, b, what=f"{name} into out, {nthreads} threads")
        assert calls == expected, f"{name} into out: the core ran {list(calls)}"
        calls.clear()


# --- garbage into the core's entry points -------------------------------------------------------
def test_core_matmul_refuses_a_bad_kernel_id():
    a, b = randn(2, 3), randn(3, 2)
    for bad in (-1, 16, 99, 2**31 - 1):
        with pytest.raises(IndexError, match=rf"gemmlab: no kernel with id {bad} \(\d+ registered\)"):
            core.matmul(a, b, bad)
        with pytest.raises(IndexError, match=rf"no kernel with id {bad}"):
            core.matmul("not", "tensors", bad)  # the id is checked first
    for bad in ("cpp", None, 1.5, 2**40):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            core.matmul(a, b, bad)


def test_core_matmul_returns_none_for_what_it_does_not_take():
    """The contract with gemmlab.matmul: None (never an error, never a crash) means 'the Python
    road takes this', which then raises the clear error or computes the product."""
    kernel = core.kernel_id("cpp")
    a, b = randn(2, 3), randn(3, 2)
    not_taken = [([[1.0]], [[1.0]]), (None, None), (1.0, b), (a, "b"), (a.numpy(), b.numpy()), (a, b.numpy()),
                 (a.long(), b.long()), (a, b.float()), (a, b.T), (a, torch.tensor(1.0, dtype=torch.float64)),
                 (a.to_sparse(), b), (a.to("meta"), b.to("meta")), (a.as_subclass(Tagged), b)]
    for x, y in not_taken:
        assert core.matmul(x, y, kernel) is None, (type(x), type(y))
    for out in (np.zeros((2, 2)), "out", [[0.0]], torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 2),
                torch.zeros(1, 2, dtype=torch.float64).expand(2, 2), a[:, :2]):
        assert core.matmul(a, b, kernel, out) is None, out
    assert core.matmul(a, b, kernel) is not None  # ...while it takes the plain call


PyCapsule_New = ctypes.pythonapi.PyCapsule_New
PyCapsule_New.restype = ctypes.py_object
PyCapsule_New.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)


def test_register_kernel_refuses_anything_but_its_capsules():
    names = {n: ctypes.create_string_buffer(n.encode()) for n in ("gemmlab.gemm_f32.v0", core.CAPSULE_F32, core.CAPSULE_F64)}
    target = ctypes.create_string_buffer(8)  # never called: every registration below is refused
    capsule = {n: PyCapsule_New(ctypes.addressof(target), buffer, None) for n, buffer in names.items()}
    good_f32, good_f64 = capsule[core.CAPSULE_F32], capsule[core.CAPSULE_F64]
    for f32, f64, error, match in [
        (None, good_f64, TypeError, r"f32 must be a PyCapsule named 'gemmlab.gemm_f32.v2' \(see kernel_abi.h\); got NoneType"),
        (good_f32, 1, TypeError, r"f64 must be a PyCapsule named 'gemmlab.gemm_f64.v2' .*; got int"),
        (good_f64, good_f32, ValueError, r"f32 must be a PyCapsule named 'gemmlab.gemm_f32.v2' .*; got one named 'gemmlab.gemm_f64.v2'"),
        (capsule["gemmlab.gemm_f32.v0"], good_f64, ValueError, r"got one named 'gemmlab.gemm_f32.v0'"),
    ]:
        with pytest.raises(error, match=match):
            core.register_kernel("garbage", f32, f64, 0)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        core.register_kernel("garbage", good_f32, good_f64, "many")
    assert core.kernel_id("garbage") == -1


# The ABI's function type (kernel_abi.h), for kernels written in Python with ctypes.
ABI_GEMM = ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.c_int64] * 4, *([ctypes.c_void_p] + [ctypes.c_int64] * 3) * 3,
                            ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)


def test_the_core_keeps_one_workspace_per_thread_for_a_kernel():
    """kernel_abi.h: a kernel registered with workspace_bytes gets that many bytes, 4096-byte aligned,
    the same block on every call from one thread and another block on another thread (what makes
    packing touch its pages once); a kernel registered without gets NULL and 0."""
    seen = []

    def record(batch, m, n, k, a, a_bs, a_rs, a_cs, b, b_bs, b_rs, b_cs, c, c_bs, c_rs, c_cs, threads, ws, ws_bytes):
        seen.append((threading.get_ident(), ws, ws_bytes))
        return 0  # (leaves C as it was: only the arguments are looked at)

    function = ABI_GEMM(record)
    address = ctypes.cast(function, ctypes.c_void_p).value
    names = [ctypes.create_string_buffer(n.encode()) for n in (core.CAPSULE_F32, core.CAPSULE_F64)]
    capsules = [PyCapsule_New(address, name, None) for name in names]
    with_workspace = core.register_kernel("test-workspace", *capsules, 0, 3 << 20)
    without = core.register_kernel("test-no-workspace", *capsules, 0)
    a, b = torch.randn(7, 5), torch.randn(5, 3)

    def calls(kernel, times):
        for _ in range(times):
            core.matmul(a, b, kernel)

    calls(with_workspace, 3)
    other = threading.Thread(target=calls, args=(with_workspace, 2))
    other.start()
    other.join()
    calls(without, 1)
    assert len(seen) == 6, seen
    main, there, none = seen[:3], seen[3:5], seen[5]
    assert len({ws for _, ws, _ in main}) == 1 and len({ws for _, ws, _ in there}) == 1, seen
    assert main[0][1] != there[0][1] and {main[0][0]} != {there[0][0]}, seen
    for _, ws, ws_bytes in main + there:
        assert ws % 4096 == 0 and ws_bytes == 3 << 20, seen
    assert none[1:] == (None, 0), seen
    with pytest.raises(ValueError, match="asked for a workspace of -1 bytes"):
        core.register_kernel("test-bad-workspace", *capsules, 0, -1)


def test_kernel_names_and_ids():
    for name in ("cpp", "torch"):
        assert core.kernel_name(core.kernel_id(name)) == name
    assert core.kernel_id("no such kernel") == -1
    for bad in (-1, 99):
        with pytest.raises(IndexError, match=rf"gemmlab: no kernel with id {bad} \(\d+ registered\)"):
            core.kernel_name(bad)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        core.kernel_name("cpp")
    with pytest.raises(TypeError, match="incompatible function arguments"):
        core.kernel_id(0)


# --- huge pages for the large outputs the core allocates ------------------------------------------
def huge_product():
    """Operands whose float32 product (3000 x 3500, 42 MB) is well over HUGE_PAGE_MIN_BYTES, and over
    glibc's largest mmap threshold (32 MiB): a mapping of its own, never heap memory."""
    return randn(3000, 16, dtype=torch.float32, seed=70), randn(16, 3500, dtype=torch.float32, seed=71)


@pytest.mark.parametrize("advice", ["default", "off"])
def test_large_outputs_are_right_with_and_without_huge_pages(monkeypatch, advice):
    if advice == "off":
        monkeypatch.setenv("GEMMLAB_HUGE_PAGES", "0")
    else:
        monkeypatch.delenv("GEMMLAB_HUGE_PAGES", raising=False)
    a, b = huge_product()
    c = gemmlab.matmul(a, b, backend="cpp")
    assert c.nbytes >= core.HUGE_PAGE_MIN_BYTES
    assert_close_to_reference(c, a, b, what=f"a 42 MB output, huge pages {advice}")


def transparent_huge_pages() -> str | None:
    """The kernel's THP mode ('always', 'madvise', 'never'), or None where it cannot be read."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            found = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return found and found.group(1)


def mapping_of(address: int) -> dict[str, str]:
    """The fields of the /proc/self/smaps entry of the mapping that holds address."""
    with open("/proc/self/smaps") as f:
        text = f.read()
    for entry in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        low, high = (int(x, 16) for x in entry.split(None, 1)[0].split("-"))
        if low <= address < high:
            return dict(re.findall(r"^(\w+):\s*(.*?)\s*$", entry, re.M))
    raise AssertionError(f"no mapping holds {address:#x}")


def check_huge_page_advice(mode: str) -> None:
    a, b = huge_product()
    for setting, advised in (("0", False), ("1", True)):
        os.environ["GEMMLAB_HUGE_PAGES"] = setting
        c = gemmlab.matmul(a, b, backend="cpp")
        fields = mapping_of(c.data_ptr() + c.nbytes // 2)
        if "VmFlags" in fields:
            assert ("hg" in fields["VmFlags"].split()) == advised, f"GEMMLAB_HUGE_PAGES={setting}: {fields}"
        if advised or mode == "always":
            assert fields.get("THPeligible") == "1", f"GEMMLAB_HUGE_PAGES={setting}: {fields}"
        del c


def test_large_outputs_get_huge_page_advice():
    """Best effort, Linux only: the mapping of the output's (2 MiB-aligned) middle carries the advice
    (VmFlags 'hg') and is THP-eligible; with GEMMLAB_HUGE_PAGES=0 it carries no advice. Whether the
    kernel then found free 2 MiB pages (AnonHugePages) is up to it, and not checked. In a fresh
    process, whose memory map no earlier test has shaped."""
    mode = transparent_huge_pages()
    if not sys.platform.startswith("linux") or mode not in ("always", "madvise") or not os.access("/proc/self/smaps", os.R_OK):
        pytest.skip(f"transparent huge pages are not available here (mode: {mode}, platform {sys.platform})")
    here = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import test_native_core as t; t.check_huge_page_advice({mode!r})"
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]


# --- the default backend, per thread, on the native road -------------------------------------------
def test_use_backend_in_a_thread_takes_the_core_with_its_kernel(native_road, kernel_calls):
    """A thread inside use_backend("torch") runs the core's torch kernel; a thread outside any block gets
    the process default (auto, untuned: cpp, also through the core); the main thread's block reaches neither."""
    _, log = native_road
    calls = kernel_calls("cpp", "torch", "numba")
    idents = {}

    def work(name):
        with gemmlab.use_backend(name) if name else contextlib.nullcontext():
            idents[name] = threading.get_ident()
            a, b = randn(3, 4, seed=80), randn(4, 2, seed=81)
            assert_close_to_reference(gemmlab.matmul(a, b), a, b, what=f"a thread with backend {name}")

    with gemmlab.use_backend("numba"):
        workers = [threading.Thread(target=work, args=(name,)) for name in ("torch", None)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in workers)
    assert sorted(log) == [("core", "auto", True), ("core", "torch", True)]
    assert sorted((c.thread, c.backend) for c in calls) == sorted([(idents["torch"], "torch"), (idents[None], "cpp")])
