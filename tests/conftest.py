import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import gemmlab

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


# --- which kernel ran: recording the 2-D kernel calls -------------------------------------------
import threading  # noqa: E402
from typing import NamedTuple  # noqa: E402

from gemmlab.registry import get_backend  # noqa: E402


class KernelCall(NamedTuple):
    backend: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    thread: int


@pytest.fixture
def kernel_calls(monkeypatch):
    """record(*names): wrap those backends' 2-D kernels so that every call is appended, as a
    KernelCall, to the list record returns: which kernel actually ran, on what, in which thread."""
    calls: list[KernelCall] = []

    def record(*names):
        for name in names:
            spec = get_backend(name)
            kernel = spec.kernel

            def wrapper(a, b, out, name=name, kernel=kernel):
                calls.append(KernelCall(name, tuple(a.shape), tuple(b.shape), threading.get_ident()))
                kernel(a, b, out)

            monkeypatch.setattr(spec, "_kernel", wrapper)
        return calls

    return record


# --- exact cases: small integers ------------------------------------------------------------------
import math  # noqa: E402

from gemmlab.reference import exact_integers  # noqa: E402


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
import gzip  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402


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
