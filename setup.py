"""Build of gemmlab's compiled backends: one Cython module and one C++ torch extension.

Both are compiled by the same `pip install --no-build-isolation .` against the torch already
installed. Flags stay portable (-O3, no -march=native) so an installed build runs on any x86-64 CPU.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

# OpenMP: the Cython kernel's prange and ATen's parallel_for (inlined into our C++) both need it.
OPENMP = ["-fopenmp"]
OPTIMISE = ["-O3"]
# The C++ GEMM picks AVX-512/AVX2 at run time through target attributes, so it needs no -m flags.
# -fno-math-errno only drops errno bookkeeping; no -ffast-math (it would change results).
CPP_FLAGS = ["-fno-math-errno"]

cython_kernel = Extension(
    "gemmlab.backends._cython_kernel",
    ["src/gemmlab/backends/_cython_kernel.pyx"],
    language="c++",
    extra_compile_args=OPTIMISE + OPENMP,
    extra_link_args=OPENMP,
)

cpp_kernel = CppExtension(
    "gemmlab._cpp",
    ["csrc/cpu_kernel.cpp", "csrc/gemm/gemm.cpp", "csrc/gemm/cpu_path.cpp"],
    depends=sorted(str(p) for p in Path("csrc").rglob("*") if p.suffix in {".h", ".inc"}),
    extra_compile_args=OPTIMISE + CPP_FLAGS + OPENMP,
    extra_link_args=OPENMP,
)


def cuda_extensions():
    """gemmlab._cuda (the `cuda` backend) when it can be built; GEMMLAB_CUDA=auto|0|1 decides.

    auto (the default) builds it when torch is a CUDA build and a CUDA toolkit with the same major
    version as torch's CUDA is found, and otherwise says why not; 1 makes that an error; 0 skips it.
    """
    import os
    import re
    import subprocess

    import torch
    from torch.utils import cpp_extension

    mode = os.environ.get("GEMMLAB_CUDA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"gemmlab: GEMMLAB_CUDA must be auto, 0 or 1; got {mode!r}")
    if mode == "0":
        print("gemmlab: CUDA backend not built (GEMMLAB_CUDA=0)")
        return []

    def why_not():
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

    reason = why_not()
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
            extra_compile_args={"cxx": OPTIMISE, "nvcc": OPTIMISE + ["-lineinfo"]},
        )
    ]


setup(
    ext_modules=[*cythonize([cython_kernel], language_level=3), cpp_kernel, *cuda_extensions()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
