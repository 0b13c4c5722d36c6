"""The packed kernels of the numba and cython backends, path by path, against the float64 reference.

Every build of the Cython kernel this CPU can run is tested (not only the one the backend picked),
and each kernel on: the small serial path and the packed, threaded path (both sides of the size
threshold), edge tiles (sizes that are not multiples of MR, NR, KC, MC, NC, several B panels,
k beyond one packed block of B), float32 and float64, 1 and 2 threads, views (transposed,
sliced, stride-0), NaN-poisoned outputs and outputs with non-contiguous strides; on small-integer
inputs every result must be exact.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import randn, small_integers

import gemmlab
from gemmlab.backends import cython_ext, numba_jit
from gemmlab.reference import assert_close_to_reference, assert_exact

SUPPORTED = cython_ext.supported_variants()
DTYPES = [torch.float32, torch.float64]


def _cython_variant(name):
    try:
        return cython_ext.load_variant(name)
    except ImportError:  # a build the CPU supports but that was not compiled (non-x86 build host)
        return None


CYTHON_BUILDS = {name: _cython_variant(name) for name in SUPPORTED}
KERNELS = ["numba"] + [f"cython-{name}" for name, module in CYTHON_BUILDS.items() if module is not None]


def kernel_for(name):
    """matmul_2d(a, b, out) of one kernel, following torch.get_num_threads()."""
    if name == "numba":
        return numba_jit.matmul_2d
    module = CYTHON_BUILDS[name.removeprefix("cython-")]
    return lambda a, b, out: cython_ext.run_2d(module, a, b, out, torch.get_num_threads())


def blocking(name):
    if name == "numba":
        return {"MR": numba_jit.MR, "NR_BYTES": numba_jit.NR_BYTES, "KC": numba_jit.KC, "MC": numba_jit.MC,
                "NC": numba_jit.NC, "SMALL_WORK": numba_jit.SMALL_WORK, "PACK_B_ELEMENTS": numba_jit.PACK_B_ELEMENTS}
    return CYTHON_BUILDS[name.removeprefix("cython-")].BLOCKING


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
        (63, 64, 65),  # just under the threshold
    ]
    assert all(m * k * n <= blk["SMALL_WORK"] for m, k, n in small)
    packed = [
        (64, 64, 65),  # just over the threshold
        (mc + 5, kc + 3, 2 * nr32 + 7),  # several row blocks, two KC blocks, three float32 panels
        (67, 2 * kc + 3, 97),  # k > 2 KC, edge row panel and edge column panel
        (301, 257, 50),  # a single B panel: A is read in place
        (5, 600, max(3 * nr32 + 1, 101)),  # fewer row blocks than threads: B panels split between tasks
        (3, 1100, nc + 4),  # n > NC (two column blocks), k beyond one packed block of B
    ]
    assert all(m * k * n > blk["SMALL_WORK"] for m, k, n in packed)
    assert 1100 > max(kc, blk["PACK_B_ELEMENTS"] // nc // kc * kc)  # the rows of B packed at once
    return small + packed


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


def poisoned(m, n, dtype):
    return torch.full((m, n), float("nan"), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_every_path_and_edge(kernel, dtype, nthreads, threads):
    torch.set_num_threads(nthreads)
    fn = kernel_for(kernel)
    for i, (m, k, n) in enumerate(shapes(kernel)):
        a, b = randn(m, k, dtype=dtype, seed=i), randn(k, n, dtype=dtype, seed=100 + i)
        out = poisoned(m, n, dtype)
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
        for layout, a, b in [
            ("contiguous", small_integers(m, k, k=k, dtype=dtype, seed=i), small_integers(k, n, k=k, dtype=dtype, seed=50 + i)),
            ("transposed", small_integers(k, m, k=k, dtype=dtype, seed=i).T, small_integers(n, k, k=k, dtype=dtype, seed=50 + i).T),
        ]:
            out = poisoned(m, n, dtype)
            fn(a, b, out)
            assert_exact(out, a, b, what=f"{kernel} {layout} ({m}, {k}) @ ({k}, {n}), {nthreads} threads")


def views(m, k, n, dtype):
    yield "transposed", randn(k, m, dtype=dtype, seed=1).T, randn(n, k, dtype=dtype, seed=2).T
    yield "sliced", randn(2 * m + 1, 3 * k, dtype=dtype, seed=3)[1::2, 2::3], randn(k + 2, 2 * n, dtype=dtype, seed=4)[2:, ::2]
    yield "expanded rows", randn(1, k, dtype=dtype, seed=5).expand(m, k), randn(k, 1, dtype=dtype, seed=6).expand(k, n)
    yield "expanded columns", randn(m, 1, dtype=dtype, seed=7).expand(m, k), randn(1, n, dtype=dtype, seed=8).expand(k, n)
    yield "offset rows", randn(m, k + 5, dtype=dtype, seed=9)[:, 5:], randn(k, n + 3, dtype=dtype, seed=10)[:, :n]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 784, 10), (13, 17, 11), (70, 131, 97), (301, 257, 50)], ids=str)
def test_views(kernel, dtype, shape, threads):
    torch.set_num_threads(2)
    fn = kernel_for(kernel)
    m, k, n = shape
    for name, a, b in views(m, k, n, dtype):
        out = poisoned(m, n, dtype)
        fn(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} on {name} views {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 784, 10), (13, 17, 11), (70, 131, 97)], ids=str)
def test_out_with_other_strides(kernel, dtype, shape, threads):
    torch.set_num_threads(2)
    fn = kernel_for(kernel)
    m, k, n = shape
    a, b = randn(m, k, dtype=dtype, seed=11), randn(k, n, dtype=dtype, seed=12)
    for name, out in [
        ("column-major", torch.full((n, m), float("nan"), dtype=dtype).T),
        ("sliced", torch.full((2 * m + 1, 3 * n), float("nan"), dtype=dtype)[1::2, ::3]),
        ("rows padded", torch.full((m, n + 9), float("nan"), dtype=dtype)[:, 4 : 4 + n]),
    ]:
        base = out._base
        fn(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} into a {name} out {shape}")
        if name == "sliced":  # nothing outside the view was written
            untouched = torch.ones_like(base, dtype=torch.bool)
            untouched[1::2, ::3] = False
            assert base[untouched].isnan().all()


@pytest.mark.parametrize("shape", [(5, 784, 10), (70, 131, 97)], ids=str)
def test_numpy_entry_points_take_negative_strides(shape):
    """The NumPy-level entry points see any strides NumPy allows, negative ones included."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k))[::-1]
    b = rng.standard_normal((k, 2 * n))[:, ::-2]
    entry_points = [("numba", numba_jit.matmul_2d_numpy)] + [
        (name, lambda a, b, out, module=module: module.matmul_2d(a, b, out, num_threads=2))
        for name, module in CYTHON_BUILDS.items() if module is not None
    ]
    for name, fn in entry_points:
        out = np.full((m, n), np.nan)[::-1]
        fn(a, b, out)
        assert_close_to_reference(torch.from_numpy(out.copy()), torch.from_numpy(a.copy()), torch.from_numpy(b.copy()),
                                  what=f"{name} on negative strides")


def test_bad_tensors_raise_instead_of_computing_wrongly(kernel):
    fn = kernel_for(kernel)
    a, b = randn(4, 3), randn(3, 5)
    out = torch.empty(4, 5, dtype=torch.float64)
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        fn(torch._neg_view(a), b, out)  # a lazily negated tensor: its memory holds -a
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        fn(a.to("meta"), b, out)
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        fn(a.float(), b, out)
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        fn(a[None], b, out)
    with pytest.raises(ValueError, match="shapes do not fit"):
        fn(a, randn(4, 5), out)


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


@pytest.mark.parametrize("variant", [v for v, m in CYTHON_BUILDS.items() if m is not None])
def test_gemmlab_cpu_forces_a_build(monkeypatch, variant):
    monkeypatch.setenv("GEMMLAB_CPU", variant.upper())
    module, note = cython_ext._choose()
    assert module.VARIANT == variant and "forced by GEMMLAB_CPU" in note


def test_default_build_is_the_best_supported():
    if os.environ.get("GEMMLAB_CPU"):
        pytest.skip("GEMMLAB_CPU forces the build in this run")
    assert cython_ext.VARIANT == next(v for v, m in CYTHON_BUILDS.items() if m is not None)
    info = {i["name"]: i for i in gemmlab.backend_info()}
    assert info["cython"]["note"].startswith(f"{cython_ext.VARIANT} build")


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
