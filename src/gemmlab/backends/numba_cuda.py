"""Backend `numba_cuda`: a shared-memory tiled GPU kernel written in Python with numba.cuda.

numba.cuda comes from the numba-cuda package (NVIDIA's CUDA target for Numba; Numba's own built-in
target is deprecated). Torch tensors are handed to the kernel without copies through
`__cuda_array_interface__` (numba.cuda.as_cuda_array) and the kernel runs on torch's current CUDA
stream, so it is ordered with the torch work around it like any torch op.

The kernel: a block of TILE x TILE threads computes a TILE x TILE tile of C, walking k one tile
at a time; each thread loads one element of the A tile and one of the B tile into shared memory
(zeros outside the matrices), the block synchronises, and each thread accumulates its dot product
from shared memory. Operands of any strides are read in place.

Importing this module raises ImportError, with the reason, where numba-cuda is missing or finds no
GPU. Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set before numba.cuda is imported) it
imports, and `launch` / `matmul_2d_numpy` run the same kernel on NumPy arrays, which is how the
tests check the kernel on machines without a GPU.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

try:
    from numba import cuda
except ImportError as exc:
    raise ImportError(f"numba.cuda cannot be imported ({exc}); install numba-cuda (`pip install numba-cuda==0.30.4`)") from exc

if getattr(cuda, "implementation", "Built-in") != "NVIDIA":
    raise ImportError(
        "numba-cuda is not installed (only Numba's deprecated built-in CUDA target is): `pip install numba-cuda==0.30.4`"
    )
if not cuda.is_available():
    raise ImportError("numba.cuda finds no usable CUDA GPU (numba.cuda.is_available() is False)")

SIMULATOR: bool = bool(numba.config.ENABLE_CUDASIM)  # kernels run on the CPU, for tests
TILE = 16
_MAX_GRID_Y = 65535  # blocks along rows per launch; taller products are launched in row slices


def _make_kernel(dtype: np.dtype):
    zero = dtype.type(0)  # accumulate in the operands' dtype, as the other backends do
    element = numba.from_dtype(dtype)

    @cuda.jit
    def kernel(a, b, out):
        tile_a = cuda.shared.array((TILE, TILE), element)
        tile_b = cuda.shared.array((TILE, TILE), element)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j = cuda.blockIdx.x * TILE + tx
        m, k = a.shape
        n = b.shape[1]
        acc = zero
        for p0 in range(0, k, TILE):
            if i < m and p0 + tx < k:
                tile_a[ty, tx] = a[i, p0 + tx]
            else:
                tile_a[ty, tx] = zero
            if p0 + ty < k and j < n:
                tile_b[ty, tx] = b[p0 + ty, j]
            else:
                tile_b[ty, tx] = zero
            cuda.syncthreads()
            for q in range(TILE):
                acc += tile_a[ty, q] * tile_b[q, tx]
            cuda.syncthreads()
        if i < m and j < n:
            out[i, j] = acc

    return kernel


_KERNELS = {np.dtype(d): _make_kernel(np.dtype(d)) for d in (np.float32, np.float64)}


def _host(x, direction):
    # NumPy arguments are copied to the device for the launch; only out is copied back.
    return direction(x) if isinstance(x, np.ndarray) else x


def launch(a, b, out, stream=0) -> None:
    """out = a @ b with the tiled kernel, no checks: a (m, k), b (k, n), out (m, n) of one float dtype,
    as numba device arrays (or NumPy arrays, copied to the GPU and back; under the simulator, used
    in place)."""
    m = a.shape[0]
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    kernel = _KERNELS[np.dtype(out.dtype)]
    rows = _MAX_GRID_Y * TILE
    for r0 in range(0, m, rows):
        r1 = min(m, r0 + rows)
        grid = ((n + TILE - 1) // TILE, (r1 - r0 + TILE - 1) // TILE)
        kernel[grid, (TILE, TILE), stream](_host(a[r0:r1], cuda.In), _host(b, cuda.In), _host(out[r0:r1], cuda.Out))


def _check_shapes(a, b, out, where: str) -> None:
    if len(a.shape) != 2 or len(b.shape) != 2 or len(out.shape) != 2:
        raise ValueError(f"{where}: needs 2-D a, b and out; got shapes {tuple(a.shape)}, {tuple(b.shape)}, {tuple(out.shape)}")
    if a.shape[1] != b.shape[0] or tuple(out.shape) != (a.shape[0], b.shape[1]):
        raise ValueError(f"{where}: shapes do not fit: a {tuple(a.shape)}, b {tuple(b.shape)}, out {tuple(out.shape)}")


def matmul_2d_numpy(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Validated entry point on NumPy arrays: write a @ b into out. numba copies host arrays to the
    GPU and out back, which needs contiguous arrays, so strided ones are staged through contiguous
    copies here (device arrays of any strides are read in place: see launch and matmul_2d)."""
    where = "gemmlab numba_cuda matmul_2d_numpy"
    for name, x in {"a": a, "b": b, "out": out}.items():
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{where}: {name} must be a numpy array, got {type(x).__name__}")
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{where}: needs float32 or float64 arrays of one dtype; got a {a.dtype}, b {b.dtype}, out {out.dtype}")
    _check_shapes(a, b, out, where)
    if not out.flags.writeable:
        raise ValueError(f"{where}: out is read-only")
    result = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    launch(np.ascontiguousarray(a), np.ascontiguousarray(b), result)
    if result is not out:
        out[...] = result


def _torch_stream(device: torch.device):
    handle = torch.cuda.current_stream(device).cuda_stream
    if handle:
        return cuda.external_stream(handle)
    return cuda.legacy_default_stream()  # torch's default stream is CUDA's legacy default stream


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """out = a @ b for 2-D float32/float64 CUDA tensors of any strides, on torch's current stream."""
    where = "gemmlab numba_cuda matmul_2d"
    tensors = {"a": a, "b": b, "out": out}
    described = ", ".join(f"{name}: {tuple(t.shape)} {t.dtype} on {t.device}" for name, t in tensors.items())
    if any(t.device.type != "cuda" for t in tensors.values()):
        raise ValueError(f"{where} runs on CUDA devices; got {described}")
    if not (a.device == b.device == out.device):
        raise ValueError(f"{where} needs a, b and out on the same CUDA device; got {described}")
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{where} needs float32 or float64 tensors of one dtype; got {described}")
    _check_shapes(a, b, out, where)
    if out.numel() == 0:
        return
    with cuda.gpus[out.device.index]:
        arrays = [cuda.as_cuda_array(t.detach(), sync=False) for t in (a, b, out)]  # views, no copies
        launch(*arrays, stream=_torch_stream(out.device))
