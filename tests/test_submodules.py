"""gemmlab's public submodules are attributes of the package after a plain `import gemmlab`,
loaded on first use (PEP 562), so the import itself stays light. Checked in fresh interpreters:
this test process has imported most of them already."""

import json
import pkgutil

import gemmlab
from fresh_python import run_python

PUBLIC = ["autotune", "backends", "bench", "checkpoints", "cpu_caches", "data", "distributed", "nn", "reference", "scratch",
          "timing", "train"]
# Imported by `import gemmlab` itself (the call path), or not for library users (the command).
NOT_LAZY = {"cli", "dispatch", "ops", "registry"}


def test_every_submodule_is_public_or_known_internal():
    """A new module must be sorted into one list or the other (underscored ones are private)."""
    names = {m.name for m in pkgutil.iter_modules(gemmlab.__path__) if not m.name.startswith("_")}
    assert names == set(PUBLIC) | NOT_LAZY


def test_submodules_load_lazily_and_are_attributes():
    """One fresh interpreter: nothing public is imported by `import gemmlab`; the issue's
    gemmlab.nn.Linear works as the first thing after it; every submodule is listed and loads; an
    unknown name is a clear AttributeError."""
    code = f"""
import json, sys
import gemmlab, torch
public = {PUBLIC!r}
eager = [m for m in public if "gemmlab." + m in sys.modules]
shape = list(gemmlab.nn.Linear(4, 3, backend="torch")(torch.ones(2, 4)).shape)
listed = [m for m in public if m in dir(gemmlab) and m in gemmlab.__all__]
loaded = [m for m in public if getattr(gemmlab, m) is sys.modules["gemmlab." + m]]
try:
    gemmlab.no_such_module
except AttributeError as exc:
    unknown = str(exc)
print(json.dumps({{"eager": eager, "shape": shape, "listed": listed, "loaded": loaded, "unknown": unknown}}))
"""
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "eager": [], "shape": [2, 3], "listed": PUBLIC, "loaded": PUBLIC,
        "unknown": "module 'gemmlab' has no attribute 'no_such_module'",
    }
