"""Backend `cpp`: the BLIS-structured GEMM in gemmlab's C++ torch extension (csrc/).

The extension takes the tensors themselves, reads them through their strides and checks its own
arguments; threads follow torch.set_num_threads(). It picks AVX-512, AVX2+FMA or portable C++ at run
time (`gemmlab._cpp.cpu_path()`, `gemmlab._cpp.supported_paths()`); GEMMLAB_CPU forces one.
"""

from gemmlab._cpp import kernel_id
from gemmlab._cpp import matmul_2d  # noqa: F401  (the backend's checked 2-D entry point)

NATIVE_KERNEL = kernel_id("cpp")  # how gemmlab.matmul reaches it: one call into the dispatch core
