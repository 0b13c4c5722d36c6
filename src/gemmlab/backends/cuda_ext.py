"""Backend `cuda`: gemmlab's own CUDA kernels, in the torch extension gemmlab._cuda (csrc/cuda/).

The extension is built only where torch is a CUDA build and a matching CUDA toolkit is present
(GEMMLAB_CUDA=auto|0|1 at build time); importing this module raises ImportError, with the reason,
where it was not built or no CUDA device is visible, which the registry reports as the backend's
unavailable reason.

The extension holds a ladder of kernels (KERNELS, slowest first); the backend uses the default one,
"warptile", unless the environment variable GEMMLAB_CUDA_KERNEL names another when this module is
imported, or set_default_kernel() changes it. Benchmarks pick one per call:
`matmul_2d(a, b, out, kernel="smem")`.
"""

from __future__ import annotations

import os

import torch


def _not_built_reason() -> str:
    if torch.version.cuda is None:
        return f"gemmlab was built without CUDA: torch {torch.__version__} has no CUDA"
    return (
        f"gemmlab was built without CUDA: the extension gemmlab._cuda is missing (torch {torch.__version__} has "
        f"CUDA {torch.version.cuda}; rebuild with GEMMLAB_CUDA=1 and a CUDA {torch.version.cuda.split('.')[0]}.x "
        f"toolkit to build it or see why it cannot be built)"
    )


try:
    import gemmlab._cuda as _cuda
except ModuleNotFoundError as exc:
    if exc.name != "gemmlab._cuda":
        raise
    raise ImportError(_not_built_reason()) from exc
except ImportError as exc:  # built, but against another torch, or a CUDA library is missing
    raise ImportError(f"gemmlab._cuda is built but does not load: {exc}") from exc

if not torch.cuda.is_available():
    raise ImportError("gemmlab._cuda is built, but torch sees no CUDA device (torch.cuda.is_available() is False)")

KERNELS: tuple[str, ...] = tuple(_cuda.kernels())

_env = os.environ.get("GEMMLAB_CUDA_KERNEL", "").strip()
if _env and _env not in KERNELS:
    raise ImportError(f"GEMMLAB_CUDA_KERNEL={_env!r} is not one of gemmlab's CUDA kernels: {', '.join(KERNELS)}")
_default = _env or _cuda.DEFAULT_KERNEL


def default_kernel() -> str:
    """The kernel the `cuda` backend uses."""
    return _default


def set_default_kernel(name: str) -> None:
    """Make the `cuda` backend use kernel `name` (one of KERNELS) from now on, in this process."""
    global _default
    if name not in KERNELS:
        raise ValueError(f"unknown gemmlab CUDA kernel {name!r}; the kernels are {', '.join(KERNELS)}")
    _default = name


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, kernel: str | None = None) -> None:
    """out = a @ b on the current CUDA stream, with `kernel` (default: default_kernel())."""
    _cuda.matmul_2d(a, b, out, _default if kernel is None else kernel)
