"""The cache blocking (KC, MC, NC) the numba and cython kernels derive from the CPU's caches
(gemmlab.cpu_caches.derive_blocking, the cpp kernel's rule written once in Python), and their
products under a blocking forced small, so that every multi-block path runs on small inputs."""

import pytest
import torch
from conftest import import_or_fail, randn, layouts, small_integers

import gemmlab
from gemmlab import cpu_caches
from gemmlab.backends import cython_ext
from gemmlab.reference import assert_close_to_reference, assert_exact

numba_jit = import_or_fail("gemmlab.backends.numba_jit")

KIB, MIB = 1 << 10, 1 << 20
XEON = {"L1d": 48 * KIB, "L2": 2 * MIB, "L3": 130 * MIB, "source": "testing"}  # the reference machine's caches
# Small enough that KC is 16 to 40 rows, MC a few MR panels and NC about 10 B panels (so that a task
# covering a whole block of B packs its block of A), with NC small enough for several blocks of B.
SMALL = {"L1d": 2 * KIB, "L2": 32 * KIB, "L3": 80 * KIB, "source": "testing"}
# (reference (KC, MC, NC), MR, NR in float32 elements) of numba's tile on each vector width and the
# Cython builds'; and of the cpp kernel's paths, whose derivation in C++ the Python one must match.
REFERENCES = {"numba avx512": ((1024, 192, 4096), 6, 64), "numba avx512 float64": ((1024, 96, 4096), 6, 64), "numba avx2": ((384, 252, 4096), 6, 16),
              "cython generic": ((256, 96, 4096), 6, 8), "cython avx2": ((256, 192, 4096), 6, 16),
              "cython avx512": ((1024, 192, 4096), 6, 64), "cython avx512 float64": ((1024, 96, 4096), 6, 64),
              "cpp avx512": ((1024, 84, 2048), 14, 32)}
CACHES = [{"L1d": l1d, "L2": l2, "L3": l3} for l1d in (1 * KIB, 16 * KIB, 32 * KIB, 48 * KIB, 64 * KIB, 1 * MIB)
          for l2 in (1 * KIB, 16 * KIB, 256 * KIB, 1 * MIB, 2 * MIB, 8 * MIB, 64 * MIB)
          for l3 in (0, 1 * KIB, 64 * KIB, 2 * MIB, 1 << 40)]


@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_caches_give_the_reference_blocking(name, itemsize):
    reference, mr, nr32 = REFERENCES[name]
    assert cpu_caches.derive_blocking(XEON, itemsize, mr, nr32 * 4 // itemsize, reference) == reference


@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("name", REFERENCES)
def test_any_caches_give_whole_panels_within_bounds(name, itemsize):
    """Tiny and huge caches alike: multiples of MR / NR (KC of 8), clamped, growing with the caches."""
    (ref_kc, ref_mc, ref_nc), mr, nr32 = REFERENCES[name]
    nr = nr32 * 4 // itemsize
    derived = {}
    for caches in CACHES:
        kc, mc, nc = derived[caches["L1d"], caches["L2"], caches["L3"]] = cpu_caches.derive_blocking(
            caches, itemsize, mr, nr, (ref_kc, ref_mc, ref_nc))
        assert 16 <= kc <= 2 * ref_kc and kc % 8 == 0, (caches, kc)
        assert mr <= mc <= 4 * ref_mc and mc % mr == 0, (caches, mc)
        assert nr <= nc <= ref_nc and nc % nr == 0, (caches, nc)
    assert derived[1 * KIB, 1 * KIB, 1 * KIB] == (16, mr, nr)  # the floor
    assert derived[1 * MIB, 64 * MIB, 1 << 40] == (2 * ref_kc, 4 * ref_mc, ref_nc)  # the ceiling
    for (l1d, l2, l3), (kc, mc, nc) in derived.items():  # a larger L1d never shrinks KC, a larger L3 never NC
        assert all(derived[bigger, l2, l3][0] >= kc for bigger in (2 * l1d, 4 * l1d, 16 * l1d) if (bigger, l2, l3) in derived)
        assert all(derived[l1d, l2, bigger][2] >= nc for bigger in (2 * MIB, 1 << 40) if 0 < l3 < bigger)


def test_the_python_rule_is_the_cpp_kernels(monkeypatch):
    """derive_blocking gives, to the integer, what the C++ kernel derives for its own paths."""
    cpp = pytest.importorskip("gemmlab._cpp")
    try:
        for path in cpp.supported_paths():
            monkeypatch.setenv("GEMMLAB_CPU", path)
            for dtype, itemsize in (("float32", 4), ("float64", 8)):
                for caches in CACHES:
                    cpp._set_cache_sizes(caches["L1d"], caches["L2"], caches["L3"] or 1)
                    b = cpp.blocking(dtype)
                    got = cpu_caches.derive_blocking({**caches, "L3": caches["L3"] or 1}, itemsize, b["MR"], b["NR"],
                                                     b["reference"])
                    assert got == (b["KC"], b["MC"], b["NC"]), (path, dtype, caches)
    finally:
        cpp._set_cache_sizes(0, 0, 0)


def kernels():
    """(name, module with blocking() and _use_caches(), matmul_2d(a, b, out) following torch's threads)."""
    yield "numba", numba_jit, numba_jit.matmul_2d
    for variant in cython_ext.supported_variants():
        module = cython_ext.load_variant(variant)
        yield f"cython-{variant}", module, lambda a, b, out, m=module: cython_ext.run_2d(m, a, b, out, torch.get_num_threads())


KERNELS = [name for name, *_ in kernels()]


def kernel(name):
    return next((module, fn) for n, module, fn in kernels() if n == name)


@pytest.mark.parametrize("name", KERNELS)
def test_blocking_is_derived_from_this_cpus_caches(name):
    module, _ = kernel(name)
    caches = cpu_caches.cache_sizes()
    for dtype, itemsize in (("float32", 4), ("float64", 8)):
        b = module.blocking(dtype)
        assert b["caches"] == caches
        assert (b["KC"], b["MC"], b["NC"]) == cpu_caches.derive_blocking(caches, itemsize, b["MR"], b["NR"], b["reference"])
        if caches["L1d"] == XEON["L1d"] and caches["L2"] == XEON["L2"] and caches["L3"] >= 8 * MIB:
            assert (b["KC"], b["MC"], b["NC"]) == b["reference"]  # the machine the values were chosen on


@pytest.fixture
def small_blocking():
    """Every kernel's blocking derived from SMALL caches for the test; this CPU's again afterwards."""
    modules = [module for _, module, _ in kernels()]
    for module in modules:
        module._use_caches(SMALL)
    yield
    for module in modules:
        module._use_caches()


# (m, k, n) under SMALL caches: several row blocks, KC slices and blocks of B, edge tiles; fewer row
# blocks than threads (B panels split); a single B panel (A read in place); k beyond one packed
# block of B (PACK_B_ELEMENTS / NC rows).
SHAPES = [(64, 64, 65), (101, 67, 1400), (5, 600, 1000), (301, 257, 50), (3, 6600, 700)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("name", KERNELS)
def test_products_under_small_blocking(name, dtype, nthreads, small_blocking, threads):
    module, matmul_2d = kernel(name)
    b = module.blocking(str(dtype).removeprefix("torch."))
    assert b["KC"] <= 40 and b["MC"] < 160 and b["NC"] <= 640, b  # really small
    torch.set_num_threads(nthreads)
    for i, (m, k, n) in enumerate(SHAPES):
        what = f"{name} ({m}, {k}) @ ({k}, {n}) {dtype}, {nthreads} threads, KC {b['KC']} MC {b['MC']} NC {b['NC']}"
        x, y = randn(m, k, dtype=dtype, seed=i), randn(k, n, dtype=dtype, seed=10 + i)
        out = torch.full((m, n), float("nan"), dtype=dtype)
        matmul_2d(x, y, out)
        assert_close_to_reference(out, x, y, what=what)
        x, y = small_integers(m, k, k=k, dtype=dtype, seed=i), small_integers(k, n, k=k, dtype=dtype, seed=10 + i)
        out = torch.full((m, n), float("nan"), dtype=dtype)
        matmul_2d(x, y, out)
        assert_exact(out, x, y, what=what)
    for layout, x, y in layouts(67, 131, 300, dtype):
        out = torch.full((67, 300), float("nan"), dtype=dtype)
        matmul_2d(x, y, out)
        assert_close_to_reference(out, x, y, what=f"{name} {layout} (67, 131) @ (131, 300) {dtype}, {nthreads} threads")


def test_cython_through_the_dispatch_core_under_small_blocking(small_blocking):
    """The C ABI function the core calls reads the same blocking (the chosen build's)."""
    assert cython_ext.blocking("float32")["KC"] <= 40
    x, y = randn(3, 101, 67, seed=1), randn(3, 67, 1400, seed=2)
    assert_close_to_reference(gemmlab.matmul(x, y, backend="cython"), x, y, what="cython batched, small blocking")


def test_info_shows_the_blocking():
    """`gemmlab info` prints each kernel's blocking beside cpp's."""
    pytest.importorskip("gemmlab._cpp")
    from gemmlab import cli

    lines = cli._cpu_status()
    for backend, module in (("numba", numba_jit), ("cython", cython_ext)):
        for dtype in ("float32", "float64"):
            b = module.blocking(dtype)
            assert (f"{backend} {dtype} on the {b['path']} path: MR {b['MR']}, NR {b['NR']}, KC {b['KC']}, MC {b['MC']}, "
                    f"NC {b['NC']} (from the caches, {b['caches']['source']}; reference KC, MC, NC {b['reference']})") in lines
