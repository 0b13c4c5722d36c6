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

setup(
    ext_modules=[*cythonize([cython_kernel], language_level=3), cpp_kernel],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
