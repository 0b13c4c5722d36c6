"""Backend `cython`: a packed, cache-blocked kernel in Cython (OpenMP prange), in three builds.

The kernel (_cython_kernel_body.pxi) is compiled by setup.py into one module per instruction set:
_cython_kernel (portable: the x86-64 baseline, SSE2, or whatever CPU it is built on),
_cython_kernel_avx2 (AVX2 + FMA) and _cython_kernel_avx512 (AVX-512 F/VL/BW/DQ + FMA). The build
flags stay portable; the choice is made here, at import, from the CPU's features: the best build
the CPU supports. The environment variable GEMMLAB_CPU=avx512|avx2|generic forces one (an error if
the CPU lacks what it needs). backend_info() reports which build runs, blocking(dtype) its register
and cache blocking (KC, MC, NC derived at import from this CPU's caches, gemmlab.cpu_caches).

A build the CPU supports that fails to import (not compiled, a broken file) does not make the
backend unavailable: the next best build that loads is used, so `import` and every product still
work, but the failure is not silent. It is kept in LOAD_ERRORS and said in NOTE, which
backend_info() and `gemmlab info` show ("avx2 build of the kernel; the avx512 build this CPU
supports failed to load: ..."), and the test suite fails on it (on x86-64 every build is compiled,
so each one the CPU supports must load and the best must be chosen).
"""

from __future__ import annotations

import importlib
import os
import platform
from types import ModuleType

import torch

from gemmlab.backends import by_address, operand_error
from gemmlab.registry import REBUILD_HINT

VARIANTS = ("avx512", "avx2", "generic")  # best first
_MODULES = {
    "avx512": "gemmlab.backends._cython_kernel_avx512",
    "avx2": "gemmlab.backends._cython_kernel_avx2",
    "generic": "gemmlab.backends._cython_kernel",
}
# The CPU features (as /proc/cpuinfo names them) each build is compiled for.
REQUIRED_FLAGS = {
    "avx512": frozenset({"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma"}),
    "avx2": frozenset({"avx2", "fma"}),
    "generic": frozenset(),
}
ENV = "GEMMLAB_CPU"


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def supported_variants(flags: frozenset[str] | None = None) -> list[str]:
    """The builds this CPU can run, best first (whether or not they were built)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["generic"]
    flags = cpu_flags() if flags is None else flags
    if flags is None:  # no /proc/cpuinfo (macOS, Windows): ask torch what it found
        capability = torch.backends.cpu.get_cpu_capability()
        return {"AVX512": ["avx512", "avx2", "generic"], "AVX2": ["avx2", "generic"]}.get(capability, ["generic"])
    return [name for name in VARIANTS if REQUIRED_FLAGS[name] <= flags]


def load_variant(name: str, flags: frozenset[str] | None = None) -> ModuleType:
    """The kernel module of one build; raises if the name is unknown, the CPU lacks the build's
    instructions (importing it anyway could crash the process) or it was not built."""
    if name not in VARIANTS:
        raise ValueError(f"unknown gemmlab Cython kernel build {name!r}; {ENV} takes one of {', '.join(VARIANTS)}")
    supported = supported_variants(flags)
    if name not in supported:
        have = cpu_flags() if flags is None else flags
        missing = sorted(REQUIRED_FLAGS[name] - have) if have is not None else []
        raise RuntimeError(
            f"the {name} build of gemmlab's Cython kernel needs CPU features this machine lacks"
            f"{' (' + ', '.join(missing) + ')' if missing else ''}; it supports: {', '.join(supported)}"
        )
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        raise ImportError(f"the {name} build of gemmlab's Cython kernel was not built ({exc})") from exc


def _choose() -> tuple[ModuleType, str, dict[str, str]]:
    """The build to use, a note saying which and why, and the supported builds that failed to load."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        return load_variant(forced), f"{forced} build of the kernel (forced by {ENV})", {}
    errors = {}
    for name in supported_variants():
        try:
            module = load_variant(name)
        except ImportError as exc:
            errors[name] = str(exc)
            continue
        if not errors:
            return module, f"{name} build of the kernel (the best this CPU supports)", errors
        failed = "; ".join(f"the {bad} build this CPU supports failed to load: {why}" for bad, why in errors.items())
        return module, f"{name} build of the kernel; {failed}; to fix it, {REBUILD_HINT}", errors
    raise ImportError("; ".join(errors.values()))


_kernel, NOTE, LOAD_ERRORS = _choose()  # LOAD_ERRORS: build -> why it failed to load
VARIANT: str = _kernel.VARIANT
matmul_2d_numpy = _kernel.matmul_2d  # the validated entry point on NumPy arrays (num_threads=...)
# blocking(dtype): the chosen build's MR, NR and the KC, MC, NC it derived from this CPU's caches
blocking = _kernel.blocking

# Any product may run side by side with others on threads == 1 (the dispatch core then runs the
# entries of a batch on several threads at once): the small path is serial, and so is the packed
# path then (plain loops, no OpenMP region), touching only its arguments and buffers of its own.
SERIAL_FMAS = 2**63 - 1


def register_build(name: str, build: ModuleType, workspace_bytes: int | None = None) -> int:
    """Register a build's C ABI functions with gemmlab's dispatch core under `name`; returns the id.
    The workspace (kernel_abi.h) covers a thread per CPU unless given: the core keeps it per calling
    thread and hands it back on every call, so packing touches its pages once; a product on more
    threads than it covers allocates what is missing."""
    from gemmlab import _cpp

    if workspace_bytes is None:
        workspace_bytes = build.workspace_bytes(max(os.cpu_count() or 1, torch.get_num_threads()))
    return _cpp.register_kernel(name, build.ABI_F32, build.ABI_F64, SERIAL_FMAS, workspace_bytes)


def _native_kernel() -> int | None:
    """The chosen build registered with gemmlab's dispatch core, which then runs gemmlab.matmul's
    products on it in one native call; None without the C++ extension (the backend still works,
    through Python). Registering again (another build forced) keeps the kernel's id."""
    try:
        from gemmlab import _cpp  # noqa: F401
    except ImportError:
        return None
    return register_build("cython", _kernel)


NATIVE_KERNEL = _native_kernel()

_ITEMSIZE = {torch.float32: 4, torch.float64: 8}


def run_2d(kernel: ModuleType, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, num_threads: int) -> None:
    """out = a @ b with one build's kernel: operands passed by address, shape and strides, which
    costs far less per call than NumPy views and typed memoryviews (the kernel still checks shapes
    and overlaps itself). Operands this path cannot take raise an error that says why."""
    size = _ITEMSIZE.get(a.dtype) if isinstance(a, torch.Tensor) else None
    args = by_address(a, b, out) if size else None
    if args is None:
        raise operand_error("gemmlab cython matmul_2d", a, b, out)
    kernel._matmul_2d_addresses(size, *args, num_threads)


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    run_2d(_kernel, a, b, out, torch.get_num_threads())
