"""Backend registry: what is available, what the default is, and import never failing."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import CPU_BACKENDS, randn

import gemmlab
from gemmlab.registry import get_backend


def test_every_cpu_backend_is_available_after_install():
    info = {i["name"]: i for i in gemmlab.backend_info()}
    missing = {name: info[name]["reason"] for name in CPU_BACKENDS if not info[name]["available"]}
    assert not missing, f"backends not available after the documented install: {missing}"
    cpu_available = [name for name in gemmlab.available_backends() if "cpu" in info[name]["devices"]]
    assert cpu_available == CPU_BACKENDS  # ladder order, slowest first


def test_backend_info_fields():
    for info in gemmlab.backend_info():
        assert set(info) >= {"name", "available", "reason", "devices", "dtypes", "summary"}
        assert "float32" in info["dtypes"] and "float64" in info["dtypes"]
        assert "cpu" in info["devices"] or info["name"] in ("cuda", "numba_cuda")  # the GPU-only backends


def test_default_is_auto_and_auto_means_torch(record_products):
    assert gemmlab.current_backend() == "auto"
    products = record_products("torch")
    gemmlab.matmul(randn(2, 3), randn(3, 2))
    assert products() == [((2, 3), (3, 2))]


def test_use_backend_nests_and_restores():
    with gemmlab.use_backend("cpp"):
        assert gemmlab.current_backend() == "cpp"
        with gemmlab.use_backend("numba"):
            assert gemmlab.current_backend() == "numba"
        assert gemmlab.current_backend() == "cpp"
        with pytest.raises(RuntimeError), gemmlab.use_backend("cython"):
            raise RuntimeError("boom")
        assert gemmlab.current_backend() == "cpp"
    assert gemmlab.current_backend() == "auto"


def test_use_backend_routes_calls(monkeypatch):
    calls = []
    spec = get_backend("cython")
    kernel = spec.kernel
    monkeypatch.setattr(spec, "_kernel", lambda *args: (calls.append(1), kernel(*args)))
    with gemmlab.use_backend("cython"):
        gemmlab.matmul(randn(2, 3), randn(3, 2))
    gemmlab.matmul(randn(2, 3), randn(3, 2))
    assert calls == [1]


def test_set_backend_for_the_process():
    try:
        gemmlab.set_backend("numba")
        assert gemmlab.current_backend() == "numba"
        with gemmlab.use_backend("auto"):
            assert gemmlab.current_backend() == "auto"
    finally:
        gemmlab.set_backend("auto")


@pytest.mark.parametrize("name", ["nope", None, 3])
def test_set_backend_rejects_unknown(name):
    with pytest.raises(ValueError, match="unknown gemmlab backend"):
        gemmlab.set_backend(name)
    assert gemmlab.current_backend() == "auto"


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_is_lazy():
    out = _run_python("import sys, gemmlab; print(json.dumps(sorted(m for m in ('numba', 'gemmlab._cpp') if m in sys.modules)))"
                      .replace("import sys", "import sys, json"))
    assert json.loads(out) == []


def test_missing_extension_does_not_break_import():
    out = _run_python(
        "import sys, json; sys.modules['gemmlab._cpp'] = None\n"  # as if the C++ extension had not been built
        "import gemmlab, torch\n"
        "info = {i['name']: i for i in gemmlab.backend_info()}\n"
        "print(json.dumps([gemmlab.available_backends(), info['cpp']['reason']]))\n"
        "try:\n    gemmlab.matmul(torch.ones(2, 2), torch.ones(2, 2), backend='cpp')\n"
        "except gemmlab.BackendUnavailableError as e:\n    print(e)\n"
    )
    lines = out.splitlines()
    names, reason = json.loads(lines[0])
    assert "cpp" not in names and "cython" in names and "torch" in names
    assert "gemmlab._cpp" in reason
    assert "not available here" in lines[1] and "pip install --no-build-isolation" in lines[1]


def test_numba_works_without_a_writable_cache():
    out = _run_python(
        "import numba.core.caching as caching, json\n"
        "caching.CacheImpl._locator_classes = []\n"  # no locator accepts: as with no writable folder
        "import gemmlab, torch\n"
        "a, b = torch.randn(5, 7, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)\n"
        "ok = torch.allclose(gemmlab.matmul(a, b, backend='numba'), a @ b)\n"
        "note = [i for i in gemmlab.backend_info() if i['name'] == 'numba'][0]['note']\n"
        "print(json.dumps([ok, note]))\n"
    )
    ok, note = json.loads(out)
    assert ok and "without an on-disk cache" in note
