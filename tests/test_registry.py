"""Backend registry: what is available, what the default is, and import never failing."""

import contextlib
import json
import subprocess
import sys
import threading

import pytest
import torch
from conftest import CPU_BACKENDS, randn

import gemmlab
from gemmlab import BackendUnavailableError
from gemmlab.registry import BACKENDS, Backend, backend_names


def test_every_cpu_backend_is_available_after_install():
    info = {i["name"]: i for i in gemmlab.backend_info()}
    missing = {name: info[name]["reason"] for name in CPU_BACKENDS if not info[name]["available"]}
    assert not missing, f"backends not available after the documented install: {missing}"
    cpu_available = [name for name in gemmlab.available_backends() if "cpu" in info[name]["devices"]]
    assert cpu_available == CPU_BACKENDS  # ladder order, slowest first


def test_backend_names_by_device_and_kind():
    """The lists tests, benchmarks, `auto` and the bench commands take their backends from."""
    assert backend_names("cpu") == ["loops", "elementwise", "broadcast", "einsum", "numba", "cython", "cpp", "torch"]
    assert backend_names("cpu", "python") == ["loops", "elementwise", "broadcast"]
    assert backend_names("cpu", "compiled") == ["numba", "cython", "cpp"]
    assert backend_names("cpu", "library", "compiled") == ["einsum", "numba", "cython", "cpp", "torch"]
    assert backend_names("cuda", "compiled") == ["cuda", "numba_cuda"]
    assert set(backend_names("cuda")) == set(backend_names("cpu", "python", "library")) | {"cuda", "numba_cuda"}
    with pytest.raises(ValueError, match="unknown backend kind"):
        backend_names("cpu", "fast")


def test_backend_info_fields():
    for info in gemmlab.backend_info():
        assert set(info) >= {"name", "available", "reason", "devices", "dtypes", "summary"}
        assert "float32" in info["dtypes"] and "float64" in info["dtypes"]
        assert "cpu" in info["devices"] or info["name"] in ("cuda", "numba_cuda")  # the GPU-only backends


def test_default_is_auto_and_untuned_auto_follows_its_built_in_rule(kernel_calls):
    assert gemmlab.current_backend() == "auto"
    calls = kernel_calls("cpp", "torch")
    gemmlab.matmul(randn(2, 3), randn(3, 2))  # (the suite's tuned table is empty)
    gemmlab.matmul(randn(2, 3).to(torch.complex128), randn(3, 2).to(torch.complex128))
    assert [c.backend for c in calls] == ["cpp", "torch"]


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


def test_use_backend_routes_calls(kernel_calls):
    calls = kernel_calls("cython", "cpp")
    with gemmlab.use_backend("cython"):
        gemmlab.matmul(randn(2, 3), randn(3, 2))
    gemmlab.matmul(randn(2, 3), randn(3, 2))  # auto, untuned: cpp
    assert [c.backend for c in calls] == ["cython", "cpp"]


@pytest.fixture
def broken(monkeypatch):
    """A known backend whose module cannot be imported."""
    spec = Backend("broken", "gemmlab.backends.no_such_module", "test double", hint="rebuild it")
    monkeypatch.setitem(BACKENDS, "broken", spec)
    return spec


def test_use_backend_refuses_unknown_and_unavailable_names(broken):
    for name, error, message in [("nope", ValueError, r"unknown gemmlab backend 'nope'; known backends: auto, loops"),
                                 ("broken", BackendUnavailableError, r"'broken' is not available here \(ModuleNotFoundError.*rebuild it")]:
        with pytest.raises(error, match=message), gemmlab.use_backend(name):
            pytest.fail("the block must not run")
        assert gemmlab.current_backend() == "auto"
        with gemmlab.use_backend("cpp"):  # a failed inner block leaves the outer one's default
            with pytest.raises(error, match=message), gemmlab.use_backend(name):
                pytest.fail("the block must not run")
            assert gemmlab.current_backend() == "cpp"
        with pytest.raises(error, match=message):
            gemmlab.set_backend(name)
        assert gemmlab.current_backend() == "auto"


def test_use_backend_is_per_thread(kernel_calls):
    """Real threads, each inside its own use_backend block at the same time: none sees another's."""
    calls = kernel_calls("cython", "numba", "cpp")
    barrier = threading.Barrier(3, timeout=60)
    seen = {}

    def worker(name):
        def run():
            with contextlib.ExitStack() as stack:
                if name != "none":
                    stack.enter_context(gemmlab.use_backend(name))
                barrier.wait()  # every block is open now...
                seen[name] = (gemmlab.current_backend(), threading.get_ident())
                gemmlab.matmul(randn(3, 4), randn(4, 2))
                barrier.wait()  # ...and stays open until every thread has multiplied
        return threading.Thread(target=run)

    with gemmlab.use_backend("torch"):  # the main thread's block does not reach threads either
        workers = [worker(name) for name in ("cython", "numba", "none")]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=60)
        assert gemmlab.current_backend() == "torch"
    assert not any(t.is_alive() for t in workers)
    assert {name: backend for name, (backend, _) in seen.items()} == {"cython": "cython", "numba": "numba", "none": "auto"}
    ran = {c.thread: c.backend for c in calls}
    assert {name: ran[thread] for name, (_, thread) in seen.items()} == {"cython": "cython", "numba": "numba", "none": "cpp"}
    assert len(calls) == 3


def test_set_backend_reaches_every_thread(kernel_calls):
    calls = kernel_calls("numba", "torch")
    try:
        gemmlab.set_backend("numba")
        t = threading.Thread(target=lambda: gemmlab.matmul(randn(3, 4), randn(4, 2)))
        t.start()
        t.join(timeout=60)
    finally:
        gemmlab.set_backend("auto")
    assert [(c.backend, c.thread) for c in calls] == [("numba", t.ident)]


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
