"""gemmlab: one matmul call in front of a ladder of kernels, from Python loops to C++.

    import gemmlab
    c = gemmlab.matmul(a, b, backend="cpp")      # torch tensors or NumPy arrays
    gemmlab.available_backends()                  # ['loops', ..., 'cpp', 'torch']
    with gemmlab.use_backend("numba"):            # change the default inside a block
        c = gemmlab.matmul(a, b)
"""

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

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "backend_info",
    "current_backend",
    "known_backends",
    "matmul",
    "set_backend",
    "use_backend",
]
