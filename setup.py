"""Build of gemmlab's compiled backends: the Cython kernel (in up to three builds) and one C++ torch
extension.

All are compiled by the same `pip install --no-build-isolation .` against the torch already
installed. Flags stay portable (-O3, no -march=native) so an installed build runs on any x86-64 CPU:
the Cython kernel is compiled once with the default flags (SSE2) and, on x86-64, again for AVX2 and
for AVX-512, as separate modules; gemmlab.backends.cython_ext imports, at run time, the best one the
CPU supports.
"""

import platform
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

# The CUDA detection lives beside this file (cuda_build.py, tested on its own); a PEP 517 build does
# not put the project's folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda_build import cuda_extensions  # noqa: E402

# OpenMP: the Cython kernel's prange and ATen's parallel_for (inlined into our C++) both need it.
OPENMP = ["-fopenmp"]
OPTIMISE = ["-O3"]
# Python's own CFLAGS add -g. The debug info makes each file that includes torch's headers take ~35%
# longer to compile (dispatch.cpp 41 -> 30 s, autograd_op.cpp 56 -> 33 s, gcc 12) and its object
# ~25 MB; profiles and objdump need only the symbols, which stay. (Not for nvcc: it has no -g0.)
NO_DEBUG_INFO = ["-g0"]
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
#   With 16 vector registers the 6 x 2-vector tile fills them; gcc does not schedule before register
#   allocation on x86 unless told, and without a register-pressure-aware pass it hoisted the
#   micro-kernel's broadcasts and spilled accumulators (AMD EPYC Zen 3, AVX2: 0.4-0.5x the best peer).
SIXTEEN_REGISTERS = ["-fno-tree-loop-vectorize", "-fschedule-insns", "-fsched-pressure"]
CYTHON_KERNEL_VARIANTS = {"_cython_kernel": SIXTEEN_REGISTERS}  # portable: x86-64 baseline (SSE2), or any CPU
if platform.machine().lower() in ("x86_64", "amd64"):
    CYTHON_KERNEL_VARIANTS["_cython_kernel_avx2"] = ["-mavx2", "-mfma", *SIXTEEN_REGISTERS]
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
        extra_compile_args=OPTIMISE + NO_DEBUG_INFO + OPENMP + flags,
        extra_link_args=OPENMP,
    )
    for name, flags in CYTHON_KERNEL_VARIANTS.items()
]

cpp_kernel = CppExtension(
    "gemmlab._cpp",
    ["csrc/cpu_kernel.cpp", "csrc/dispatch.cpp", "csrc/autograd_op.cpp", "csrc/gemm/gemm.cpp", "csrc/gemm/cpu_path.cpp",
     "csrc/gemm/cpu_caches.cpp", "csrc/gemm/peak.cpp"],
    depends=sorted(str(p) for p in Path("csrc").rglob("*") if p.suffix in {".h", ".inc"}),
    extra_compile_args=OPTIMISE + NO_DEBUG_INFO + CPP_FLAGS + OPENMP,
    extra_link_args=OPENMP,
)


setup(
    ext_modules=[*cythonize(cython_kernels, language_level=3), cpp_kernel, *cuda_extensions(OPTIMISE)],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
