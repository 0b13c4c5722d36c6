import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import gemmlab
from gemmlab.registry import get_backend

settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

CPU_BACKENDS = ["loops", "elementwise", "broadcast", "einsum", "numba", "cython", "cpp", "torch"]
COMPILED = ["numba", "cython", "cpp"]
# The Python-loop levels cost microseconds per element: keep their shapes small.
MAX_DIM = {"loops": 7, "elementwise": 16, "broadcast": 24}


def max_dim(backend: str) -> int:
    return MAX_DIM.get(backend, 67)


# The backends these CPU tests feed CPU tensors to (GPU backends have tests of their own).
CPU_AVAILABLE = [i["name"] for i in gemmlab.backend_info() if i["available"] and "cpu" in i["devices"]]


@pytest.fixture(scope="session", params=CPU_AVAILABLE)
def backend(request):
    return request.param


@pytest.fixture
def threads():
    """Restore torch's thread count after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def randn(*shape, dtype=torch.float64, seed=0):
    """Random normal data (never zeros), reproducible per seed."""
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def record_products(monkeypatch):
    """record_products(backend) starts recording the products that backend's kernel runs and returns
    a function listing them so far as ((m, k), (k, n)) pairs, one per 2-D product. Native kernels
    are traced in the C++ dispatch core (a batch is folded into rows where the core folds it); the
    Python-level ones are wrapped."""
    tracing = []

    def start(backend: str):
        spec = get_backend(backend)
        seen = []
        if spec.native is not None:
            from gemmlab import _cpp

            _cpp.set_tracing(True)
            tracing.append(_cpp)

            def products():
                seen.extend(((m, k), (k, n)) for name, count, m, k, n in _cpp.take_trace()
                            if name == get_backend(backend).name for _ in range(count))
                return list(seen)

            return products
        kernel = spec.kernel
        monkeypatch.setattr(spec, "_kernel", lambda a, b, out: (seen.append((tuple(a.shape), tuple(b.shape))), kernel(a, b, out)))
        return lambda: list(seen)

    yield start
    for cpp in tracing:
        cpp.set_tracing(False)
