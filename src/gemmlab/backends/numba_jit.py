"""Backend `numba`: a packed, cache-blocked matmul compiled by Numba's @njit (BLIS-style).

Large products (see SMALL_WORK) run the blocked algorithm:

    for jc in n by NC:                       columns of out that one packed block of B covers
      for ks in k by a "super-block":        as many rows of B as fit the packed-B budget
        pack B[ks.., jc..] into NR-wide column panels    (prange over panels x KC rows)
        for each task = (block of <= MC rows of out) x (range of panels)    (prange over tasks)
          for pc in the super-block by KC:
            pack A[rows, pc..pc+KC] into MR-tall row panels     (task-private buffer)
            for each NR panel, for each MR panel: micro-kernel -> MR x NR tile -> out

(A task that uses its A block for at most PACK_A_PANELS B panels reads A in place instead.)
KC, MC and NC are derived, at import, from this CPU's data caches (gemmlab.cpu_caches, by the rule
the cpp kernel uses) and passed to the packed path as arguments; blocking(dtype) reports them.

Packing reads the operands through their strides (transposed, sliced and stride-0 views cost no
extra copy) and pads the last panels with zeros, so the micro-kernel always runs a full MR x NR
tile on packed data; only the valid part of an edge tile is written back. The micro-kernel keeps
its MR x NR accumulators in a small stack array that LLVM promotes to vector registers: the MR
rows are unrolled by hand so that the innermost loop runs over NR contiguous packed elements with
a fixed trip count, which LLVM vectorises (6 x 4 zmm FMAs per step on AVX-512).

Small products (the notes' 5x784 @ 784x10) pay for neither threads nor packing: one thread runs
an unpacked register-tiled loop straight from the operands.

On AVX-512, products whose a rows and b columns both run contiguously along k (a layer's x @ W.T)
with long rows and a short side take a dot-product loop instead: nothing packed, one horizontal sum
per output (_loop_for says which loop a product takes).

The entry points take each operand as address, shape and strides (plain integers) and rebuild
any-stride arrays inside, so there is one compiled specialisation per dtype whatever the layouts;
each dtype is compiled the first time it is used (the small path first, the blocked path at the
first large product). Compiled code is cached on disk (cache=True); where no cache folder is
writable, Numba refuses to cache and everything is compiled without it instead. The llvmlite
intrinsics underneath (stack tiles, pointers, vector FMAs) are in _numba_simd.
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np
import torch
from numba import prange, types
from numba.extending import overload

from gemmlab import cpu_caches
from gemmlab.backends import by_address, operand_error
from gemmlab.backends._numba_simd import (VECTOR_BYTES, WIDE, buffer_at, copy_vector, dot_fmas, element_pointer, fma_vector, offset_pointer,
                                          prefetch, resized, set_thread_count, shift, stack_pointer, store_lane_sums, store_vector, store_vector_sum, vector_zeroer,
                                          view)

# --- tile and block sizes --------------------------------------------------------------------
#
# The tile follows the host's vector registers (_numba_simd): AVX-512 (32 x 64-byte registers):
# MR x NR = 6 rows x 4 vectors = 24 accumulators, plus the B vectors and A broadcasts of one step;
# AVX2 / SSE (16 registers): 6 rows x 2 vectors = 12.
MR = 6  # rows of a micro-tile (the micro-kernel unrolls them by hand)
NR_BYTES = VECTOR_BYTES * (4 if WIDE else 2)  # width of a micro-tile: 64 float32 / 32 float64 on AVX-512
PATH = "avx512" if WIDE else "avx2" if VECTOR_BYTES == 32 else "generic"  # for reports
# The reference cache blocking, chosen on the Xeon these kernels were tuned on (L1d 48 KiB, L2 2 MiB
# per core, see gemmlab.cpu_caches); the blocking in use is derived from it for this CPU's caches
# (blocking(), below) and passed to the packed path at each call.
# KC: the B micro-panel (KC x NR) is reused by every MR panel of the A block. With 16 registers it
# sits in L1 with room to spare (KC * NR_BYTES = 32 KiB of the 48). On AVX-512 a deeper slice paid
# more than keeping the panel in L1: KC 1024 (a 256 KiB float32 panel, software-prefetched from L2
# B_PREFETCH k-steps ahead by the micro-kernel) loads and stores the C tiles an eighth as often as
# KC 128. Measured with the Cython build's identical tile (see _cython_kernel_avx512.pyx); here,
# earlier, KC 256 alone gave 2-4% float32, 7-11% float64, 34% on 50000x784 @ 784x50, 2 threads.
KC = 1024 if WIDE else max(64, min(384, 32768 // NR_BYTES))
# MC: the packed A block (MC x KC) is streamed once per B micro-panel and should stay in L2: on
# AVX-512 768 KiB (192 float32 rows, 96 float64); with 16 registers 252 rows (378 KiB float32, 756
# float64 at KC 384). Each B panel is fetched from L3 once per A block, so a small block starves the
# micro-kernel: the earlier 60 rows (MC 18 on a 512 KiB L2) ran 2048^3 at 56 and 23 GFLOP/s
# (float32, float64) on one thread of an AMD EPYC Zen 3, against 70 and 31 with MC 90-96. Tasks are
# also made smaller when that balances the threads (see _plan).
MC = 192 if WIDE else 252  # float32 (a multiple of MR)
MC_DOUBLE = 96 if WIDE else 252
# NC: the packed block of B is shared by all threads and read from L2/L3.
NC = 4096
# Rows of B packed at once (a super-block): as many KC slices as fit PACK_B_ELEMENTS, at least one.
# Each task sweeps a whole super-block, so it must stay in L3: packed whole (16 MiB at 2048^3
# float32) it came from memory, and 1 MiB ran 2048^3 float32 and float64 7% and 21% faster (AMD EPYC
# Zen 3, scripts/compare_builds.py). A narrow B (n = 50) still packs 4000+ rows at once:
# k = 50000 takes 13 super-blocks, two parallel regions (a few us) each.
PACK_B_ELEMENTS = 1 << 18  # 1 MiB of float32
# A task packs its block of A only when it covers more B panels than this; for fewer, reading A's
# MR rows in place (each a sequential stream, from L1/L2) costs no more than reading a packed panel,
# and packing is one more pass of scattered writes (1 thread, 128x64 @ 64x128: 25 -> ~20 us).
PACK_A_PANELS = 8

# Below this many multiply-adds (m * n * k) the serial unpacked loop is used: threads and
# packing cost more than they save. Measured on 2 cores (AVX-512): at 64^3 the two paths take
# about the same time (~7 us); at 32^3 the small path is 2.5x (1 thread) to 15x (2 threads) faster,
# at 128^3 the blocked one 1.5x (2 threads).
SMALL_WORK = 64 * 64 * 64
# The small path's tiles: MR rows x up to SMALL_VECTORS vectors, in two sets of accumulators (on
# AVX-512: 24 of the 32 registers; the micro-tile's stack array holds them); its copy of b: 32 KiB,
# in chunks of at least SMALL_CHUNK_ROWS rows.
SMALL_VECTORS = 2 if WIDE else 1
SMALL_BUFFER_BYTES = 32768
SMALL_CHUNK_ROWS = 16
# The micro-kernel fetches its B panel this many k-steps ahead (see KC).
B_PREFETCH = 16

_BLOCKS: dict[int, tuple[int, int, int]] = {}  # itemsize -> (KC, MC, NC) in use
_CACHES: dict = {}  # the cache sizes they were derived from


def _reference(itemsize: int) -> tuple[int, int, int]:
    """The reference (KC, MC, NC) for this element size."""
    return KC, MC if itemsize == 4 else MC_DOUBLE, NC


def _use_caches(caches: dict | None = None) -> None:
    """Derive KC, MC, NC from these cache sizes ({'L1d', 'L2', 'L3', 'source'}, as
    gemmlab.cpu_caches.cache_sizes() gives them), or from this CPU's. A testing hook after import:
    it changes what the Python entry points use; the C ABI functions registered with the dispatch
    core keep what was derived at import."""
    caches = cpu_caches.cache_sizes() if caches is None else caches
    for itemsize in (4, 8):
        _BLOCKS[itemsize] = cpu_caches.derive_blocking(caches, itemsize, MR, NR_BYTES // itemsize, _reference(itemsize))
    _CACHES.clear()
    _CACHES.update(caches)


def blocking(dtype: str = "float32") -> dict:
    """The register and cache blocking of the packed path for 'float32' or 'float64' (as
    gemmlab._cpp.blocking gives the cpp kernel's): path, MR, NR (elements), KC, MC, NC in use,
    the reference (KC, MC, NC) and the caches they were derived from."""
    itemsize = {"float32": 4, "float64": 8}[dtype]
    kc, mc, nc = _BLOCKS[itemsize]
    return {"path": PATH, "MR": MR, "NR": NR_BYTES // itemsize, "KC": kc, "MC": mc, "NC": nc,
            "reference": _reference(itemsize), "caches": dict(_CACHES)}


_use_caches()

_tile_pointer = stack_pointer(MR * NR_BYTES, "A tile of accumulators: LLVM keeps it in registers.")
_buffer_pointer = stack_pointer(SMALL_BUFFER_BYTES, "The small path's copy of b (it stays in L1).")
_result_pointer = stack_pointer(MR * SMALL_VECTORS * VECTOR_BYTES, "A small tile's sums.")
_zero_small_tile = vector_zeroer(2 * MR * SMALL_VECTORS)  # a small tile's two sets of accumulators


def _njit(**options):
    """Numba's njit as every function here uses it: fast math (the kernels reassociate sums and
    use FMAs), no bounds checks (every index is in range by construction; the entry point checks
    the shapes), no ZeroDivisionError checks, cached on disk where possible."""
    return numba.njit(fastmath=True, boundscheck=False, error_model="numpy", cache=_CACHE, **options)


try:  # Numba raises at decoration time when it has nowhere to write its cache
    numba.njit(cache=True)(lambda: None)
    _CACHE = True
    CACHE_NOTE = None
except RuntimeError as exc:  # "cannot cache function ...: no locator available"
    _CACHE = False
    CACHE_NOTE = f"compiled without an on-disk cache: {exc}"


def _tile_width(x):
    """NR for x's dtype (elements per micro-tile row); a compile-time constant in jitted code."""


def _vector_width(x):
    """Elements of x's dtype per vector register; a compile-time constant in jitted code."""


@overload(_tile_width, inline="always")
def _tile_width_constant(x):
    width = NR_BYTES * 8 // x.dtype.bitwidth
    return lambda x: width


@overload(_vector_width, inline="always")
def _vector_width_constant(x):
    width = VECTOR_BYTES * 8 // x.dtype.bitwidth
    return lambda x: width


@_njit(inline="always")
def _zeroed_tile(like):
    """A stack array of MR * NR zeros of like's dtype, for a micro-tile's accumulators."""
    acc = numba.carray(_tile_pointer(like.dtype), (MR * _tile_width(like),))
    for x in range(MR * _tile_width(like)):
        acc[x] = 0
    return acc


@_njit(inline="always")
def _row(array, i, j, length):
    """array[i, j:j+length] as a contiguous 1-D array (the caller checked stride and bounds)."""
    return numba.carray(element_pointer(array, i, j), (length,))


@_njit(inline="always")
def _part(array, offset, length):
    """array[offset:offset+length] of a contiguous 1-D array, as an array whose indices start at 0
    (so loop indices are provably non-negative and Numba's negative-index handling folds away)."""
    return numba.carray(offset_pointer(array, offset), (length,))


# --- packing ------------------------------------------------------------------------------

@_njit()
def _pack_b_panel(b, p0, kc, j0, nr, bpack, offset):
    """bpack[offset + p * NR + j] = b[p0 + p, j0 + j], zero for j >= nr."""
    NR = _tile_width(bpack)
    W = _vector_width(bpack)
    z = bpack.dtype.type(0)
    dst = _part(bpack, offset, kc * NR)
    if nr == NR and b.strides[1] == b.itemsize:
        to = offset_pointer(dst, 0)
        for p in range(kc):
            src = element_pointer(b, p0 + p, j0)
            for v in range(NR // W):
                copy_vector(to, p * NR + v * W, src, v * W)
    elif b.strides[1] == b.itemsize:  # the last, narrower panel: contiguous reads all the same
        for p in range(kc):
            src = _row(b, p0 + p, j0, nr)
            for j in range(nr):
                dst[p * NR + j] = src[j]
            for j in range(nr, NR):
                dst[p * NR + j] = z
    else:
        for p in range(kc):
            for j in range(nr):
                dst[p * NR + j] = b[p0 + p, j0 + j]
            for j in range(nr, NR):
                dst[p * NR + j] = z


@_njit()
def _pack_a_block(a, i0, mc, p0, kc, apack):
    """MR-tall panels of a[i0:i0+mc, p0:p0+kc]: apack[(r // MR) * MR * kc + p * MR + r % MR]."""
    z = apack.dtype.type(0)
    # Unsigned indices into a, and panels that start at index 0: no negative-index code per element.
    for r0 in range(0, mc, MR):
        mr = min(MR, mc - r0)
        panel = _part(apack, r0 * kc, kc * MR)
        if mr == MR and a.strides[1] == a.itemsize:  # whole panel of contiguous rows: one pass of writes
            row0, row1, row2 = _row(a, i0 + r0, p0, kc), _row(a, i0 + r0 + 1, p0, kc), _row(a, i0 + r0 + 2, p0, kc)
            row3, row4, row5 = _row(a, i0 + r0 + 3, p0, kc), _row(a, i0 + r0 + 4, p0, kc), _row(a, i0 + r0 + 5, p0, kc)
            for p in range(kc):
                panel[p * MR] = row0[p]
                panel[p * MR + 1] = row1[p]
                panel[p * MR + 2] = row2[p]
                panel[p * MR + 3] = row3[p]
                panel[p * MR + 4] = row4[p]
                panel[p * MR + 5] = row5[p]
        elif a.strides[0] <= a.strides[1]:  # column-major-like: walk down the column first
            for p in range(kc):
                col = np.uintp(p0 + p)
                for i in range(mr):
                    panel[p * MR + i] = a[np.uintp(i0 + r0 + i), col]
                for i in range(mr, MR):
                    panel[p * MR + i] = z
        else:
            for i in range(mr):
                row = np.uintp(i0 + r0 + i)
                for p in range(kc):
                    panel[p * MR + i] = a[row, np.uintp(p0 + p)]
            for i in range(mr, MR):
                for p in range(kc):
                    panel[p * MR + i] = z


# --- the micro-kernel and its write-back -----------------------------------------------------

@_njit(inline="always")
def _fma_tile_line(tile, row, b, a):
    """tile[row * NR + j] += a * b[j] for j < NR: one row of the micro-tile, NR / W vector FMAs."""
    NR = _tile_width(b)
    W = _vector_width(b)
    start = offset_pointer(b, 0)
    for v in range(NR // W):
        fma_vector(tile, row * NR + v * W, shift(start, v * VECTOR_BYTES), a)


@_njit(inline="always")
def _fma_tile_row(acc, bpanel, at, a0, a1, a2, a3, a4, a5):
    """One k step of the micro-kernel: acc[i * NR + j] += a_i * bpanel[at + j] for the MR x NR tile.

    Written as vector FMAs, a row at a time: left to LLVM's vectorisers, the same loop over j came
    out as scalar FMAs in float64 and, in float32, with every a_i broadcast at once, which on 16
    vector registers (AVX2) spilled accumulators to the stack (AMD EPYC Zen 3: 0.10x and 0.3x the
    best peer)."""
    NR = _tile_width(bpanel)
    tile = offset_pointer(acc, 0)
    b = _part(bpanel, at, NR)
    _fma_tile_line(tile, 0, b, a0)
    _fma_tile_line(tile, 1, b, a1)
    _fma_tile_line(tile, 2, b, a2)
    _fma_tile_line(tile, 3, b, a3)
    _fma_tile_line(tile, 4, b, a4)
    _fma_tile_line(tile, 5, b, a5)


@_njit(inline="always")
def _packed_k_step(acc, apanel, bpanel, p):
    """k-step p of the micro-kernel on a packed A and B micro-panel. A's values are read through a
    view that starts at the step (constant indices): indexed apanel[p * MR + i], each step paid for
    Numba's negative-index handling, 3 instructions of the loop's 30 (float32, AVX2)."""
    a = _part(apanel, p * MR, MR)
    _fma_tile_row(acc, bpanel, p * _tile_width(bpanel), a[0], a[1], a[2], a[3], a[4], a[5])


@_njit()
def _update_tile(kc, apanel, bpanel, out, i0, j0, mr, nr, first):
    """out[i0:i0+mr, j0:j0+nr] = (or += when not first) the product of one A and one B micro-panel.

    A function of its own (not inlined by Numba), so LLVM optimises its loop in isolation and
    keeps the stack tile in registers."""
    acc = _zeroed_tile(out)
    NR = _tile_width(bpanel)
    LINE = NR * 64 // NR_BYTES  # elements per 64-byte cache line
    # Ask for the tile's rows of out during the first k-steps, a row a step, so that they arrive
    # while the kernel computes: left to the write-back, each tile waited there on L3 or memory
    # (with the vector write-back below: 1.30x at 2048^3 float32, 2 threads, AMD EPYC Zen 3,
    # scripts/compare_builds.py).
    # A prefetch is only a hint: a row that is not contiguous is merely not fetched whole.
    warm = min(kc, mr)
    for p in range(warm):
        row = _row(out, i0 + p, j0, nr)
        prefetch(row, 0)
        prefetch(row, nr - 1)
        _packed_k_step(acc, apanel, bpanel, p)
    for p in range(warm, kc):
        for line in range(NR_BYTES // 64):
            prefetch(bpanel, (p + B_PREFETCH) * NR + line * LINE)
        _packed_k_step(acc, apanel, bpanel, p)
    _store_tile(acc, out, i0, j0, mr, nr, first)


@_njit()
def _update_tile_unpacked(kc, a, rows, p0, bpanel, out, i0, j0, mr, nr, first):
    """As _update_tile, reading A's MR rows (rows[i]) straight from a at columns p0..p0+kc.

    For tasks that cover a single B panel, where each A block is used once and packing it would
    cost as much memory traffic as the product itself (n <= NR: the MLP's 50000x784 @ 784x50).
    The A values are scalar broadcasts either way; rows past the end are clamped by the caller."""
    acc = _zeroed_tile(out)
    NR = _tile_width(bpanel)
    r0, r1, r2, r3, r4, r5 = rows
    for p in range(kc):
        col = np.uintp(p0 + p)  # unsigned indices: no negative-index handling in the loop
        _fma_tile_row(acc, bpanel, p * NR, a[r0, col], a[r1, col], a[r2, col], a[r3, col], a[r4, col], a[r5, col])
    _store_tile(acc, out, i0, j0, mr, nr, first)


@_njit(inline="always")
def _clamped_rows(i0, m):
    """The MR row indices from i0, those past the last row replaced by it (valid memory to read;
    their results are never written back)."""
    return (np.uintp(i0), np.uintp(min(i0 + 1, m - 1)), np.uintp(min(i0 + 2, m - 1)),
            np.uintp(min(i0 + 3, m - 1)), np.uintp(min(i0 + 4, m - 1)), np.uintp(min(i0 + 5, m - 1)))


@_njit(inline="always")
def _store_rows(acc, out, i0, j0, rows, cols, first):
    """out[i0 + i, j0:j0+cols] = (or +=) the tile's row i for i < rows, out's rows contiguous
    (rows and cols constants where the caller passes constants: vector stores)."""
    NR = _tile_width(out)
    for i in range(rows):
        dst = _row(out, i0 + i, j0, cols)
        if first:
            for j in range(cols):
                dst[j] = acc[i * NR + j]
        else:
            for j in range(cols):
                dst[j] += acc[i * NR + j]


@_njit(inline="always")
def _store_whole_tile(tile, corner, row_bytes, first):
    """The MR x NR tile into rows row_bytes apart from corner (contiguous rows), = or += unless
    first, in vector loads, adds and stores. (Element by element, as _store_rows does for edge
    tiles, LLVM sent the tile through the stack: a scalar load, add and store per element.)"""
    NR = _tile_width(tile)
    W = _vector_width(tile)
    for i in range(MR):
        for v in range(NR // W):
            store_vector(shift(corner, i * row_bytes + v * VECTOR_BYTES), tile, i * NR + v * W, first)


@_njit(inline="always")
def _store_tile(acc, out, i0, j0, mr, nr, first):
    """out[i0:i0+mr, j0:j0+nr] = (or +=) the tile; vector stores for full tiles on unit-stride rows."""
    NR = _tile_width(out)
    if mr == MR and nr == NR and out.strides[1] == out.itemsize:
        _store_whole_tile(offset_pointer(acc, 0), element_pointer(out, i0, j0), out.strides[0], first)
    elif out.strides[1] == out.itemsize:  # an edge tile: shorter rows, still contiguous
        _store_rows(acc, out, i0, j0, mr, nr, first)
    else:
        for i in range(mr):
            for j in range(nr):
                if first:
                    out[i0 + i, j0 + j] = acc[i * NR + j]
                else:
                    out[i0 + i, j0 + j] += acc[i * NR + j]


# --- the blocked, parallel product ---------------------------------------------------------

@_njit()
def _plan(m, n_panels, threads, mc_max):
    """How many row blocks (of at most mc_max rows) and how many column ranges: enough tasks to keep
    every thread busy, a whole number of row blocks per thread (_run_task shares out the rows)."""
    row_blocks = -(-m // mc_max)
    if threads > 1:
        row_blocks = max(1, min(-(-m // MR), threads * -(-row_blocks // threads)))
    splits = 1
    if row_blocks < threads:
        splits = max(1, min(n_panels, threads // row_blocks))
    return row_blocks, splits


@_njit()
def _pack_b_job(b, bpack, job, k_blocks, jc, nc, ks, ksz, kc_max):
    """Job `job` of packing rows ks..ks+ksz, columns jc..jc+nc of b: one (panel, kc_max rows)
    piece, so that even a single panel is packed in parallel."""
    NR = _tile_width(bpack)
    t = job // k_blocks
    pb = (job - t * k_blocks) * kc_max
    _pack_b_panel(b, ks + pb, min(kc_max, ksz - pb), jc + t * NR, min(NR, nc - t * NR), bpack, t * ksz * NR + pb * NR)


def _whole_lines(count, itemsize):
    """count elements rounded up to whole 64-byte cache lines, in elements: each buffer carved out of
    the workspace starts on a line of its own (compiled below for _packed; plain for workspace_bytes)."""
    return -(-(count * itemsize) // 64) * 64 // itemsize


_whole_lines_jit = _njit(inline="always")(_whole_lines)


@_njit(inline="always")
def _part_start(extent, unit, parts, i):
    """Where part i of [0, extent) starts when it is cut into `parts` parts as even as whole `unit`s
    allow (part i ends where part i + 1 starts; part `parts` starts at extent)."""
    return min(extent, -(-extent // unit) * i // parts * unit)


@_njit()
def _run_task(a, bpack, out, task, row_blocks, splits, n_panels, jc, ks, ksz, kc_max, apacks, a_len):
    """Task `task`: row block rb = task // splits of out (the MR-tall row panels shared out as evenly
    as row_blocks blocks allow) against its range of the packed B panels (the task's share,
    task % splits, of the n_panels), over rows ks..ks+ksz of B, in slices of kc_max. apacks: a_len
    elements per thread for its block of A, or too short: allocate one."""
    m = a.shape[0]
    n = out.shape[1]
    NR = _tile_width(a)
    rb = task // splits
    sp = task - rb * splits
    i0 = _part_start(m, MR, row_blocks, rb)
    mcb = _part_start(m, MR, row_blocks, rb + 1) - i0
    t_lo = _part_start(n_panels, 1, splits, sp)
    t_hi = _part_start(n_panels, 1, splits, sp + 1)
    pack_a = t_hi - t_lo > PACK_A_PANELS  # else A is read in place
    slot = numba.get_thread_id()
    if pack_a and (slot + 1) * a_len <= apacks.size:
        apack = _part(apacks, slot * a_len, a_len)
    else:
        apack = np.empty(-(-mcb // MR) * MR * kc_max if pack_a else 0, dtype=a.dtype)
    for pb in range(0, ksz, kc_max):
        kc = min(kc_max, ksz - pb)
        if pack_a:
            _pack_a_block(a, i0, mcb, ks + pb, kc, apack)
        first = ks + pb == 0
        for t in range(t_lo, t_hi):
            j0 = jc + t * NR
            nr = min(NR, n - j0)
            bpanel = _part(bpack, t * ksz * NR + pb * NR, kc * NR)
            for r0 in range(0, mcb, MR):
                mr = min(MR, mcb - r0)
                if pack_a:
                    apanel = _part(apack, r0 * kc, kc * MR)
                    _update_tile(kc, apanel, bpanel, out, i0 + r0, j0, mr, nr, first)
                else:
                    rows = _clamped_rows(i0 + r0, m)
                    _update_tile_unpacked(kc, a, rows, ks + pb, bpanel, out, i0 + r0, j0, mr, nr, first)


@_njit(parallel=True)
def _packed(a, b, out, threads, kc_max, mc_max, nc_max, workspace):
    """out = a @ b on `threads` threads, blocked by at most kc_max x mc_max x nc_max (blocking()),
    or as dot products where _loop_for says so. The packing buffers are carved out of `workspace`
    (kernel_abi.h: the caller keeps it, so its pages stay touched) where it is large enough, else
    allocated."""
    if _loop_for(a.shape[0], b.shape[1], a.shape[1], a.strides[1], b.strides[0], a.itemsize) == _DOT_LOOP:
        _dot_products(a, b, out, threads)
        return
    m, k = a.shape
    n = b.shape[1]
    NR = _tile_width(a)
    ncb = min(nc_max, -(-n // NR) * NR)
    ks_max = max(kc_max, (PACK_B_ELEMENTS // ncb) // kc_max * kc_max)
    b_len = _whole_lines_jit(min(k, ks_max) * ncb, a.itemsize)
    a_len = _whole_lines_jit(-(-mc_max // MR) * MR * kc_max, a.itemsize)
    if b_len + threads * a_len <= workspace.size:
        bpack = _part(workspace, 0, b_len)
        apacks = _part(workspace, b_len, threads * a_len)
    else:
        bpack = np.empty(b_len, dtype=a.dtype)
        apacks = _part(workspace, 0, 0)
    for jc in range(0, n, ncb):
        nc = min(ncb, n - jc)
        n_panels = -(-nc // NR)
        row_blocks, splits = _plan(m, n_panels, threads, mc_max)
        for ks in range(0, k, ks_max):
            ksz = min(ks_max, k - ks)
            k_blocks = -(-ksz // kc_max)
            if threads == 1:  # plain loops: a parallel region costs ~0.7 us even with one thread
                for job in range(n_panels * k_blocks):
                    _pack_b_job(b, bpack, job, k_blocks, jc, nc, ks, ksz, kc_max)
                for task in range(row_blocks * splits):
                    _run_task(a, bpack, out, task, row_blocks, splits, n_panels, jc, ks, ksz, kc_max, apacks, a_len)
            else:
                for job in prange(n_panels * k_blocks):
                    _pack_b_job(b, bpack, job, k_blocks, jc, nc, ks, ksz, kc_max)
                for task in prange(row_blocks * splits):
                    _run_task(a, bpack, out, task, row_blocks, splits, n_panels, jc, ks, ksz, kc_max, apacks, a_len)


# --- the small, serial path -----------------------------------------------------------------
#
# Tiles of MR rows x one or SMALL_VECTORS vectors of columns, straight from a and from b's rows:
# in place where b's rows are contiguous, else (and for the last rows of a b narrower than a
# vector) from a copy of b in a stack buffer, a chunk of rows at a time. No packing, no threads.
# A tile's numbers of rows and vectors are compile-time constants (numba.literally: one compiled
# copy per value), so that LLVM sees straight-line code on fixed tile offsets and keeps the tile
# in registers.

@_njit(inline="always")
def _small_step(acc, base, rows, offset, b, nrows, vectors):
    """acc[base + i * TW + j] += (element `offset` bytes into rows[i]) * b[j] for i < nrows (2, 4 or
    MR) and j < vectors * W (TW: the widest tile's columns)."""
    W = _vector_width(b)
    TW = SMALL_VECTORS * W
    r0, r1, r2, r3, r4, r5 = rows
    a0 = shift(r0, offset)[0]
    a1 = shift(r1, offset)[0]
    a2 = shift(r2, offset)[0] if nrows > 2 else a1
    a3 = shift(r3, offset)[0] if nrows > 2 else a1
    a4 = shift(r4, offset)[0] if nrows > 4 else a1
    a5 = shift(r5, offset)[0] if nrows > 4 else a1
    for v in range(vectors):
        bv = shift(b, v * VECTOR_BYTES)
        at = base + v * W
        fma_vector(acc, at, bv, a0)
        fma_vector(acc, at + TW, bv, a1)
        if nrows > 2:
            fma_vector(acc, at + 2 * TW, bv, a2)
            fma_vector(acc, at + 3 * TW, bv, a3)
        if nrows > 4:
            fma_vector(acc, at + 4 * TW, bv, a4)
            fma_vector(acc, at + 5 * TW, bv, a5)


@_njit()
def _small_tile(kc, a, sa0, sa1, mr, b, sb0, nrows, vectors, out, so0, so1, lo, hi, first):
    """out[i, j] = (or += unless first) the sum over p < kc of a[i, p] * b[p, j], for i < mr <= nrows
    and lo <= j < hi, computing nrows rows (2, 4 or MR) and `vectors` vectors of columns (b's rows
    contiguous, that many columns readable). a, b and out point at their first elements, strides
    in bytes.

    Rows past mr are read as row mr - 1 (valid memory) and never stored. Two sets of accumulators
    (even and odd p) halve the FMA dependency chains."""
    numba.literally(nrows)
    numba.literally(vectors)
    W = _vector_width(a)
    TW = SMALL_VECTORS * W
    acc = _tile_pointer(a)  # MR * NR >= 2 * MR * TW elements
    _zero_small_tile(acc)
    last = mr - 1
    rows = (a, shift(a, min(1, last) * sa0), shift(a, min(2, last) * sa0), shift(a, min(3, last) * sa0),
            shift(a, min(4, last) * sa0), shift(a, min(5, last) * sa0))
    for q in range(kc // 2):
        p = 2 * q
        _small_step(acc, 0, rows, p * sa1, shift(b, p * sb0), nrows, vectors)
        _small_step(acc, MR * TW, rows, (p + 1) * sa1, shift(b, (p + 1) * sb0), nrows, vectors)
    if kc % 2:
        _small_step(acc, 0, rows, (kc - 1) * sa1, shift(b, (kc - 1) * sb0), nrows, vectors)
    whole = lo == 0 and hi == vectors * W and so1 == VECTOR_BYTES // W  # whole vectors into unit-stride rows
    result = _result_pointer(a)  # else the tile's sums, for element-wise stores
    for i in range(nrows):
        for v in range(vectors):
            at = i * TW + v * W
            if whole and i < mr:
                store_vector_sum(shift(out, i * so0 + v * VECTOR_BYTES), acc, at, MR * TW + at, first)
            elif not whole:
                store_vector_sum(shift(result, (at // W) * VECTOR_BYTES), acc, at, MR * TW + at, True)
    if not whole:  # (acc itself is only ever read at fixed offsets: so it can live in registers)
        for i in range(mr):
            for j in range(lo, hi):
                dst = shift(out, i * so0 + j * so1)
                if first:
                    dst[0] = result[i * TW + j]
                else:
                    dst[0] += result[i * TW + j]


@_njit(inline="always")
def _small_rows(kc, a, sa0, sa1, mr, b, sb0, vectors, out, so0, so1, lo, hi, first):
    """_small_tile on the fewest rows (2, 4 or MR) that cover mr: the last rows of m = 32 cost a
    third of a full tile, not all of it."""
    if mr > 4:
        _small_tile(kc, a, sa0, sa1, mr, b, sb0, MR, vectors, out, so0, so1, lo, hi, first)
    elif mr > 2:
        _small_tile(kc, a, sa0, sa1, mr, b, sb0, 4, vectors, out, so0, so1, lo, hi, first)
    else:
        _small_tile(kc, a, sa0, sa1, mr, b, sb0, 2, vectors, out, so0, so1, lo, hi, first)


@_njit()
def _small_block(a, src, ncols, out, first):
    """out[:, :ncols] = (or += unless first) a @ src[:, :ncols], in small tiles.

    src's rows are contiguous; all its columns may be read: ncols of them, or more where it is
    padded (at least one vector). A window of columns that the end of src cuts short is shifted left
    to end there (it overlaps the one before; only its new columns are stored), so no read goes
    past src's last column."""
    m, kc = a.shape
    readable = src.shape[1]
    W = _vector_width(a)
    sa0, sa1 = a.strides
    sb0 = src.strides[0]
    so0, so1 = out.strides
    for i0 in range(0, m, MR):
        mr = min(MR, m - i0)
        a_i0 = element_pointer(a, i0, 0)
        j0 = 0
        while j0 < ncols:
            if SMALL_VECTORS > 1 and ncols - j0 > W and readable >= 2 * W:
                start = min(j0, readable - 2 * W)
                _small_rows(kc, a_i0, sa0, sa1, mr, element_pointer(src, 0, start), sb0, SMALL_VECTORS,
                            element_pointer(out, i0, start), so0, so1, j0 - start, min(2 * W, ncols - start), first)
                j0 = start + 2 * W
            else:
                start = min(j0, readable - W)
                _small_rows(kc, a_i0, sa0, sa1, mr, element_pointer(src, 0, start), sb0, 1,
                            element_pointer(out, i0, start), so0, so1, j0 - start, min(W, ncols - start), first)
                j0 = start + W


@_njit()
def _small_copied(a, b, out):
    """out = _small_block on a copy of b (any strides): blocks of its columns, padded with zeros to
    whole vectors, a chunk of rows at a time, in a buffer on the stack that stays in L1."""
    k = a.shape[1]
    n = b.shape[1]
    W = _vector_width(a)
    capacity = SMALL_BUFFER_BYTES // a.itemsize
    block = min(-(-n // W), capacity // SMALL_CHUNK_ROWS // W) * W
    buffer = _buffer_pointer(a.dtype)
    z = a.dtype.type(0)
    for jb in range(0, n, block):
        nb = min(block, n - jb)
        width = -(-nb // W) * W
        rows = capacity // width
        for c0 in range(0, k, rows):
            kc = min(rows, k - c0)
            buf = resized(numba.carray(buffer, (kc, width)), kc, width)
            if b.strides[0] < b.strides[1]:  # columns closer together than rows: read down each column
                for j in range(nb):
                    for p in range(kc):
                        buf[p, j] = b[c0 + p, jb + j]
            else:
                for p in range(kc):
                    for j in range(nb):
                        buf[p, j] = b[c0 + p, jb + j]
            for p in range(kc):
                for j in range(nb, width):
                    buf[p, j] = z
            _small_block(a[:, c0:c0 + kc], buf, nb, out[:, jb:jb + nb], c0 == 0)


@_njit(inline="always")
def _small(a, b, out):
    """The small path: out = a @ b, reading b in place where its rows are contiguous.

    A b narrower than a vector (the notes' 784 x 10) is read a whole vector per row all the same,
    the columns past n belonging to the following rows (never stored), except in its last rows,
    where a vector would reach past b's last element: those are copied."""
    k = a.shape[1]
    n = b.shape[1]
    W = _vector_width(a)
    in_place = 0  # rows of b read in place
    if b.strides[1] == b.itemsize:
        if n >= W:
            in_place = k
        elif b.strides[0] > 0:  # row p's vector ends within b if p * stride + W <= (k - 1) * stride + n
            in_place = max(0, k - -(-(W - n) * b.itemsize // b.strides[0]))
    if in_place < k:
        _small_copied(a[:, in_place:], b[in_place:], out)
    if in_place > 0:  # (first: nothing copied before; never a constant: one compiled copy takes both values)
        _small_block(a[:, :in_place], resized(b, in_place, max(n, W)), n, out, in_place == k)


# --- the dot-product loop (x @ W.T) ------------------------------------------------------------
#
# Where a's rows and b's columns both run contiguously along k (x @ W.T with W row-major: a layer's
# forward product), each output is the dot product of a row of a and a column of b, read where
# they are: nothing is packed or transposed (the packed path's copy of W.T was ~20% of
# 64x784 @ (50x784).T) and no columns are computed past n (64 for n = 50 there). A tile of
# DOT_ROWS rows of one operand x DOT_COLS rows of the other keeps DOT_ROWS * DOT_COLS vector
# accumulators over k (24 of the 32 zmm registers), each summing a vector's worth of products of
# one output; one horizontal sum per output at the end. The loop of csrc/gemm/gemm.cpp's
# dot_product, chosen by the same rule and thresholds (_loop_for), and like there on AVX-512
# only (16 registers cannot hold the tile).
#
# The operands are seen as two sets of rows along k, x and y: out[i, j] = x_i . y_j. y is the one
# with more rows: its groups of DOT_COLS rows are the outer loop (each read from memory once, then
# from L1) and the threads' share; x, the smaller operand, is re-read from cache for each group.

DOT_ROWS, DOT_COLS = 4, 6
DOT_MIN_K = 512  # rows this long pay for the horizontal sums
DOT_MAX_SHORT_SIDE = 64  # m or n at most this: where packing costs most for what it saves
DOT_REREAD_BYTES = 1 << 20  # the smaller operand, re-read from cache, at most this size
DOT_FMAS_PER_THREAD = 1 << 20  # a fork/join costs about what one core needs for ~1M multiply-adds

_SMALL_LOOP, _PACKED_LOOP, _DOT_LOOP = range(3)  # the loops, as _loop_for names them
LOOP_NAMES = ("small", "packed", "dot products")


@_njit()
def _loop_for(m, n, k, a_k_step, b_k_step, itemsize):
    """The loop a product takes, the backend's one rule: dot products where a's rows and b's
    columns are contiguous along k (a_k_step and b_k_step, their steps along k in bytes, are the
    itemsize), k >= DOT_MIN_K, min(m, n) <= DOT_MAX_SHORT_SIDE and the smaller operand is at most
    DOT_REREAD_BYTES (csrc/gemm/gemm.cpp's in_place_pays, on AVX-512 as there); else the small path
    up to SMALL_WORK multiply-adds; else the packed one."""
    short_side = min(m, n)
    if (WIDE and a_k_step == itemsize and b_k_step == itemsize and k >= DOT_MIN_K and short_side <= DOT_MAX_SHORT_SIDE
            and short_side * k * itemsize <= DOT_REREAD_BYTES):
        return _DOT_LOOP
    return _PACKED_LOOP if m * n * k > SMALL_WORK else _SMALL_LOOP


def loop_for(m: int, k: int, n: int, itemsize: int, a_k_step: int, b_k_step: int) -> str:
    """The loop an (m, k) @ (k, n) product of itemsize-byte elements takes, a stepping a_k_step bytes
    along k and b b_k_step (for tests and tools): "small", "packed" or "dot products"."""
    return LOOP_NAMES[_loop_for(m, n, k, a_k_step, b_k_step, itemsize)]


_dot_acc_pointer = stack_pointer(DOT_ROWS * DOT_COLS * VECTOR_BYTES, "A dot tile's accumulators (in registers).")
_dot_tail_pointer = stack_pointer((DOT_ROWS + DOT_COLS) * VECTOR_BYTES, "A dot tile's last k % W steps, zero-padded.")
_dot_sums_pointer = stack_pointer(DOT_ROWS * DOT_COLS * 8, "A dot tile's sums.")


@_njit(inline="always")
def _copy_padded(dst, src, count, width):
    """dst[:width] = src[:count], then zeros."""
    for j in range(count):
        dst[j] = src[j]
    for j in range(count, width):
        dst[j] = 0


@_njit()
def _dot_tile(k, x, sx, rows, y, sy, cols, out, sox, soy, nrows):
    """out[i * sox + j * soy] = x_i . y_j (byte offsets) for i < rows <= nrows and j < cols <= DOT_COLS,
    where x_i (at x + i * sx) and y_j (at y + j * sy) are k >= W contiguous elements. nrows (1, 2 or
    DOT_ROWS) is a compile-time constant, one compiled copy each, so the tile is straight-line code
    on fixed offsets that LLVM keeps in registers. Rows past rows (cols) are read as the last one
    (valid memory) and never stored."""
    numba.literally(nrows)
    W = _vector_width(x)
    acc = _dot_acc_pointer(x)
    xs = (x, shift(x, min(1, rows - 1) * sx), shift(x, min(2, rows - 1) * sx), shift(x, min(3, rows - 1) * sx))
    ys = (y, shift(y, min(1, cols - 1) * sy), shift(y, min(2, cols - 1) * sy), shift(y, min(3, cols - 1) * sy),
          shift(y, min(4, cols - 1) * sy), shift(y, min(5, cols - 1) * sy))
    whole = k // W
    dot_fmas(acc, xs, ys, 0, nrows, DOT_COLS, False)
    for q in range(1, whole):
        dot_fmas(acc, xs, ys, q * W, nrows, DOT_COLS, True)
    rest = k - whole * W
    if rest:  # the last k % W steps: one more vector step on copies padded with zeros
        tail = _dot_tail_pointer(x)
        for r in range(DOT_ROWS):
            _copy_padded(shift(tail, r * VECTOR_BYTES), shift(xs[r], whole * VECTOR_BYTES), rest, W)
        for c in range(DOT_COLS):
            _copy_padded(shift(tail, (DOT_ROWS + c) * VECTOR_BYTES), shift(ys[c], whole * VECTOR_BYTES), rest, W)
        tail_xs = (tail, shift(tail, VECTOR_BYTES), shift(tail, 2 * VECTOR_BYTES), shift(tail, 3 * VECTOR_BYTES))
        tail_ys = (shift(tail, 4 * VECTOR_BYTES), shift(tail, 5 * VECTOR_BYTES), shift(tail, 6 * VECTOR_BYTES),
                   shift(tail, 7 * VECTOR_BYTES), shift(tail, 8 * VECTOR_BYTES), shift(tail, 9 * VECTOR_BYTES))
        dot_fmas(acc, tail_xs, tail_ys, 0, nrows, DOT_COLS, True)
    sums = _dot_sums_pointer(x)
    store_lane_sums(sums, acc, nrows, DOT_COLS)
    for i in range(rows):
        for j in range(cols):
            shift(out, i * sox + j * soy)[0] = sums[i * DOT_COLS + j]


@_njit()
def _dot_block(a, b, out, lo, hi):
    """out = a @ b by dot tiles for rows lo..hi of y (see above: y is whichever of a's rows and b's
    columns are more; lo a multiple of DOT_COLS), groups of y's rows outer."""
    m, k = a.shape
    n = b.shape[1]
    pa, pb, po = element_pointer(a, 0, 0), element_pointer(b, 0, 0), element_pointer(out, 0, 0)
    if m <= n:
        x, sx, nx, y, sy, sox, soy = pa, a.strides[0], m, pb, b.strides[1], out.strides[0], out.strides[1]
    else:
        x, sx, nx, y, sy, sox, soy = pb, b.strides[1], n, pa, a.strides[0], out.strides[1], out.strides[0]
    for j0 in range(lo, hi, DOT_COLS):
        cols = min(DOT_COLS, hi - j0)
        yj = shift(y, j0 * sy)
        for i0 in range(0, nx, DOT_ROWS):
            rows = min(DOT_ROWS, nx - i0)
            xi = shift(x, i0 * sx)
            o = shift(po, i0 * sox + j0 * soy)
            if rows > 2:
                _dot_tile(k, xi, sx, rows, yj, sy, cols, o, sox, soy, DOT_ROWS)
            elif rows == 2:
                _dot_tile(k, xi, sx, rows, yj, sy, cols, o, sox, soy, 2)
            else:
                _dot_tile(k, xi, sx, rows, yj, sy, cols, o, sox, soy, 1)


@_njit(parallel=True)
def _dot_products(a, b, out, threads):
    """out = a @ b by dot products (_loop_for says when): threads split y's rows, in whole groups."""
    m, k = a.shape
    n = b.shape[1]
    ny = max(m, n)
    parts = max(1, min(threads, m * n * k // DOT_FMAS_PER_THREAD))
    if parts == 1:  # plain loops: a parallel region costs ~0.7 us even with one thread
        _dot_block(a, b, out, 0, ny)
        return
    for t in prange(parts):
        _dot_block(a, b, out, _part_start(ny, DOT_COLS, parts, t), _part_start(ny, DOT_COLS, parts, t + 1))


# Status codes of _checked_small.
_OK, _RUN_PACKED, _BAD_SHAPES, _OUT_SELF_OVERLAP, _OUT_OVERLAPS_A, _OUT_OVERLAPS_B = range(6)


@_njit(inline="always")
def _extent(x):
    """[lowest, highest] byte address that x's elements occupy (x not empty)."""
    lo = hi = np.intp(x.ctypes.data)  # (an unsigned address plus a signed span would be a float)
    for d in range(x.ndim):
        span = (x.shape[d] - 1) * x.strides[d]
        if span < 0:
            lo += span
        else:
            hi += span
    return lo, hi + x.itemsize - 1


@_njit(inline="always")
def _disjoint(x, y):
    x_lo, x_hi = _extent(x)
    y_lo, y_hi = _extent(y)
    return x_hi < y_lo or y_hi < x_lo


@_njit()
def _checked_small(a, b, out):
    """Check the arguments; run small products here and now, tell the caller to run the rest."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        return _BAD_SHAPES
    if m == 0 or n == 0:
        return _OK
    if (m > 1 and out.strides[0] == 0) or (n > 1 and out.strides[1] == 0):
        return _OUT_SELF_OVERLAP
    if k > 0 and not _disjoint(out, a):
        return _OUT_OVERLAPS_A
    if k > 0 and not _disjoint(out, b):
        return _OUT_OVERLAPS_B
    if k == 0:
        out[:, :] = 0
        return _OK
    if _loop_for(m, n, k, a.strides[1], b.strides[0], a.itemsize) != _SMALL_LOOP:
        return _RUN_PACKED  # the packed or the dot-product loop: both in _packed, which takes the threads
    _small(a, b, out)
    return _OK


# --- entry points: operands described by address, shape and byte strides -----------------------
#
# Passing plain integers costs far less per call than making NumPy views of torch tensors and
# having Numba type them (~3 us for three operands, more than the whole 5x784 @ 784x10 product);
# the arrays are rebuilt inside, so the kernels still index them through their strides. Integer
# arguments also mean exactly one compiled specialisation per function, whatever the layouts.

def _views_of(scalar):
    """Entry points for one dtype: (checked small path, packed path). Their arguments: the unit of
    the strides in bytes (the itemsize for torch's element strides, 1 for NumPy's byte strides),
    then address, rows, columns and the two strides of a, b and out in turn (+ threads and the
    cache blocking)."""

    def small(unit, pa, m, k, sa0, sa1, pb, kb, n, sb0, sb1, po, mo, no, so0, so1):
        return _checked_small(view(pa, m, k, sa0 * unit, sa1 * unit, scalar), view(pb, kb, n, sb0 * unit, sb1 * unit, scalar),
                              view(po, mo, no, so0 * unit, so1 * unit, scalar))

    def packed(unit, pa, m, k, sa0, sa1, pb, kb, n, sb0, sb1, po, mo, no, so0, so1, threads, kc, mc, nc):
        _packed(view(pa, m, k, sa0 * unit, sa1 * unit, scalar), view(pb, kb, n, sb0 * unit, sb1 * unit, scalar),
                view(po, mo, no, so0 * unit, so1 * unit, scalar), threads, kc, mc, nc, buffer_at(0, 0, scalar))

    return small, packed


_small_f32, _packed_f32 = _views_of(np.float32)
_small_f64, _packed_f64 = _views_of(np.float64)
# Compiled on first use (each dtype separately); integers only, so one specialisation each.
_ENTRIES = {
    torch.float32: (_njit()(_small_f32), _njit()(_packed_f32), 4),
    torch.float64: (_njit()(_small_f64), _njit()(_packed_f64), 8),
}
_ENTRIES.update({np.dtype(np.float32): _ENTRIES[torch.float32], np.dtype(np.float64): _ENTRIES[torch.float64]})
MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def _run(entries, args) -> None:
    """Run the entry points on (unit, a's address, shape, strides, b's..., out's...)."""
    small, packed, itemsize = entries
    status = small(*args)
    if status == _OK:
        return
    if status == _RUN_PACKED:
        threads = max(1, min(torch.get_num_threads(), MAX_THREADS))
        numba.set_num_threads(threads)
        packed(*args, threads, *_BLOCKS[itemsize])
        return
    unit = args[0]  # strides in bytes below, whichever entry point was called
    shapes = f"a {args[2:4]}, b {args[7:9]}, out {args[12:14]}"
    strides = [tuple(s * unit for s in args[i:i + 2]) for i in (4, 9, 14)]
    if status == _BAD_SHAPES:
        raise ValueError(f"gemmlab numba matmul_2d: shapes do not fit: {shapes}; need a (m, k), b (k, n), out (m, n)")
    if status == _OUT_SELF_OVERLAP:
        raise ValueError(f"gemmlab numba matmul_2d: out {args[12:14]} has elements that share memory "
                         f"(byte strides {strides[2]}: an expanded view?)")
    name = "a" if status == _OUT_OVERLAPS_A else "b"
    raise ValueError(f"gemmlab numba matmul_2d: out shares memory with {name}; pass a separate output array "
                     f"({shapes}; byte strides a {strides[0]}, b {strides[1]}, out {strides[2]})")


def matmul_2d_numpy(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Validated entry point on NumPy arrays: write a @ b into out."""
    for name, x in (("a", a), ("b", b), ("out", out)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"gemmlab numba matmul_2d: {name} must be a 2-D numpy array; got {type(x).__name__}")
    got = f"a {a.shape} {a.dtype}, b {b.shape} {b.dtype}, out {out.shape} {out.dtype}"
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        raise ValueError(f"gemmlab numba matmul_2d needs 2-D arrays; got {got}")
    entries = _ENTRIES.get(a.dtype)  # native byte order only: a byte-swapped float64 is another dtype
    if entries is None or b.dtype != a.dtype or out.dtype != a.dtype:
        raise TypeError(f"gemmlab numba matmul_2d needs float32 or float64 arrays of one dtype, in the machine's "
                        f"byte order; got {got}")
    if not out.flags.writeable:
        raise ValueError(f"gemmlab numba matmul_2d: out is read-only; got {got}")
    _run(entries, (1, a.ctypes.data, *a.shape, *a.strides, b.ctypes.data, *b.shape, *b.strides,
                   out.ctypes.data, *out.shape, *out.strides))


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """The backend's entry point: the tensors go in by address, shape and strides (checked in the
    kernel); operands the address path cannot take raise an error that says why."""
    entries = _ENTRIES.get(a.dtype) if isinstance(a, torch.Tensor) else None
    args = by_address(a, b, out) if entries else None
    if args is None:
        raise operand_error("gemmlab numba matmul_2d", a, b, out)
    _run(entries, (entries[2], *args))


# --- the C ABI (csrc/kernel_abi.h): the kernel for gemmlab's C++ dispatch core -----------------
#
# One @cfunc per dtype with the ABI's signature (pointers taken as integers: the same calling
# convention on x86-64), compiled when this module is imported, i.e. at the backend's first use,
# and cached on disk like the rest. Each batch entry goes through the checked small path and, above
# SMALL_WORK, the packed one. The cfunc itself must not be parallel=True: such a cfunc compiles
# but computes nothing (numba 0.68); a plain cfunc calling the @njit(parallel=True) _packed works.

_ABI_OK, _ABI_BAD_ARGUMENTS, _ABI_NO_MEMORY = 0, 1, 2  # kernel_abi.h's gemmlab_status


_ABI_SIGNATURE = types.int32(
    types.int64, types.int64, types.int64, types.int64,  # batch, m, n, k
    types.intp, types.int64, types.int64, types.int64,  # a and its batch, row and column strides
    types.intp, types.int64, types.int64, types.int64,  # b ...
    types.intp, types.int64, types.int64, types.int64,  # c ...
    types.int32,  # threads
    types.intp, types.int64,  # the caller's workspace and its size in bytes
)


def _abi_function(scalar, max_threads: int, blocks: tuple[int, int, int]):
    """The ABI function for one dtype. max_threads (NUMBA_NUM_THREADS) and the cache blocking are
    closure values, not globals, because closure values are part of Numba's cache key: code cached
    under another NUMBA_NUM_THREADS or other caches is not reused (globals are frozen into cached
    code unseen)."""
    size = np.dtype(scalar).itemsize
    kc, mc, nc = blocks

    def gemm(batch, m, n, k, a, a_bs, a_rs, a_cs, b, b_bs, b_rs, b_cs, c, c_bs, c_rs, c_cs, threads, ws, ws_bytes):
        workspace = buffer_at(ws, ws_bytes // size, scalar)
        for i in range(batch):
            x = view(a + i * a_bs * size, m, k, a_rs * size, a_cs * size, scalar)
            y = view(b + i * b_bs * size, k, n, b_rs * size, b_cs * size, scalar)
            z = view(c + i * c_bs * size, m, n, c_rs * size, c_cs * size, scalar)
            status = _checked_small(x, y, z)
            if status == _RUN_PACKED:
                use = max(1, min(threads, max_threads))
                set_thread_count(use)  # the calling thread's setting, as _run sets it from Python
                try:
                    # (int64, not the closure's literal values: the code compiled for the Python path serves)
                    _packed(x, y, z, use, np.int64(kc), np.int64(mc), np.int64(nc), workspace)
                except Exception:  # what _packed can raise: MemoryError from its buffers
                    return _ABI_NO_MEMORY
            elif status != _OK:
                return _ABI_BAD_ARGUMENTS
        return _ABI_OK

    return numba.cfunc(_ABI_SIGNATURE, cache=_CACHE, error_model="numpy", boundscheck=False)(gemm)


# PyCapsule_New as a function of our own (setting argtypes on ctypes.pythonapi's would change it for everyone).
_new_capsule = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))


SERIAL_FMAS = 2**63 - 1  # the largest products that may run side by side on threads == 1: all


def workspace_bytes(threads: int) -> int:
    """The workspace (kernel_abi.h) that covers every packed product on up to `threads` threads: the
    most _packed carves out of it, a packed super-block of B and a block of A per thread."""
    return max((_whole_lines(max(PACK_B_ELEMENTS, kc * nc), size) + threads * _whole_lines(-(-mc // MR) * MR * kc, size))
               * size for size, (kc, mc, nc) in _BLOCKS.items())


def _native_kernel() -> tuple[int | None, str | None]:
    """Register the ABI functions with gemmlab's dispatch core: (kernel id, None), or (None, why not).

    Not where the C++ extension is missing (the backend still works, through Python), nor with
    Numba's workqueue threading layer: the core runs large products without the GIL, so two Python
    threads could enter the packed path at once, which that layer cannot take (it aborts the
    process); through Python, every call holds the GIL."""
    try:
        from gemmlab import _cpp
    except ImportError:
        return None, None
    if numba.threading_layer() == "workqueue":  # (loaded at import, below)
        return None, ("products go through Python: Numba's workqueue threading layer cannot run parallel code "
                      "from several threads at once (install tbb, `pip install tbb`, for a thread-safe one)")
    return register_kernel_as("numba"), None


def register_kernel_as(name: str, workspace: int | None = None) -> int:
    """The ABI functions registered with gemmlab's dispatch core under `name`, asking for `workspace`
    bytes of workspace (default: enough for every product on NUMBA_NUM_THREADS threads); the id.

    Any product may run side by side with others on threads == 1 (the core then shares a batch's
    entries out between its threads): the small path is serial, and the packed path then runs plain
    loops, entering no parallel region (which some threading layers cannot have entered from several
    threads at once); Numba's thread count is a per-thread setting. The core keeps the workspace per
    calling thread and hands it back on every call, so packing touches its pages once."""
    from gemmlab import _cpp

    if not _ABI_KEEP_ALIVE:  # the core keeps the code's address; a capsule, its name's
        functions = [_abi_function(np.float32, MAX_THREADS, _BLOCKS[4]), _abi_function(np.float64, MAX_THREADS, _BLOCKS[8])]
        _ABI_KEEP_ALIVE.extend(functions + [_cpp.CAPSULE_F32.encode(), _cpp.CAPSULE_F64.encode()])
    f32, f64 = (_new_capsule(fn.address, capsule_name, None) for fn, capsule_name in zip(_ABI_KEEP_ALIVE[:2], _ABI_KEEP_ALIVE[2:]))
    workspace = workspace_bytes(MAX_THREADS) if workspace is None else workspace
    return _cpp.register_kernel(name, f32, f64, SERIAL_FMAS, workspace)


_ABI_KEEP_ALIVE: list = []  # the two cfuncs (float32, float64), then their capsule names


def _load_threading_layer() -> None:
    """Load Numba's threading layer now (threading_layer() needs it, as the cached cfuncs do) and
    keep torch's thread count: starting Numba's OpenMP layer sets the calling thread's OpenMP thread
    count, which torch reads as its own, to NUMBA_NUM_THREADS (a program that had asked torch for
    one thread ran its next products on two)."""
    threads = torch.get_num_threads()
    numba.get_num_threads()
    torch.set_num_threads(threads)


_load_threading_layer()
NATIVE_KERNEL, _NATIVE_NOTE = _native_kernel()
NOTE = "; ".join(note for note in (CACHE_NOTE, _NATIVE_NOTE) if note) or None
