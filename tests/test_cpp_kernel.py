"""The C++ backend's BLIS-structured GEMM (csrc/gemm/), path by path, against the float64 reference.

Every ISA path this CPU supports (forced with GEMMLAB_CPU), the in-place (unpacked) path and the
packed path, edge tiles around the real block sizes (read from the extension, so retuning cannot make
these tests miss an edge; and again under the blocking small caches give), both loop orders, every operand layout, 1/2/3 threads, NaN-poisoned and
strided outputs, exact results on small-integer inputs (where float rounding cannot hide a dropped
term), and operands placed against a guard page so a read or write past any tensor's end
crashes the test instead of passing silently.
"""

import ctypes
import mmap
import sys
from functools import partial

import pytest
import torch
from conftest import assert_untouched_outside, import_or_fail, layouts, out_views, poisoned, randn, small_integers

from gemmlab.reference import assert_close_to_reference, assert_exact

cpp = import_or_fail("gemmlab._cpp")  # not built: every test here fails, saying why

PATHS = ["avx512", "avx2", "generic"]
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Force one ISA path for the test (skipped where this CPU cannot run it)."""
    if request.param not in cpp.supported_paths():
        pytest.skip(f"this CPU does not support the {request.param} path")
    monkeypatch.setenv("GEMMLAB_CPU", request.param)
    assert cpp.cpu_path() == request.param
    return request.param


# Cache sizes the blocking is derived from (gemmlab._cpp._set_cache_sizes): this CPU's, and caches
# so small that KC, MC and NC are a few micro-panels, so every loop runs many blocks and edges.
SMALL_CACHES = (4 << 10, 64 << 10, 256 << 10)


@pytest.fixture(params=["this CPU's caches", "small caches"])
def caches(request):
    if request.param == "small caches":
        cpp._set_cache_sizes(*SMALL_CACHES)
        assert cpp.blocking("float32")["KC"] < cpp.blocking("float32")["reference"][0]
    yield request.param
    cpp._set_cache_sizes(0, 0, 0)


def blocks(dtype):
    return cpp.blocking(str(dtype).removeprefix("torch."))


def run(a, b, out=None):
    out = poisoned(a.shape[0], b.shape[1], dtype=a.dtype) if out is None else out
    cpp.matmul_2d(a, b, out)
    return out


def shapes(dtype):
    """Shapes on both sides of every threshold of the active path, with the path each exercises."""
    bl = blocks(dtype)
    mr, nr, kc, mc = bl["MR"], bl["NR"], bl["KC"], bl["MC"]
    size = torch.finfo(dtype).bits // 8
    k_long = 2 * kc + 3  # three K slices, the last one short
    n_wide = max(3 * nr + 5, cpp.B_RESIDENT_BYTES // (k_long * size) + 7)  # packed B no longer fits: pc-outer order
    side = round(cpp.SMALL_PRODUCT_FMAS ** (1 / 3))
    return [
        ("tiny network layer", 5, 784, 10),
        ("1x1x1", 1, 1, 1),
        ("at the small-product limit", side, side, side),
        ("just above the small-product limit", side, side, side + 1),
        ("a layer's backward: few strips of columns", 64, 784, 50),
        ("A small, many strips of columns", 50, 64, 3 * nr + 17),
        ("A large, many strips of columns", 2 * mc + 3, 3 * kc // 2 + 1, 4 * nr + 5),
        ("long rows, few columns: dot products, k not a whole vector", 13, 601, 23),
        ("long rows, many rows: dot products rows first", 301, 555, 9),
        ("dot products rows first, more column groups than rows in a group", 203, 777, 29),
        ("short rows, B transposed: in place after packing B", 40, 70, 45),
        ("one short row and column of tiles", mr - 1, 5, nr - 1),
        ("edges in every dimension, B kept whole (ic-outer order)", mc + 13, k_long, nr + 5),
        ("edges in every dimension, B sliced (pc-outer order)", mc + 13, k_long, n_wide),
        ("one block of rows: B's full panels read in place, its last one packed", mc - 1, k_long, 3 * nr + 5),
        ("long K, narrow output", 2 * mr + 1, 4 * kc + 1, 3),
        ("tall, one column", 8 * mc + 1, 7, 1),
        ("one row, wider than NC", 3, 37, bl["NC"] + nr + 3),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_edge_shapes_cover_every_loop(path, dtype):
    """The shapes above, with B row-major and transposed, reach every loop the path has, so a
    retuned threshold cannot leave one untested."""
    name = str(dtype).removeprefix("torch.")
    taken = {cpp.loop_for(m, k, n, name, b_transposed=bt) for _, m, k, n in shapes(dtype) for bt in (False, True)}
    wide = {"in place", "in place, B packed", "dot products", "packed"}
    assert taken == (wide if path == "avx512" else {"in place", "packed"})
    if path == "avx512":  # a layer's products
        assert cpp.loop_for(64, 784, 50, "float32", b_transposed=True) == "dot products"  # x @ W.T
        assert cpp.loop_for(50, 64, 784, "float32") == "in place"  # grad.T @ x
        assert cpp.loop_for(256, 256, 256, "float32") == "packed"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_paths_on_edge_shapes_and_layouts(path, caches, dtype):
    for what, m, k, n in shapes(dtype):
        for name, a, b in layouts(m, k, n, dtype):
            assert_close_to_reference(run(a, b), a, b, what=f"{path}, {caches}: {what} {(m, k, n)}, {name} operands")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_paths_exact_on_small_integers(path, caches, dtype):
    """Integers whose every partial sum is exact: every edge shape and layout must give the product
    exactly, so a micro-kernel that drops or repeats a single k step fails here, however long k is."""
    for what, m, k, n in shapes(dtype) + [("the 29x4097x3 product", 29, 4097, 3)]:
        for name, a, b in layouts(m, k, n, dtype, make=partial(small_integers, k=k)):
            assert_exact(run(a, b), a, b, what=f"{path}: {what} {(m, k, n)}, {name} operands")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("count", [1, 2])
def test_paths_threaded(path, caches, dtype, count, threads):
    torch.set_num_threads(count)
    bl = blocks(dtype)
    cases = [  # big enough for threads: an M split, an N split, and a narrow B kept whole
        (3 * bl["MC"] + 5, bl["KC"] + 9, 2 * bl["NR"] + 3),
        (bl["MR"] + 3, bl["KC"] + 9, 9 * bl["NR"] + 1),
        (4 * bl["MC"] + 1, 2 * bl["KC"] + 1, 50),
        (64, 784, 50),  # in place (dot products for B transposed) where the path allows it: the rows split
        (9, 64, 2049),  # in place, too few rows to split: the columns split
        (9, 1001, 300),  # dot products for B transposed, too few rows to split: the columns split
    ]
    for m, k, n in cases:
        for name, a, b in layouts(m, k, n, dtype):
            if name in ("contiguous", "b transposed", "sliced"):
                assert_close_to_reference(run(a, b), a, b, what=f"{path}, {count} threads: {(m, k, n)} {name}")


def test_results_do_not_depend_on_thread_count(path, threads):
    """K is never split across threads, so every element is summed in the same order."""
    bl = blocks(torch.float32)
    for m, k, n in [(3 * bl["MC"] + 5, bl["KC"] + 9, 130), (20, 2 * bl["KC"] + 1, 700), (700, 300, 50), (64, 784, 50), (9, 64, 2049), (9, 1001, 300)]:
        a = randn(m, k, dtype=torch.float32, seed=1)
        for b in (randn(k, n, dtype=torch.float32, seed=2), randn(n, k, dtype=torch.float32, seed=3).T):
            results = []
            for count in (1, 2, 3):
                torch.set_num_threads(count)
                results.append(run(a, b))
            assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2]), (m, k, n, b.stride())


@pytest.fixture
def slow_first_task():
    """The thread owning a product's first task waits for another thread to run one of its row
    blocks and sleeps before each of its own, and a thread done with its own task waits for owners
    to begin (gemm.cpp's TaskBoard): the sharing is exercised, not left to timing, whichever thread
    starts last (other processes on the cores)."""
    cpp._set_task_sharing_test(2000)
    yield
    cpp._set_task_sharing_test(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_threads_share_tasks(path, caches, dtype, threads, slow_first_task):
    """Row blocks run by a thread other than their task's owner, through every phase kind (the
    usual order, one K slice of one column block per phase; the resident order, a column block per
    phase) and both splits (N and M): the same result as one thread, element for element, and right."""
    bl = blocks(dtype)
    cases = [  # each task has several row blocks; A too large for the in-place loop under small caches too
        ("square: the N split, K slices", max(4 * bl["MC"] + 3, 201), max(2 * bl["KC"] + 5, 133), max(4 * bl["NR"] + 7, 135)),
        ("narrow B kept whole: the resident order", max(6 * bl["MC"] + 1, 701), max(bl["KC"] + 9, 301), 50),
        ("wider than NC: several column blocks", max(3 * bl["MC"] + 5, 301), 37, 2 * bl["NC"] + bl["NR"] + 3),
    ]
    for what, m, k, n in cases:
        assert cpp.loop_for(m, k, n, str(dtype).removeprefix("torch.")) == "packed", what
        for name, a, b in layouts(m, k, n, dtype):
            if name not in ("contiguous", "a transposed", "sliced"):  # layouts the packed loops take
                continue
            torch.set_num_threads(1)
            alone = run(a, b)
            torch.set_num_threads(2)
            before = cpp._items_run_by_helpers()
            shared = run(a, b)
            assert cpp._items_run_by_helpers() > before, f"{what}: no row block was run by the other thread"
            assert torch.equal(shared, alone), f"{path}, {caches}: {what} {(m, k, n)} {name}"
            assert_close_to_reference(shared, a, b, what=f"{path}, {caches}, tasks shared: {what} {(m, k, n)} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_out_is_written_exactly(path, dtype):
    """Outputs that are views: every element of the view written, nothing around it touched."""
    bl = blocks(dtype)
    for m, k, n in [(5, 9, 7), (bl["MC"] + 13, bl["KC"] + 9, bl["NR"] + 5)]:
        a, b = randn(m, k, dtype=dtype, seed=3), randn(k, n, dtype=dtype, seed=4)
        for name, out in out_views(m, n, dtype):
            run(a, b, out)
            assert_close_to_reference(out, a, b, what=f"{path}: {name} out {(m, k, n)}")
            assert_untouched_outside(out, f"{path}: {name} out {(m, k, n)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_k_zero_gives_zeros(path, dtype):
    out = run(randn(4, 0, dtype=dtype), randn(0, 6, dtype=dtype))
    assert torch.equal(out, torch.zeros(4, 6, dtype=dtype))


# --- nothing is read or written past the end of any tensor -------------------------------------

libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def guarded():
    """guarded(rows, cols, dtype): a fresh row-major tensor whose last element sits right before a
    page that cannot be read or written, so any access past its end kills the process."""
    if not sys.platform.startswith("linux"):
        pytest.skip("guard pages via mmap/mprotect on Linux only")
    keep = []

    def make(rows, cols, dtype, seed=0):
        page = mmap.PAGESIZE
        size = torch.finfo(dtype).bits // 8
        nbytes = rows * cols * size
        pages = (nbytes + page - 1) // page + 1
        region = mmap.mmap(-1, pages * page)
        start = ctypes.addressof(ctypes.c_char.from_buffer(region))
        guard = start + (pages - 1) * page
        assert libc.mprotect(ctypes.c_void_p(guard), page, 0) == 0, ctypes.get_errno()  # PROT_NONE
        flat = torch.frombuffer(region, dtype=dtype, count=rows * cols, offset=(pages - 1) * page - nbytes)
        t = flat.view(rows, cols)
        t.copy_(randn(rows, cols, dtype=dtype, seed=seed))
        keep.append(region)
        return t

    yield make


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_access_past_the_end(path, caches, dtype, guarded):
    bl = blocks(dtype)
    for m, k, n in [(5, 784, 10), (3, 5, 7), (bl["MC"] + 13, bl["KC"] + 9, bl["NR"] + 5), (bl["MC"] - 1, bl["KC"] + 9, 2 * bl["NR"]),
                    (bl["MC"] - 1, bl["KC"] + 9, 2 * bl["NR"] + 5), (2 * bl["MR"] + 1, 37, 1),
                    (61, 300, 50)]:
        a, b = guarded(m, k, dtype, seed=5), guarded(k, n, dtype, seed=6)
        out = guarded(m, n, dtype)
        out.fill_(float("nan"))
        cpp.matmul_2d(a, b, out)
        assert_close_to_reference(out, a, b, what=f"{path}: guarded operands {(m, k, n)}")
        bt, at = guarded(n, k, dtype, seed=7), guarded(k, m, dtype, seed=8)  # transposed views end at the guard too
        out_t = guarded(n, m, dtype)
        cpp.matmul_2d(at.T, bt.T, out_t.T)
        assert_close_to_reference(out_t.T, at.T, bt.T, what=f"{path}: guarded transposed operands {(m, k, n)}")


# --- path selection ----------------------------------------------------------------------------

def test_default_path_is_the_fastest_supported(monkeypatch):
    monkeypatch.delenv("GEMMLAB_CPU", raising=False)
    supported = cpp.supported_paths()
    assert supported[-1] == "generic" and set(supported) <= set(PATHS)
    assert [p for p in PATHS if p in supported] == supported  # fastest first
    assert cpp.cpu_path() == supported[0]
    assert cpp.blocking("float32")["path"] == supported[0]


def test_unknown_path_is_rejected(monkeypatch):
    monkeypatch.setenv("GEMMLAB_CPU", "sse9")
    with pytest.raises(ValueError, match="GEMMLAB_CPU=sse9 is not a gemmlab CPU path; use avx512, avx2 or generic"):
        cpp.cpu_path()
    with pytest.raises(ValueError, match="GEMMLAB_CPU=sse9"):
        run(randn(2, 3), randn(3, 4))


@pytest.fixture
def ceiling():
    """Pretend the CPU supports no path above the given one; lifted afterwards."""
    yield cpp._set_path_ceiling
    cpp._set_path_ceiling("")


@pytest.mark.parametrize("forced, top", [("avx512", "avx2"), ("avx512", "generic"), ("avx2", "generic")])
def test_unsupported_path_is_rejected(monkeypatch, ceiling, forced, top):
    ceiling(top)
    assert cpp.supported_paths()[0] in (top, "generic") and forced not in cpp.supported_paths()
    monkeypatch.setenv("GEMMLAB_CPU", forced)
    with pytest.raises(RuntimeError, match=f"GEMMLAB_CPU={forced} asks for the {forced} path, which this CPU does not support; supported here: "):
        cpp.cpu_path()
    out = poisoned(2, 4)
    with pytest.raises(RuntimeError, match="does not support"):
        cpp.matmul_2d(randn(2, 3), randn(3, 4), out)
    assert out.isnan().all()  # raised before touching anything
    monkeypatch.delenv("GEMMLAB_CPU")
    assert cpp.cpu_path() == cpp.supported_paths()[0]  # unforced: falls back to what is supported
    assert_close_to_reference(run(randn(2, 3), randn(3, 4)), randn(2, 3), randn(3, 4))


def test_blocking_rejects_other_dtypes():
    with pytest.raises(ValueError, match="float32"):
        cpp.blocking("int8")
