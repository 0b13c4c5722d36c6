"""The packed kernels of the numba and cython backends, path by path, against the float64 reference.

Every build of the Cython kernel this CPU can run is tested (not only the one the backend picked),
and each kernel on: the small serial path and the packed, threaded path (both sides of the size
threshold), edge tiles (sizes that are not multiples of MR, NR, KC, MC, NC, several B panels,
k beyond one packed block of B), float32 and float64, 1 and 2 threads, views (transposed,
sliced, stride-0), NaN-poisoned outputs and outputs with non-contiguous strides; on small-integer
inputs every result must be exact.
"""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_untouched_outside, import_or_fail, layouts, out_views, poisoned, randn, small_integers
from fresh_python import run_python

import gemmlab
from gemmlab.backends import cython_ext  # (needed to collect the tests: without any Cython build, a collection error)
from gemmlab.reference import assert_close_to_reference, assert_exact

numba_jit = import_or_fail("gemmlab.backends.numba_jit")  # failing to import: its tests fail, the others still run

SUPPORTED = cython_ext.supported_variants()  # best first
DTYPES = [torch.float32, torch.float64]
# Every build this CPU supports is tested; one that cannot be loaded fails its tests, saying why
# (setup.py compiles all three on x86-64, where supported_variants() may list all three).
KERNELS = ["numba"] + [f"cython-{name}" for name in SUPPORTED]


@functools.cache
def _load_build(name):
    return cython_ext.load_variant(name)


def cython_build(name):
    """The kernel module of one Cython build; fails the test if it cannot be loaded."""
    try:
        return _load_build(name)
    except ImportError as exc:
        pytest.fail(f"a Cython build this CPU supports is missing: {exc}", pytrace=False)


def kernel_for(name):
    """matmul_2d(a, b, out) of one kernel, following torch.get_num_threads()."""
    if name == "numba":
        return numba_jit.matmul_2d
    module = cython_build(name.removeprefix("cython-"))
    return lambda a, b, out: cython_ext.run_2d(module, a, b, out, torch.get_num_threads())


def blocking(name):
    if name == "numba":
        return {"MR": numba_jit.MR, "NR_BYTES": numba_jit.NR_BYTES, "KC": numba_jit.KC, "MC": numba_jit.MC,
                "NC": numba_jit.NC, "SMALL_WORK": numba_jit.SMALL_WORK, "PACK_B_ELEMENTS": numba_jit.PACK_B_ELEMENTS,
                "PACK_A_PANELS": numba_jit.PACK_A_PANELS}
    return cython_build(name.removeprefix("cython-")).BLOCKING


def shapes(name):
    """(m, k, n) pairs that exercise each path and edge of kernel `name`, from its own blocking."""
    blk = blocking(name)
    kc, mc, nc = blk["KC"], blk["MC"], blk["NC"]
    nr32 = blk["NR_BYTES"] // 4  # NR for float32 (float64 has half as many columns per panel)
    small = [
        (5, 784, 10),  # the notes' product: narrower than a vector
        (1, 1, 1),
        (2, 3, 5),
        (13, 17, 11),
        (7, 300, 33),  # several vectors of columns, the last one partial
        (3, 50, 40),  # a tile of fewer rows; two vectors of columns, then one
        (64, 50, 10),  # a layer's h @ W.T (b column-major in the transposed layouts)
        (4, 60, 1000),  # b copied (transposed layouts) in blocks of columns and chunks of rows
        (63, 64, 65),  # just under the threshold
    ]
    assert all(m * k * n <= blk["SMALL_WORK"] for m, k, n in small)
    packed = [
        (64, 64, 65),  # just over the threshold
        (mc + 5, kc + 3, 2 * nr32 + 7),  # several row blocks, two KC blocks, three float32 panels
        (67, 2 * kc + 3, 97),  # k > 2 KC, edge row panel and edge column panel
        (301, 257, 50),  # a single B panel: A is read in place
        (5, 600, max(3 * nr32 + 1, 101)),  # fewer row blocks than threads: B panels split between tasks
        (13, 300, (blk["PACK_A_PANELS"] + 1) * nr32 + 5),  # more B panels than that: A packed (whole and edge panels)
        (3, 1100, nc + 4),  # n > NC (two column blocks), k beyond one packed block of B
    ]
    assert all(m * k * n > blk["SMALL_WORK"] for m, k, n in packed)
    assert 1100 > max(kc, blk["PACK_B_ELEMENTS"] // nc // kc * kc)  # the rows of B packed at once
    return small + packed


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_every_path_and_edge(kernel, dtype, nthreads, threads):
    torch.set_num_threads(nthreads)
    fn = kernel_for(kernel)
    for i, (m, k, n) in enumerate(shapes(kernel)):
        a, b = randn(m, k, dtype=dtype, seed=i), randn(k, n, dtype=dtype, seed=100 + i)
        out = poisoned(m, n, dtype=dtype)
        fn(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} ({m}, {k}) @ ({k}, {n}), {nthreads} threads")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_exact_on_small_integers(kernel, dtype, nthreads, threads):
    """Integers whose every partial sum is exact: each path and edge must give the product exactly,
    so a micro-kernel that drops or repeats a single k step fails here, however long k is."""
    torch.set_num_threads(nthreads)
    fn = kernel_for(kernel)
    # k = 4097: several KC slices and packed blocks of B, with A read in place (n = 3) and packed.
    for i, (m, k, n) in enumerate(shapes(kernel) + [(29, 4097, 3), (29, 4097, 67)]):
        for layout, a, b in layouts(m, k, n, dtype, make=functools.partial(small_integers, k=k)):
            if layout not in ("contiguous", "transposed"):  # the others: test_views (k long and exact is slow)
                continue
            out = poisoned(m, n, dtype=dtype)
            fn(a, b, out)
            assert_exact(out, a, b, what=f"{kernel} {layout} ({m}, {k}) @ ({k}, {n}), {nthreads} threads")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# (the last three take the dot-product loop where B is held transposed: tests/test_jit_dot.py)
@pytest.mark.parametrize("shape", [(5, 784, 10), (13, 17, 11), (70, 131, 97), (301, 257, 50), (64, 784, 50),
                                   (5, 1001, 64), (301, 1000, 7)], ids=str)
def test_views(kernel, dtype, shape, threads):
    torch.set_num_threads(2)
    fn = kernel_for(kernel)
    m, k, n = shape
    for name, a, b in layouts(m, k, n, dtype):
        out = poisoned(m, n, dtype=dtype)
        fn(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} on {name} views {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 784, 10), (13, 17, 11), (70, 131, 97)], ids=str)
def test_out_with_other_strides(kernel, dtype, shape, threads):
    torch.set_num_threads(2)
    fn = kernel_for(kernel)
    m, k, n = shape
    a, b = randn(m, k, dtype=dtype, seed=11), randn(k, n, dtype=dtype, seed=12)
    for name, out in out_views(m, n, dtype):
        fn(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} into a {name} out {shape}")
        assert_untouched_outside(out, f"{kernel} into a {name} out {shape}")


@pytest.mark.parametrize("shape", [(5, 784, 10), (70, 131, 97)], ids=str)
def test_numpy_entry_points_take_negative_strides(shape):
    """The NumPy-level entry points see any strides NumPy allows, negative ones included."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k))[::-1]
    b = rng.standard_normal((k, 2 * n))[:, ::-2]
    entry_points = [("numba", numba_jit.matmul_2d_numpy)] + [
        (name, lambda a, b, out, module=cython_build(name): module.matmul_2d(a, b, out, num_threads=2))
        for name in SUPPORTED
    ]
    for name, fn in entry_points:
        out = np.full((m, n), np.nan)[::-1]
        fn(a, b, out)
        assert_close_to_reference(torch.from_numpy(out.copy()), torch.from_numpy(a.copy()), torch.from_numpy(b.copy()),
                                  what=f"{name} on negative strides")


def test_bad_tensors_raise_instead_of_computing_wrongly(kernel):
    fn = kernel_for(kernel)
    who = "numba" if kernel == "numba" else "cython"
    a, b = randn(4, 3), randn(3, 5)
    out = poisoned(4, 5)
    with pytest.raises(ValueError, match=rf"gemmlab {who} matmul_2d cannot read lazily negated tensors .*a \(4, 3\) float64"):
        fn(torch._neg_view(a), b, out)  # a lazily negated tensor: its memory holds -a
    with pytest.raises(ValueError, match=rf"gemmlab {who} matmul_2d runs on the CPU; got a \(4, 3\) float64 on meta, b \(3, 5\)"):
        fn(a.to("meta"), b, out)
    with pytest.raises(TypeError, match=rf"gemmlab {who} matmul_2d needs float32 or float64 tensors of one dtype; "
                                        r"got a \(4, 3\) float32 on cpu, b \(3, 5\) float64"):
        fn(a.float(), b, out)
    with pytest.raises(TypeError, match=rf"gemmlab {who} matmul_2d needs float32 or float64 .*a \(4, 3\) int64"):
        fn(a.long(), b.long(), out.long())
    with pytest.raises(ValueError, match=rf"gemmlab {who} matmul_2d needs 2-D tensors; got a \(1, 4, 3\)"):
        fn(a[None], b, out)
    with pytest.raises(TypeError, match=rf"gemmlab {who} matmul_2d takes torch tensors a, b and out; b is ndarray"):
        fn(a, b.numpy(), out)
    with pytest.raises(ValueError, match=rf"gemmlab {who} matmul_2d: shapes do not fit: a \(4, 3\), b \(4, 5\), out \(4, 5\)"):
        fn(a, randn(4, 5), out)
    with pytest.raises(ValueError, match=rf"gemmlab {who} matmul_2d: out shares memory with b; .*byte strides a \(32, 8\), "
                                         r"b \(8, 32\), out \(32, 8\)"):
        square = randn(4, 4)
        fn(randn(4, 4), square.T, square)
    assert out.isnan().all()  # every call above raised before writing anything


def test_small_paths_read_nothing_past_their_operands():
    """Each kernel on operands that end where an unreadable page begins, with NaN between their rows
    (tests/guard_page_cases.py, in a fresh process): a narrow b is read a vector per row and a wide
    one's last window is shifted, never past the operand's last element, and nothing read beside
    the operands reaches the results."""
    result = run_python(str(Path(__file__).with_name("guard_page_cases.py")), timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        f"exit status {result.returncode} (a negative one: killed by that signal): {result.stderr[-3000:]}")


# --- choosing the Cython build -----------------------------------------------------------------

def test_supported_variants_follow_the_cpu_flags():
    assert cython_ext.supported_variants(frozenset()) == ["generic"]
    avx2 = frozenset({"avx2", "fma", "sse2"})
    avx512 = avx2 | {"avx512f", "avx512vl", "avx512bw", "avx512dq"}
    if cython_ext.platform.machine().lower() in ("x86_64", "amd64"):
        assert cython_ext.supported_variants(avx2) == ["avx2", "generic"]
        assert cython_ext.supported_variants(avx512) == ["avx512", "avx2", "generic"]
        assert cython_ext.supported_variants(avx512 - {"avx512bw"}) == ["avx2", "generic"]


def test_a_build_the_cpu_lacks_is_refused():
    with pytest.raises(RuntimeError, match=r"avx512 build .* lacks .*avx512f.*supports: avx2, generic"):
        cython_ext.load_variant("avx512", flags=frozenset({"avx2", "fma"}))
    with pytest.raises(RuntimeError, match="avx2 build .* lacks .*avx2"):
        cython_ext.load_variant("avx2", flags=frozenset({"sse2"}))
    with pytest.raises(ValueError, match="GEMMLAB_CPU takes one of avx512, avx2, generic"):
        cython_ext.load_variant("avx9000")


@pytest.mark.parametrize("variant", SUPPORTED)
def test_every_build_the_cpu_supports_loads(variant):
    assert cython_build(variant).VARIANT == variant


@pytest.mark.parametrize("variant", SUPPORTED)
def test_gemmlab_cpu_forces_a_build(monkeypatch, variant):
    monkeypatch.setenv("GEMMLAB_CPU", variant.upper())
    module, note, errors = cython_ext._choose()
    assert module.VARIANT == variant and "forced by GEMMLAB_CPU" in note and errors == {}


def test_the_chosen_build_is_the_best_supported():
    forced = os.environ.get("GEMMLAB_CPU", "").strip().lower()
    expected = forced or SUPPORTED[0]
    assert cython_ext.VARIANT == expected, cython_ext.NOTE
    assert cython_ext.LOAD_ERRORS == {}
    info = {i["name"]: i for i in gemmlab.backend_info()}
    assert info["cython"]["note"] == cython_ext.NOTE and cython_ext.NOTE.startswith(f"{expected} build")


def test_a_build_that_fails_to_load_is_passed_over_and_reported(monkeypatch):
    monkeypatch.delenv("GEMMLAB_CPU", raising=False)
    best = SUPPORTED[0]
    monkeypatch.setitem(cython_ext._MODULES, best, "gemmlab.backends._no_such_build")
    if len(SUPPORTED) == 1:  # nothing to fall back to: the backend is unavailable, saying why
        with pytest.raises(ImportError, match=f"the {best} build .* was not built"):
            cython_ext._choose()
        return
    module, note, errors = cython_ext._choose()
    assert module.VARIANT == SUPPORTED[1] and list(errors) == [best]
    assert note.startswith(f"{SUPPORTED[1]} build of the kernel; the {best} build this CPU supports failed to load: ")
    assert "_no_such_build" in note and "pip install --no-build-isolation" in note


def _run_python(code: str, **env) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_gemmlab_cpu_in_a_fresh_process():
    code = (
        "import json, torch, gemmlab\n"
        "from gemmlab.reference import error_ratio\n"
        "info = {i['name']: i for i in gemmlab.backend_info()}['cython']\n"
        "a, b = torch.randn(70, 131), torch.randn(131, 97)\n"
        "ok = info['available'] and error_ratio(gemmlab.matmul(a, b, backend='cython'), a, b) <= 1\n"
        "print(json.dumps([ok, info['note'], info['reason']]))\n"
    )
    ok, note, reason = json.loads(_run_python(code, GEMMLAB_CPU="generic"))
    assert ok and note.startswith("generic build") and "forced" in note
    ok, note, reason = json.loads(_run_python(code, GEMMLAB_CPU="avx9000"))
    assert not ok and "GEMMLAB_CPU" in reason and "avx9000" in reason


def test_a_build_that_fails_to_load_shows_in_gemmlab_info():
    """End to end, in a fresh process: the best build cannot be imported, the backend still works on
    the next one, and `gemmlab info` (text) says which build runs and what failed."""
    if len(SUPPORTED) == 1:
        pytest.skip(f"this CPU supports only the {SUPPORTED[0]} build: no build to fall back to")
    code = (
        "import json, sys, torch\n"
        f"sys.modules[{cython_ext._MODULES[SUPPORTED[0]]!r}] = None  # as if that build had not been compiled\n"
        "import gemmlab, gemmlab.cli as cli\n"
        "from rich.console import Console\n"
        "from gemmlab.reference import error_ratio\n"
        "cli._console = lambda: Console(width=1000)  # one line per backend, whatever the note's length\n"
        "cli.main(['info'])\n"
        "a, b = torch.randn(70, 131), torch.randn(131, 97)\n"
        "print(json.dumps(error_ratio(gemmlab.matmul(a, b, backend='cython'), a, b)))\n"
    )
    out = _run_python(code, GEMMLAB_CPU="")
    *table, ratio = out.splitlines()
    assert json.loads(ratio) <= 1
    row = next(line for line in table if line.startswith("│ cython "))
    assert f"{SUPPORTED[1]} build of the kernel; the {SUPPORTED[0]} build this CPU supports failed to load" in row
    assert "yes" in row


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="Numba starts one thread per CPU: with one CPU the count cannot change")
def test_loading_numba_keeps_torchs_thread_count():
    """Starting Numba's OpenMP layer sets the calling thread's OpenMP thread count, which torch reads
    as its own: the backend must load without changing what the program asked torch for."""
    # torch applies its setting to OpenMP at its first use of threads; used here before Numba loads.
    code = ("import torch, gemmlab; torch.set_num_threads(1); torch.get_num_threads(); a = torch.randn(256, 256); "
            "gemmlab.matmul(a, a, backend='numba'); print(torch.get_num_threads())")
    run = run_python("-c", code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "1", run.stdout
