"""Builds without CUDA: the GPU backends say why they are off, and gemmlab works without them.

Also the build's decision (cuda_build.cuda_extensions, which setup.py calls; GEMMLAB_CUDA=auto|0|1),
run against fake toolkits so that every branch is exercised on any machine.
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gemmlab
from gemmlab import BackendUnavailableError

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def _info(name):
    return {i["name"]: i for i in gemmlab.backend_info()}[name]


def test_gpu_backends_are_registered():
    for name in ("cuda", "numba_cuda"):
        info = _info(name)
        assert info["devices"] == ["cuda"] and info["dtypes"] == ["float32", "float64"]
        assert name in gemmlab.known_backends()


@no_gpu
def test_cuda_backend_unavailable_with_reason():
    info = _info("cuda")
    assert not info["available"] and "cuda" not in gemmlab.available_backends()
    if torch.version.cuda is None:  # a CPU build of torch
        assert info["reason"] == f"ImportError: gemmlab was built without CUDA: torch {torch.__version__} has no CUDA"
    else:
        assert "without CUDA" in info["reason"] or "no CUDA device" in info["reason"]
    with pytest.raises(BackendUnavailableError, match=r"'cuda' is not available here \(ImportError: gemmlab was built without "
                                                      r"CUDA.*GEMMLAB_CUDA=1"):
        gemmlab.matmul(torch.ones(2, 2), torch.ones(2, 2), backend="cuda")


@no_gpu
def test_numba_cuda_backend_unavailable_with_reason():
    info = _info("numba_cuda")
    assert not info["available"] and "numba_cuda" not in gemmlab.available_backends()
    assert "numba-cuda" in info["reason"] or "no usable CUDA GPU" in info["reason"]
    with pytest.raises(BackendUnavailableError, match="'numba_cuda' is not available here"):
        gemmlab.set_backend("numba_cuda")


def test_import_and_cpu_work_without_the_gpu_backends():
    code = (
        "import json, sys, torch, gemmlab\n"
        "info = {i['name']: i for i in gemmlab.backend_info()}\n"
        "c = gemmlab.matmul(torch.ones(2, 3), torch.ones(3, 4), backend='cpp')\n"
        "print(json.dumps([info['cuda']['available'], info['cuda']['reason'], float(c.sum()), "
        "'gemmlab._cuda' in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    available, reason, total, loaded = json.loads(result.stdout)
    assert total == 24.0
    if not torch.cuda.is_available():
        assert not available and "without CUDA" in reason and not loaded


# --- the build's decision -------------------------------------------------------------------------


sys.path.insert(0, str(ROOT))  # cuda_build.py sits beside setup.py, which imports it
cuda_build = importlib.import_module("cuda_build")
OPTIMISE = ["-O3"]


def _cuda_extensions():
    return cuda_build.cuda_extensions(OPTIMISE)


def test_setup_takes_its_cuda_extension_from_cuda_build():
    assert "from cuda_build import cuda_extensions" in (ROOT / "setup.py").read_text()


@pytest.fixture
def fake_toolkit(tmp_path, monkeypatch):
    """A CUDA_HOME whose nvcc reports the given release, and torch pretending to be a CUDA build."""
    from torch.utils import cpp_extension

    def make(nvcc_release, torch_cuda):
        nvcc = tmp_path / "bin" / "nvcc"
        nvcc.parent.mkdir(exist_ok=True)
        nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {nvcc_release}, V{nvcc_release}.1'\n")
        nvcc.chmod(0o755)
        monkeypatch.setattr(torch.version, "cuda", torch_cuda)
        monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path))

    return make


@pytest.mark.parametrize("mode", ["auto", "", "0"])
def test_build_without_cuda_torch_skips_and_says_why(mode, monkeypatch, capsys):
    monkeypatch.setenv("GEMMLAB_CUDA", mode)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert _cuda_extensions() == []
    printed = capsys.readouterr().out
    if mode == "0":
        assert "not built (GEMMLAB_CUDA=0)" in printed
    else:
        assert f"building without CUDA: torch {torch.__version__} has no CUDA" in printed


def test_build_required_but_impossible_fails_loudly(monkeypatch):
    monkeypatch.setenv("GEMMLAB_CUDA", "1")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(SystemExit, match="GEMMLAB_CUDA=1 but the CUDA extension cannot be built: torch .* has no CUDA"):
        _cuda_extensions()


def test_build_rejects_bad_setting(monkeypatch):
    monkeypatch.setenv("GEMMLAB_CUDA", "yes")
    with pytest.raises(SystemExit, match="GEMMLAB_CUDA must be auto, 0 or 1"):
        _cuda_extensions()


def test_build_skips_toolkit_of_another_major_version(fake_toolkit, monkeypatch, capsys):
    fake_toolkit("13.0", "12.8")
    monkeypatch.setenv("GEMMLAB_CUDA", "auto")
    assert _cuda_extensions() == []
    assert "is CUDA 13.0 but torch" in capsys.readouterr().out
    monkeypatch.setenv("GEMMLAB_CUDA", "1")
    with pytest.raises(SystemExit, match="is CUDA 13.0 but torch .* is built with CUDA 12.8"):
        _cuda_extensions()


def test_build_with_a_matching_toolkit_adds_the_extension(fake_toolkit, monkeypatch):
    fake_toolkit("13.0", "13.2")  # same major version: compatible
    monkeypatch.setenv("GEMMLAB_CUDA", "1")
    (ext,) = _cuda_extensions()
    assert ext.name == "gemmlab._cuda"
    assert ext.sources == ["csrc/cuda/cuda_ext.cpp", "csrc/cuda/gemm.cu"]
    assert all((ROOT / path).exists() for path in [*ext.sources, *ext.depends])
