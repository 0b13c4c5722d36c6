"""gemmlab's CUDA kernels checked on the CPU: csrc/cuda/harness.cu compiled by the C++ compiler
against csrc/cuda/emulate.h, which runs each CUDA thread as a fiber and checks every global read.

This is how the kernels' indexing, edge tiles, load paths, barriers and vector alignment are tested
on machines without a GPU; it says nothing about their speed. (`make cuda-check` compiles the same
harness with nvcc, and on a GPU it runs the kernels for real.)
"""

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc" / "cuda"
CXX = shutil.which("g++") or shutil.which("c++")


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_cuda_kernels_under_cpu_emulation(tmp_path):
    binary = tmp_path / "cuda_harness_emulated"
    build = subprocess.run(
        [CXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-DGEMMLAB_CUDA_EMULATE",
         "-x", "c++", "-o", str(binary), str(CSRC / "harness.cu")],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-5000:]
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    assert "CPU emulation" in run.stdout and "all within the error bound" in run.stdout, run.stdout
