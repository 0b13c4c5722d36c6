"""Which backends exist, which can run here, and which one is the default.

Backends are imported lazily, the first time one is used or asked about, so `import gemmlab` stays
fast and never fails because an extension is missing: a backend whose module cannot be imported is
reported as unavailable, with the reason and what to do about it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

FLOATS = (torch.float32, torch.float64)
TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)
TORCH_DEVICES = ("cpu", "cuda")

REBUILD_HINT = (
    "build gemmlab's extensions: with torch==2.13.0 installed, run "
    "`pip install --no-build-isolation .` in the gemmlab checkout (or `make setup`)"
)

CUDA_HINT = (
    "on a machine with an NVIDIA GPU, a CUDA build of torch==2.13.0 and a CUDA toolkit of the same major version, "
    "rebuild with `GEMMLAB_CUDA=1 pip install --no-build-isolation .` (GEMMLAB_CUDA=1 fails loudly, saying why)"
)


@dataclass
class Backend:
    name: str
    module: str
    summary: str
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[torch.dtype, ...] = FLOATS
    hint: str = ""  # how to make it available when its module fails to import
    note: str | None = None  # e.g. Numba compiling without its on-disk cache, which Cython build runs
    native: int | None = None  # the kernel's id in gemmlab's C++ dispatch core, where it has one
    kind: str = "library"  # one of KINDS
    _kernel: Callable | None = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)
    _loaded: bool = field(default=False, repr=False)

    def _load(self) -> None:
        if self._loaded:
            return
        try:
            module = importlib.import_module(self.module)
            self._kernel = module.matmul_2d
            self.note = getattr(module, "NOTE", None) or getattr(module, "CACHE_NOTE", None)
            self.native = getattr(module, "NATIVE_KERNEL", None)
            if self.native is not None:
                _publish_native(self.name, self.native)
        except Exception as exc:  # an extension missing, built against another torch, a JIT failure...
            self._error = f"{type(exc).__name__}: {exc}"
        self._loaded = True

    @property
    def available(self) -> bool:
        self._load()
        return self._kernel is not None

    @property
    def kernel(self) -> Callable:
        """The backend's matmul_2d; raises BackendUnavailableError if it cannot run here."""
        self._load()
        if self._kernel is None:
            raise BackendUnavailableError(
                f"backend {self.name!r} is not available here ({self._error})" + (f"; to enable it, {self.hint}" if self.hint else "")
            )
        return self._kernel

    def info(self) -> dict:
        self._load()
        return {
            "name": self.name,
            "available": self._kernel is not None,
            "reason": self._error,
            "summary": self.summary,
            "devices": list(self.devices),
            "dtypes": [str(d).removeprefix("torch.") for d in self.dtypes],
            "note": self.note,
        }


class BackendUnavailableError(RuntimeError):
    """The backend is known but cannot run here (its extension is missing or failed to load)."""


# What a backend is, for choosing which ones a test, a benchmark or `auto` takes (backend_names):
# "python": the notes' Python loops (microseconds an element: small products only); "library": one
# torch call (einsum, torch's BLAS); "compiled": gemmlab's own compiled kernels.
KINDS = ("python", "library", "compiled")

# The ladder, slowest to fastest.
LADDER = (
    Backend("loops", "gemmlab.backends.loops", "three nested Python loops over tensor elements (notes' level 0)", TORCH_DEVICES,
            kind="python"),
    Backend("elementwise", "gemmlab.backends.elementwise", "two Python loops, each dot product a vector op (level 1)", TORCH_DEVICES,
            kind="python"),
    Backend("broadcast", "gemmlab.backends.broadcast", "one Python loop, a row at a time by broadcasting (level 2)", TORCH_DEVICES,
            kind="python"),
    Backend("einsum", "gemmlab.backends.einsum", "torch.einsum('ik,kj->ij') (level 3)", TORCH_DEVICES, TORCH_DTYPES),
    Backend("numba", "gemmlab.backends.numba_jit", "packed, cache-blocked kernel compiled by Numba @njit (prange)",
            hint="install numba (`pip install numba`)", kind="compiled"),
    Backend("cython", "gemmlab.backends.cython_ext", "packed, cache-blocked kernel in Cython (OpenMP), per-CPU builds", hint=REBUILD_HINT,
            kind="compiled"),
    Backend("cpp", "gemmlab.backends.cpp_ext", "BLIS-structured GEMM in a C++ torch extension (AVX-512/AVX2/portable at run time)",
            hint=REBUILD_HINT, kind="compiled"),
    Backend("torch", "gemmlab.backends.torch_blas", "BLAS through torch's @ (MKL on this CPU; level 4)", TORCH_DEVICES, TORCH_DTYPES),
    # GPU backends (issue #6): unavailable, with the reason, where gemmlab has no CUDA build or no GPU.
    Backend("cuda", "gemmlab.backends.cuda_ext", "gemmlab's CUDA kernels (default: warp-tiled, double-buffered)",
            ("cuda",), hint=CUDA_HINT, kind="compiled"),
    Backend("numba_cuda", "gemmlab.backends.numba_cuda", "shared-memory tiled kernel in numba.cuda (numba-cuda)",
            ("cuda",), hint="install numba-cuda (`pip install numba-cuda==0.30.4`) on a machine with an NVIDIA GPU",
            kind="compiled"),
)
BACKENDS = {b.name: b for b in LADDER}
AUTO = "auto"
# `auto`, the default: per product, the backend measured fastest here for its kind (gemmlab.autotune,
# `gemmlab tune`), chosen in the C++ dispatch core; without that core (the extension missing), torch.
AUTO_BACKEND = Backend(AUTO, "gemmlab.backends.auto", "per product, the backend measured fastest here (gemmlab tune); "
                       "untuned: cpp for float32/float64 on the CPU, else torch", TORCH_DEVICES, TORCH_DTYPES, REBUILD_HINT)


# Names whose products gemmlab.matmul hands straight to the C++ dispatch core: name -> (the core's
# matmul, kernel id). Filled as backends load (so `import gemmlab` loads no extension).
NATIVE_KERNELS: dict[str, tuple[Callable, int]] = {}


def _publish_native(name: str, kernel: int) -> None:
    from gemmlab._cpp import matmul  # loaded already: the backend got its kernel id from it

    NATIVE_KERNELS[name] = (matmul, kernel)


def backend_names(device: str = "cpu", *kinds: str) -> list[str]:
    """Names of the backends that take `device` tensors, in ladder order (slowest first); given kinds
    (see KINDS), only backends of those kinds. Names only: no backend is loaded."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown backend kind(s) {sorted(unknown)}; the kinds are {', '.join(KINDS)}")
    return [b.name for b in LADDER if device in b.devices and (not kinds or b.kind in kinds)]


def known_backends() -> list[str]:
    return [AUTO, *BACKENDS]


def available_backends() -> list[str]:
    """Names of the backends that can run here, in ladder order (slowest first)."""
    return [b.name for b in LADDER if b.available]


def backend_info() -> list[dict]:
    """Every known backend: whether it is available, why not, its devices and dtypes."""
    return [b.info() for b in LADDER]


def get_backend(name: str) -> Backend:
    """The Backend called name (not `auto`); ValueError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown gemmlab backend {name!r}; known backends: {', '.join(known_backends())}")
    return BACKENDS[name]


def pick_auto() -> Backend:
    """What `auto` resolves to on the Python road: the auto backend (whose first use loads the tuned
    table into the core), or torch where gemmlab's C++ extension is missing."""
    return AUTO_BACKEND if AUTO_BACKEND.available else BACKENDS["torch"]


# The default backend: a process-wide setting, overridden inside `use_backend` blocks (per thread
# and per asyncio task, as contextvars are).
_process_default = AUTO
_scoped_default: contextvars.ContextVar[str | None] = contextvars.ContextVar("gemmlab_backend", default=None)


def _checked_name(name: str) -> str:
    if name != AUTO:
        get_backend(name).kernel  # unknown or unavailable: raise now, not at the first matmul
    return name


def current_backend() -> str:
    """The name matmul uses when it is given no backend."""
    return _scoped_default.get() or _process_default


def set_backend(name: str) -> None:
    """Make name the default backend for the whole process."""
    global _process_default
    _process_default = _checked_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Make name the default backend inside a `with` block."""
    token = _scoped_default.set(_checked_name(name))
    try:
        yield name
    finally:
        _scoped_default.reset(token)
