"""GPU products, skipped where there is no CUDA device or no GPU backend (filled by the CUDA work)."""

import torch

import gemmlab

from .common import operands

GPU_BACKENDS = ["cuda", "numba_cuda", "torch"]


class CudaMatMul:
    params = (GPU_BACKENDS, [1024, 4096])
    param_names = ["backend", "n"]

    def setup(self, backend, n):
        if not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        if backend not in gemmlab.known_backends() or backend not in gemmlab.available_backends():
            raise NotImplementedError(f"backend {backend!r} is not available")
        self.a, self.b = (t.cuda() for t in operands(n, n, n))
        torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS in plain float32, like the kernels

    def time_matmul(self, backend, n):
        gemmlab.matmul(self.a, self.b, backend=backend)
        torch.cuda.synchronize()
