import gzip
import importlib
import importlib.util
import math
import os
import pickle
import struct
import tempfile
import threading
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, settings

from gemmlab.autotune import CANDIDATES
from gemmlab.reference import exact_integers
from gemmlab.registry import NATIVE_KERNELS, backend_names, get_backend

# The suite never reads or writes the user's tuned table for `auto`: its cache folder is an empty
# one of its own (child processes inherit it), so `auto` follows its built-in rule unless a test
# tunes it (the tuned_table fixture). Set before any test module is collected.
_CACHE = tempfile.TemporaryDirectory(prefix="gemmlab-test-cache-")
os.environ["GEMMLAB_CACHE_DIR"] = _CACHE.name

settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Every backend the registry lists for CPU tensors (GPU backends have tests of their own). All of
# them must run wherever the suite runs: a missing build or dependency fails the tests that need it,
# saying why, instead of quietly leaving them out.
CPU_BACKENDS = backend_names("cpu")
COMPILED = backend_names("cpu", "compiled")  # gemmlab's own compiled CPU kernels
CONTENDERS = list(CANDIDATES)  # the compiled ones and torch's BLAS: what `auto` chooses between
GPU_BACKENDS = backend_names("cuda", "compiled")
# The Python-loop levels cost microseconds per element: keep their shapes small.
MAX_DIM = {"loops": 7, "elementwise": 16, "broadcast": 24}
assert list(MAX_DIM) == backend_names("cpu", "python"), MAX_DIM


def max_dim(backend: str) -> int:
    return MAX_DIM.get(backend, 67)


def require_backend(name: str) -> None:
    """Fail the calling test (never skip it) if backend `name` cannot run here, with the reason."""
    backend = get_backend(name)
    if not backend.available:
        pytest.fail(f"backend {name!r} is not available here: {backend.info()['reason']}; {backend.hint}", pytrace=False)


class _Unimportable:
    """Stands in for a module that failed to import: any use of it fails the test, with the reason."""

    def __init__(self, name: str, error: Exception) -> None:
        self._why = f"{name} cannot be imported ({type(error).__name__}: {error})"

    def __getattr__(self, attr):
        if attr.startswith(("__", "_pytest")):  # what pytest looks up on every module-level name it collects
            raise AttributeError(attr)
        pytest.fail(self._why, pytrace=False)


def import_or_fail(name: str):
    """The module, or a stand-in that fails every test using it: a test file for a missing build
    must go red, not be skipped or leave its tests uncollected (as pytest.importorskip would)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:
        return _Unimportable(name, exc)


@pytest.fixture(scope="session", params=CPU_BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


def _wrap_kernel(monkeypatch, name: str, wrap) -> None:
    """For the rest of the test, backend `name` runs wrap(its kernel) instead of its kernel (reached
    from Python: its routes through the C++ dispatch core, with and without grad, are closed for the test)."""
    spec = get_backend(name)
    monkeypatch.setattr(spec, "_kernel", wrap(spec.kernel))
    for alias, route in list(NATIVE_KERNELS.items()):
        if route[1] == spec.native:
            monkeypatch.delitem(NATIVE_KERNELS, alias)


@pytest.fixture
def break_backend(monkeypatch):
    """break_backend(name): for the rest of the test, that backend's kernel leaves out the last term
    of every dot product (k - 1 instead of k): a wrong result every correctness check must catch."""
    return lambda name: _wrap_kernel(monkeypatch, name, lambda kernel: lambda a, b, out: kernel(a[:, :-1], b[:-1], out))


@pytest.fixture
def threads():
    """Restore torch's thread count after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def randn(*shape, dtype=torch.float64, seed=0):
    """Random normal data (never zeros), reproducible per seed."""
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def layouts(m, k, n, dtype, make=randn):
    """(name, a, b): the product (m, k) @ (k, n) through every operand layout a kernel must read,
    contiguous first; make(*shape, dtype=, seed=) fills them (randn, small_integers, or a GPU maker)."""
    yield "contiguous", make(m, k, dtype=dtype, seed=1), make(k, n, dtype=dtype, seed=2)
    yield "a transposed", make(k, m, dtype=dtype, seed=3).T, make(k, n, dtype=dtype, seed=4)
    yield "b transposed", make(m, k, dtype=dtype, seed=5), make(n, k, dtype=dtype, seed=6).T
    yield "transposed", make(k, m, dtype=dtype, seed=7).T, make(n, k, dtype=dtype, seed=8).T
    yield "sliced", make(2 * m + 1, 3 * k, dtype=dtype, seed=9)[1::2, 2::3], make(k + 2, 2 * n, dtype=dtype, seed=10)[2:, ::2]
    yield "expanded rows", make(1, k, dtype=dtype, seed=11).expand(m, k), make(k, 1, dtype=dtype, seed=12).expand(k, n)
    yield "expanded columns", make(m, 1, dtype=dtype, seed=13).expand(m, k), make(1, n, dtype=dtype, seed=14).expand(k, n)
    # storage offsets that leave the data misaligned for vector loads, in both operands
    yield "offset", make(m * k + 3, dtype=dtype, seed=15)[3:].view(m, k), make(k * n + 1, dtype=dtype, seed=16)[1:].view(k, n)
    yield "padded rows", make(m, k + 5, dtype=dtype, seed=17)[:, 5:], make(k, n + 3, dtype=dtype, seed=18)[:, :n]
    yield "mixed", make(m, k, dtype=dtype, seed=19), make(n, k + 1, dtype=dtype, seed=20)[:, 1:].T


def poisoned(*shape, dtype=torch.float64, device="cpu"):
    """An output full of NaN: an element a kernel fails to write stays NaN and fails the check."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def out_views(m, n, dtype, device="cpu"):
    """(name, out): (m, n) outputs with other strides, views of poisoned() buffers (see assert_untouched_outside)."""
    yield "column-major", poisoned(n, m, dtype=dtype, device=device).T
    yield "sliced", poisoned(2 * m + 1, 3 * n + 2, dtype=dtype, device=device)[1::2, 2::3]
    yield "rows padded", poisoned(m + 1, n + 9, dtype=dtype, device=device)[:m, 4:4 + n]  # contiguous rows, wider stride


def assert_untouched_outside(out, what):
    """Every element of out's buffer (out._base) outside the view out is still NaN: nothing was written there."""
    inside = torch.zeros(out._base.shape, dtype=torch.bool, device=out.device)
    inside.as_strided(out.shape, out.stride(), out.storage_offset())[:] = True
    assert out._base[~inside].isnan().all(), f"{what}: wrote outside its out"


# --- which kernel ran: recording the 2-D kernel calls -------------------------------------------
class KernelCall(NamedTuple):
    backend: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    dtype: torch.dtype
    thread: int


class KernelCalls(list):
    """The KernelCalls seen so far. Products that gemmlab's C++ dispatch core ran are read from its
    trace whenever the list is read (a batch the core folds into rows is one product)."""

    def __init__(self, core):
        super().__init__()
        self.core, self.native = core, {}  # kernel name in the trace -> backend name

    def sync(self):
        if self.core is not None:
            for kernel, count, m, k, n, dtype, thread in self.core.take_trace():
                if kernel in self.native:
                    call = KernelCall(self.native[kernel], (m, k), (k, n), dtype, thread)
                    super().extend([call] * count)
        return self

    def __iter__(self):
        return super(KernelCalls, self.sync()).__iter__()

    def __len__(self):
        return super(KernelCalls, self.sync()).__len__()

    def __getitem__(self, i):
        return super(KernelCalls, self.sync()).__getitem__(i)

    def __eq__(self, other):
        return list(self.sync()) == other


@pytest.fixture
def kernel_calls(monkeypatch):
    """record(*names): from now on, every product those backends' kernels compute is appended, as a
    KernelCall, to the list record returns: which kernel actually ran, on what, in which thread.
    Kernels reached from Python are wrapped; the C++ dispatch core's are traced there."""
    core = importlib.import_module("gemmlab._cpp") if importlib.util.find_spec("gemmlab._cpp") else None
    calls = KernelCalls(core)

    def record(*names):
        for name in names:
            spec = get_backend(name)
            kernel = spec.kernel
            if spec.native is not None:
                calls.native[core.kernel_name(spec.native)] = name
                core.set_tracing(True)
                continue

            def wrapper(a, b, out, name=name, kernel=kernel):
                calls.sync().append(KernelCall(name, tuple(a.shape), tuple(b.shape), a.dtype, threading.get_ident()))
                kernel(a, b, out)

            monkeypatch.setattr(spec, "_kernel", wrapper)
        return calls

    yield record
    if calls.native:
        core.set_tracing(False)


# --- auto's tuned table ----------------------------------------------------------------------------
@pytest.fixture
def tuned_table(monkeypatch, tmp_path):
    """A tuned-table folder of the test's own (GEMMLAB_CACHE_DIR); yields the table's path.
    Afterwards auto's table in the core is empty again (the suite's: the built-in rule only)."""
    from gemmlab import autotune

    monkeypatch.setenv("GEMMLAB_CACHE_DIR", str(tmp_path))
    yield autotune.table_path()
    autotune.install({})


# --- exact cases: small integers ------------------------------------------------------------------
def small_integers(*shape, k, dtype=torch.float32, seed=0):
    """Random nonzero integers (as dtype), at most 4 in magnitude and small enough that every partial
    sum of a product with inner dimension k is exact in dtype: see gemmlab.reference.assert_exact."""
    high = min(4, math.isqrt(exact_integers(dtype) // k))
    assert high >= 1, f"k = {k} is too long for exact sums in {dtype}"
    gen = torch.Generator().manual_seed(seed)
    magnitude = torch.randint(1, high + 1, shape, generator=gen)
    sign = torch.randint(0, 2, shape, generator=gen) * 2 - 1
    return (magnitude * sign).to(dtype)


# --- writing dataset files in the formats gemmlab.data reads ---------------------------------------
def write_pickle(path, obj, compress=True):
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the course's file is a Python 2 pickle
    return path


def idx_bytes(array, type_code=0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype("uint8").tobytes()


def write_idx(path, data: bytes):
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


# --- gemmlab train checkpoints --------------------------------------------------------------------
def assert_same_training(path, expected_path, exact: bool = True) -> None:
    """The epoch, model and optimizer saved in two `gemmlab train` checkpoints agree: bit for bit, or
    (exact=False) within float32 rounding, as the same gradients summed in another order are."""
    got, want = (torch.load(p, weights_only=True) for p in (path, expected_path))
    assert got["epoch"] == want["epoch"]
    tolerance = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(got["model"], want["model"], **tolerance)
    torch.testing.assert_close(got["optimizer"], want["optimizer"], **tolerance)
