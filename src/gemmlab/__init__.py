"""gemmlab: one matmul call in front of a ladder of kernels, from Python loops to C++.

    import gemmlab
    c = gemmlab.matmul(a, b, backend="cpp")      # torch tensors or NumPy arrays
    gemmlab.available_backends()                  # ['loops', ..., 'cpp', 'torch']
    with gemmlab.use_backend("numba"):            # change the default inside a block
        c = gemmlab.matmul(a, b)
    gemmlab.nn.Linear(784, 50, backend="cpp")     # submodules load on first use
"""

import importlib as _importlib

from gemmlab.dispatch import matmul
from gemmlab.registry import (
    BackendUnavailableError,
    available_backends,
    backend_info,
    current_backend,
    known_backends,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

# The public submodules, imported on first attribute access (PEP 562), as scipy and torch expose
# theirs: `gemmlab.nn` works after a plain `import gemmlab`, which stays fast. (dispatch, ops and
# registry are imported above anyway; cli is the command's implementation.)
_SUBMODULES = ("autotune", "backends", "bench", "checkpoints", "cpu_caches", "data", "distributed", "nn", "reference",
               "scratch", "timing", "train")

__all__ = [
    *_SUBMODULES,
    "BackendUnavailableError",
    "available_backends",
    "backend_info",
    "current_backend",
    "known_backends",
    "matmul",
    "set_backend",
    "use_backend",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"gemmlab.{name}")  # which also sets it as an attribute here
    raise AttributeError(f"module 'gemmlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
