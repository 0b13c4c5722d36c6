"""Backend `cython`: a row-parallel loop kernel in Cython (typed memoryviews, OpenMP prange).

The kernel lives in _cython_kernel.pyx, compiled by the package's build; it checks its own
arguments, and this module only hands it NumPy views of the tensors and the thread count.
"""

import torch

from gemmlab.backends._cython_kernel import matmul_2d as matmul_2d_numpy


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    matmul_2d_numpy(a.numpy(), b.numpy(), out.numpy(), num_threads=torch.get_num_threads())
