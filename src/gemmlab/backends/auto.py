"""Backend `auto`: each product on the backend chosen for its bucket (see gemmlab.autotune).

The choice is made in the C++ dispatch core, where `auto` is a kernel of its own; loading this
module puts the tuned table (if there is a usable one, and no table was installed before) into the
core. Where the core declines a product (a tensor subclass, a dispatch mode), the Python road runs
torch's kernel.
"""

from gemmlab import autotune
from gemmlab._cpp import kernel_id
from gemmlab.backends.torch_blas import matmul_2d  # noqa: F401  (see the docstring)

NATIVE_KERNEL = kernel_id("auto")
autotune.install_once()
