"""Whether the build adds gemmlab's CUDA extension, gemmlab._cuda, and how: setup.py's CUDA detection,
in a module of its own so that tests/test_cuda_build.py can run every branch against fake toolkits.

Build-time only (not installed): setup.py imports it from the checkout.
"""

import os
import re
import subprocess


def cuda_extensions(optimise: list[str]) -> list:
    """gemmlab._cuda (the `cuda` backend) when it can be built; GEMMLAB_CUDA=auto|0|1 decides.

    auto (the default) builds it when torch is a CUDA build and a CUDA toolkit with the same major
    version as torch's CUDA is found, and otherwise says why not; 1 makes that an error; 0 skips it.
    optimise: the optimisation flags of the host and device compilers.
    """
    import torch
    from torch.utils import cpp_extension

    mode = os.environ.get("GEMMLAB_CUDA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"gemmlab: GEMMLAB_CUDA must be auto, 0 or 1; got {mode!r}")
    if mode == "0":
        print("gemmlab: CUDA backend not built (GEMMLAB_CUDA=0)")
        return []
    reason = why_not_cuda()
    if reason:
        if mode == "1":
            raise SystemExit(f"gemmlab: GEMMLAB_CUDA=1 but the CUDA extension cannot be built: {reason}")
        print(f"gemmlab: building without CUDA: {reason} (GEMMLAB_CUDA=1 makes this an error)")
        return []
    print(f"gemmlab: building the CUDA extension gemmlab._cuda with {cpp_extension.CUDA_HOME} for torch's CUDA {torch.version.cuda}")
    cuda = "csrc/cuda/"
    return [
        cpp_extension.CUDAExtension(
            "gemmlab._cuda",
            [cuda + "cuda_ext.cpp", cuda + "gemm.cu"],  # torch glue (C++), kernels (nvcc)
            depends=[cuda + "gemm.h", cuda + "gemm_kernels.cuh"],
            extra_compile_args={"cxx": optimise, "nvcc": optimise + ["-lineinfo"]},
        )
    ]


def why_not_cuda() -> str | None:
    """Why gemmlab._cuda cannot be built here (None: it can): torch without CUDA, no nvcc, or an
    nvcc of another major CUDA version than torch's."""
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return f"torch {torch.__version__} has no CUDA"
    home = cpp_extension.CUDA_HOME
    nvcc = os.path.join(home, "bin", "nvcc") if home else None
    if not nvcc or not os.path.exists(nvcc):
        return f"no CUDA toolkit found for torch's CUDA {torch.version.cuda} (set CUDA_HOME or put nvcc on PATH)"
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
        found = re.search(r"release (\d+)\.(\d+)", out).group(0).split()[1]
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        return f"could not run {nvcc} --version ({exc})"
    if found.split(".")[0] != torch.version.cuda.split(".")[0]:
        return f"{nvcc} is CUDA {found} but torch {torch.__version__} is built with CUDA {torch.version.cuda}"
    return None
