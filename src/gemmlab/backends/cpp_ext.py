"""Backend `cpp`: a kernel in gemmlab's C++ torch extension (csrc/cpu_kernel.cpp).

The extension takes the tensors themselves, reads them through their strides and checks its own
arguments; threads follow torch.set_num_threads().
"""

from gemmlab._cpp import matmul_2d  # noqa: F401  (the backend's entry point)
