import importlib
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from gemmlab.registry import LADDER, get_backend

settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Every backend the registry lists for CPU tensors (GPU backends have tests of their own). All of
# them must run wherever the suite runs: a missing build or dependency fails the tests that need it,
# saying why, instead of quietly leaving them out.
CPU_BACKENDS = [b.name for b in LADDER if "cpu" in b.devices]
COMPILED = ["numba", "cython", "cpp"]
assert set(COMPILED) <= set(CPU_BACKENDS), COMPILED
# The Python-loop levels cost microseconds per element: keep their shapes small.
MAX_DIM = {"loops": 7, "elementwise": 16, "broadcast": 24}


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
    """For the rest of the test, backend `name` runs wrap(its kernel) instead of its kernel."""
    spec = get_backend(name)
    monkeypatch.setattr(spec, "_kernel", wrap(spec.kernel))


@pytest.fixture
def break_backend(monkeypatch):
    """break_backend(name): for the rest of the test, that backend's kernel leaves out the last term
    of every dot product (k - 1 instead of k): a wrong result every correctness check must catch."""
    return lambda name: _wrap_kernel(monkeypatch, name, lambda kernel: lambda a, b, out: kernel(a[:, :-1], b[:-1], out))


@pytest.fixture
def kernel_calls(monkeypatch):
    """kernel_calls(name) -> a list that gets (dtype, m, k, n) of every product that backend's
    kernel computes for the rest of the test."""

    def watch(name: str) -> list:
        calls = []

        def recording(kernel):
            return lambda a, b, out: (calls.append((a.dtype, *a.shape, b.shape[1])), kernel(a, b, out))

        _wrap_kernel(monkeypatch, name, recording)
        return calls

    return watch


@pytest.fixture
def threads():
    """Restore torch's thread count after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def randn(*shape, dtype=torch.float64, seed=0):
    """Random normal data (never zeros), reproducible per seed."""
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
