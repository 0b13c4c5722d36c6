"""Build of gemmlab's compiled backends: the Cython kernel (in up to three builds) and one C++ torch
extension.

All are compiled by the same `pip install --no-build-isolation .` against the torch already
installed. Flags stay portable (-O3, no -march=native) so an installed build runs on any x86-64 CPU:
the Cython kernel is compiled once with the default flags (SSE2) and, on x86-64, again for AVX2 and
for AVX-512, as separate modules; gemmlab.backends.cython_ext imports, at run time, the best one the
CPU supports.
"""

import platform
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

# The Cython kernel's builds: module name -> flags. Each .pyx only sets a few constants and includes
# _cython_kernel_body.pxi. Code built with instruction-set flags may use those instructions
# anywhere, so cython_ext imports a build only on a CPU that has them.
#
# The vectoriser flags come from reading the generated assembly (gcc 12), so that the micro-kernel's
# MR x NR accumulators stay in registers:
# - AVX-512 (one vector = 16 float / 8 double): the loop vectoriser turns each one-vector column
#   loop of the micro-kernel into single zmm FMAs. gcc would first completely unroll the 8-trip
#   double loops (and then vectorise across the tile's rows with permutes and spills), so complete
#   peeling before vectorisation is limited to 4 trips.
# - AVX2 and SSE2 (one vector = 8 / 4 float): the loop vectoriser picks those permute-heavy plans
#   (half the speed), while completely unrolling the short loops and letting the basic-block (SLP)
#   vectoriser pack them gives clean FMAs: loop vectorisation is off there.
CYTHON_KERNEL_VARIANTS = {"_cython_kernel": ["-fno-tree-loop-vectorize"]}  # portable: x86-64 baseline (SSE2), or any CPU
if platform.machine().lower() in ("x86_64", "amd64"):
    CYTHON_KERNEL_VARIANTS["_cython_kernel_avx2"] = ["-mavx2", "-mfma", "-fno-tree-loop-vectorize"]
    CYTHON_KERNEL_VARIANTS["_cython_kernel_avx512"] = [
        "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma",
        "-mprefer-vector-width=512",  # gcc would otherwise favour 256-bit vectors on some tunings
        "--param=max-completely-peel-times=4",
    ]

cython_kernels = [
    Extension(
        f"gemmlab.backends.{name}",
        [f"src/gemmlab/backends/{name}.pyx"],
        depends=["src/gemmlab/backends/_cython_kernel_body.pxi", "csrc/kernel_abi.h"],
        # kernel_abi.h, the C ABI the kernel exports to the dispatch core (absolute: ninja runs in build/)
        include_dirs=[str(Path(__file__).resolve().parent / "csrc")],
        language="c++",
        extra_compile_args=OPTIMISE + OPENMP + flags,
        extra_link_args=OPENMP,
    )
    for name, flags in CYTHON_KERNEL_VARIANTS.items()
]

cpp_kernel = CppExtension(
    "gemmlab._cpp",
    ["csrc/cpu_kernel.cpp", "csrc/dispatch.cpp", "csrc/autograd_op.cpp", "csrc/gemm/gemm.cpp", "csrc/gemm/cpu_path.cpp",
     "csrc/gemm/cpu_caches.cpp", "csrc/gemm/peak.cpp"],
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
    ext_modules=[*cythonize(cython_kernels, language_level=3), cpp_kernel, *cuda_extensions()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
