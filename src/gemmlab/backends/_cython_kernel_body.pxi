# The body of gemmlab's Cython kernel, shared by every build variant.
#
# Each variant (_cython_kernel.pyx: portable SSE2; _cython_kernel_avx2.pyx; _cython_kernel_avx512.pyx)
# defines VARIANT and the enum constants VECTOR_BYTES, NR_VECTORS, REF_KC, REF_MC (float32) and REF_MC_DOUBLE, then includes
# this file; setup.py compiles each with its own instruction-set flags, and cython_ext picks at run time
# the best one the CPU supports.
#
# out = a @ b on 2-D operands of any strides, in the BLIS style:
#
#     for jc in n by NC:                       columns of out one packed block of B covers
#       for ks in k by a "super-block":        as many rows of B as fit PACK_B_ELEMENTS
#         pack B[ks.., jc..] into NR-wide column panels       (prange over panels x KC rows)
#         for each task = (block of <= MC rows) x (range of B panels)   (prange over tasks)
#           for pc in the super-block by KC:
#             pack A[rows, pc..pc+KC] into MR-tall row panels           (task-private buffer)
#             for each NR panel, each MR panel: micro-kernel -> MR x NR tile -> out
#
# (A task that uses its A block for at most PACK_A_PANELS B panels reads A in place instead.)
# KC, MC and NC are derived, at import, from this CPU's data caches (gemmlab.cpu_caches, by the
# rule the cpp kernel uses) and kept in module variables that every product reads; blocking(dtype)
# reports them.
# Packing reads through the strides (views cost no copy) and pads the last panels with zeros, so
# the micro-kernel always runs a full MR x NR tile; only the valid part of an edge tile is stored.
# The micro-kernel keeps the MR x NR accumulators in a local array, and each of its column loops
# runs over one vector's worth of contiguous packed elements with a fixed trip count: gcc turns each
# into one vector FMA per row (MR x NR_VECTORS per step) and keeps the whole tile in registers.
# Small products take a serial, unpacked, register-tiled loop.
# On AVX-512, products whose a rows and b columns run contiguously along k (x @ W.T) with long rows
# and a short side take a dot-product loop: nothing packed (choose_loop says which loop a product takes).

from cpython.pycapsule cimport PyCapsule_New
from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

cdef extern from *:  # gcc's: rw 0 (read), locality 3 (into L1); the address may be anywhere
    void prefetch "__builtin_prefetch"(const void* address, int rw, int locality) noexcept nogil

from gemmlab import cpu_caches

ctypedef fused real:
    float
    double

cdef enum:
    MR = 6  # rows of a micro-tile (unrolled by hand below)
    NR_BYTES = VECTOR_BYTES * NR_VECTORS  # a micro-tile row: NR = NR_BYTES / sizeof(real) elements
    TILE_FLOATS = MR * (NR_BYTES >> 2)  # room for an MR x NR tile of float (double uses half)
    # The reference NC: the packed block of B is shared by all threads and read from L2/L3.
    REF_NC = 4096
    # Rows of B packed at once (a super-block): as many KC slices as fit this many elements, at
    # least one. Each task sweeps all of a super-block, so it must stay in L3; at 16 MiB (k = 2048
    # float32 packed whole) it came from memory, and 1 MiB ran 2048^3-4096^3 2-11% faster (AMD EPYC
    # Zen 3, scripts/compare_builds.py). A narrow B (n = 50) still packs 4000+ rows at once:
    # k = 50000 takes 13 super-blocks, two parallel regions (a few us) each.
    PACK_B_ELEMENTS = 1 << 18
    # Below this many multiply-adds (m * n * k) the serial unpacked loop is used: threads and
    # packing cost more than they save (about break-even at 64^3 on 2 AVX-512 cores).
    SMALL_WORK = 64 * 64 * 64
    # A task packs its block of A only when it covers more B panels than this; for fewer, reading
    # A's MR rows in place (each a sequential stream, from L1/L2) costs no more than reading a
    # packed panel, and packing is one more pass of scattered writes: at 1 thread, 128x64 @ 64x128
    # 20 -> 17 us, 256x256 @ 256x512 444 -> 415 us; row- or column-major A alike.
    PACK_A_PANELS = 8
    # The small path's tiles: MR rows x up to SMALL_VECTORS vectors (two sets of accumulators: on
    # AVX-512, 24 of the 32 registers), and its copy of b: 32 KiB, in chunks of at least 16 rows.
    SMALL_VECTORS = NR_VECTORS >> 1
    SMALL_WIDTH = VECTOR_BYTES * SMALL_VECTORS
    SMALL_TILE_FLOATS = MR * (SMALL_WIDTH >> 2)
    SMALL_BUFFER_FLOATS = 8192
    SMALL_CHUNK_ROWS = 16
    # The micro-kernel fetches its B panel this many k-steps ahead: a KC x NR panel outgrows L1, and
    # the hardware prefetchers left it waiting on L2 (Xeon, 1 thread, 1024^3-2048^3, old and new builds
    # alternated: float32 +3-11%, float64 +5-12%).
    B_PREFETCH = 16

# The constants of this build, for tests and reports (NR in elements is NR_BYTES / itemsize; KC,
# MC, NC: the reference blocking, blocking(dtype) gives the one in use).
BLOCKING = {"MR": MR, "NR_BYTES": NR_BYTES, "VECTOR_BYTES": VECTOR_BYTES, "KC": REF_KC, "MC": REF_MC, "MC_DOUBLE": REF_MC_DOUBLE, "NC": REF_NC,
            "PACK_B_ELEMENTS": PACK_B_ELEMENTS, "SMALL_WORK": SMALL_WORK, "PACK_A_PANELS": PACK_A_PANELS}


# --- the cache blocking in use ----------------------------------------------------------------

cdef struct Blocks:
    Py_ssize_t kc, mc, nc  # at most: rows of a slice of B, rows of a block of A, columns of a block of B

cdef Blocks float_blocks, double_blocks  # set by _use_caches, at import
cdef dict caches_used  # what they were derived from


cdef tuple reference(Py_ssize_t itemsize):
    """The reference (KC, MC, NC) for this element size."""
    return (REF_KC, REF_MC if itemsize == 4 else REF_MC_DOUBLE, REF_NC)


cdef Blocks derived(dict caches, Py_ssize_t itemsize):
    cdef Blocks blocks
    blocks.kc, blocks.mc, blocks.nc = cpu_caches.derive_blocking(caches, itemsize, MR, NR_BYTES // itemsize,
                                                                 reference(itemsize))
    return blocks


def _use_caches(caches=None):
    """Derive KC, MC, NC from these cache sizes ({'L1d', 'L2', 'L3', 'source'}, as
    gemmlab.cpu_caches.cache_sizes() gives them), or from this CPU's: a testing hook after import
    (a product reads the blocking once, when it starts)."""
    global float_blocks, double_blocks, caches_used
    caches = cpu_caches.cache_sizes() if caches is None else dict(caches)
    float_blocks = derived(caches, sizeof(float))
    double_blocks = derived(caches, sizeof(double))
    caches_used = caches


def blocking(dtype="float32"):
    """The register and cache blocking of the packed path for 'float32' or 'float64' (as
    gemmlab._cpp.blocking gives the cpp kernel's): path (this build), MR, NR (elements), KC, MC, NC
    in use, the reference (KC, MC, NC) and the caches they were derived from."""
    cdef Py_ssize_t itemsize = {"float32": 4, "float64": 8}[dtype]
    cdef Blocks blocks = float_blocks if itemsize == 4 else double_blocks
    return {"path": VARIANT, "MR": MR, "NR": NR_BYTES // itemsize, "KC": blocks.kc, "MC": blocks.mc, "NC": blocks.nc,
            "reference": reference(itemsize), "caches": dict(caches_used)}


_use_caches()

# Status codes of the core (the Python-level callers turn them into exceptions).
cdef enum:
    OK = 0
    BAD_SHAPES = 1
    OUT_SELF_OVERLAP = 2
    OUT_OVERLAPS_A = 3
    OUT_OVERLAPS_B = 4
    NO_MEMORY = 5


cdef inline const real* at(const real* base, Py_ssize_t i, Py_ssize_t j, Py_ssize_t s0, Py_ssize_t s1) noexcept nogil:
    """&x[i, j] for x at base with byte strides s0, s1."""
    return <const real*>(<const char*>base + i * s0 + j * s1)


cdef inline real* at_mut(real* base, Py_ssize_t i, Py_ssize_t j, Py_ssize_t s0, Py_ssize_t s1) noexcept nogil:
    return <real*>(<char*>base + i * s0 + j * s1)


cdef inline Py_ssize_t cdiv(Py_ssize_t x, Py_ssize_t y) noexcept nogil:
    return (x + y - 1) // y


cdef inline Py_ssize_t part_start(Py_ssize_t extent, Py_ssize_t unit, Py_ssize_t parts, Py_ssize_t i) noexcept nogil:
    """Where part i of [0, extent) starts when it is cut into `parts` parts as even as whole `unit`s
    allow (part i ends where part i + 1 starts; part `parts` starts at extent)."""
    return min(extent, cdiv(extent, unit) * i // parts * unit)


cdef inline void row_pointers(const real* a, Py_ssize_t i0, Py_ssize_t last, Py_ssize_t p0, Py_ssize_t sa0,
                              Py_ssize_t sa1, const real** rows) noexcept nogil:
    """rows[i] = &a[min(i0 + i, last), p0] for i < MR: the rows of a tile, those past the last one
    read as it (valid memory; their results are never stored)."""
    cdef Py_ssize_t i
    for i in range(MR):
        rows[i] = at(a, min(i0 + i, last), p0, sa0, sa1)


# --- packing -------------------------------------------------------------------------------

cdef void pack_b_panel(const real* b, Py_ssize_t sb0, Py_ssize_t sb1, Py_ssize_t p0, Py_ssize_t kc,
                       Py_ssize_t j0, Py_ssize_t nr, real* dst) noexcept nogil:
    """dst[p * NR + j] = b[p0 + p, j0 + j] for p < kc, zero for nr <= j < NR."""
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Py_ssize_t p, j
    cdef const real* src
    if nr == NR and sb1 == sizeof(real):
        for p in range(kc):
            src = at(b, p0 + p, j0, sb0, sb1)
            for j in range(NR):
                dst[p * NR + j] = src[j]
    else:
        for p in range(kc):
            for j in range(nr):
                dst[p * NR + j] = at(b, p0 + p, j0 + j, sb0, sb1)[0]
            for j in range(nr, NR):
                dst[p * NR + j] = 0


cdef void pack_a_block(const real* a, Py_ssize_t sa0, Py_ssize_t sa1, Py_ssize_t i0, Py_ssize_t mc,
                       Py_ssize_t p0, Py_ssize_t kc, real* dst) noexcept nogil:
    """MR-tall panels of a[i0:i0+mc, p0:p0+kc]: dst[(r // MR) * MR * kc + p * MR + r % MR], zero-padded."""
    cdef Py_ssize_t r, r0, mr, i, p
    cdef real* panel
    cdef const real* rows[MR]
    for r in range(cdiv(mc, MR)):
        r0 = r * MR
        mr = min(<Py_ssize_t>MR, mc - r0)
        panel = dst + r0 * kc
        if mr == MR and sa1 == sizeof(real):  # whole panel of contiguous rows: vector loads, one pass of writes
            row_pointers(a, i0 + r0, i0 + r0 + MR - 1, p0, sa0, sa1, rows)
            for p in range(kc):
                for i in range(MR):
                    panel[p * MR + i] = rows[i][p]
        elif sa0 <= sa1:  # column-major-like: walk down each column
            for p in range(kc):
                for i in range(mr):
                    panel[p * MR + i] = at(a, i0 + r0 + i, p0 + p, sa0, sa1)[0]
                for i in range(mr, MR):
                    panel[p * MR + i] = 0
        else:
            for i in range(mr):
                for p in range(kc):
                    panel[p * MR + i] = at(a, i0 + r0 + i, p0 + p, sa0, sa1)[0]
            for i in range(mr, MR):
                for p in range(kc):
                    panel[p * MR + i] = 0


# --- micro-kernel and write-back --------------------------------------------------------------

cdef inline void store_tile(const real* acc, real* out, Py_ssize_t so0, Py_ssize_t so1, Py_ssize_t i0, Py_ssize_t j0,
                            Py_ssize_t mr, Py_ssize_t nr, bint first) noexcept nogil:
    """out[i0:i0+mr, j0:j0+nr] = (or += unless first) the tile; vector stores for full tiles on unit-stride rows."""
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Py_ssize_t i, j
    cdef real* dst
    if mr == MR and nr == NR and so1 == sizeof(real):
        for i in range(MR):
            dst = at_mut(out, i0 + i, j0, so0, so1)
            if first:
                for j in range(NR):
                    dst[j] = acc[i * NR + j]
            else:
                for j in range(NR):
                    dst[j] += acc[i * NR + j]
    elif so1 == sizeof(real):  # an edge tile: shorter rows, still contiguous
        for i in range(mr):
            dst = at_mut(out, i0 + i, j0, so0, so1)
            if first:
                for j in range(nr):
                    dst[j] = acc[i * NR + j]
            else:
                for j in range(nr):
                    dst[j] += acc[i * NR + j]
    else:
        for i in range(mr):
            for j in range(nr):
                dst = at_mut(out, i0 + i, j0 + j, so0, so1)
                if first:
                    dst[0] = acc[i * NR + j]
                else:
                    dst[0] += acc[i * NR + j]


cdef inline void fma_row(real* acc, const real* b, real a) noexcept nogil:
    """acc[j] += a * b[j] for one vector's worth of elements.

    A loop of exactly one vector's length, so once gcc vectorises it no loop is left (one vector
    FMA), and the micro-kernels are straight-line code on fixed tile offsets that gcc keeps in
    registers."""
    cdef Py_ssize_t j
    for j in range(VECTOR_BYTES // sizeof(real)):
        acc[j] += a * b[j]


cdef inline void fma_rows(real* acc, Py_ssize_t row, const real* b, int rows, real a0, real a1, real a2, real a3,
                          real a4, real a5) noexcept nogil:
    """One vector of columns of a tile whose rows are `row` apart: acc[i * row + j] += a_i * b[j]
    for i < rows (2, 4 or MR: a constant where this is inlined) and j < one vector."""
    fma_row(acc, b, a0)
    fma_row(acc + row, b, a1)
    if rows > 2:
        fma_row(acc + 2 * row, b, a2)
        fma_row(acc + 3 * row, b, a3)
    if rows > 4:
        fma_row(acc + 4 * row, b, a4)
        fma_row(acc + 5 * row, b, a5)


cdef inline void fma_tile_line(real* acc, const real* b, real a) noexcept nogil:
    """acc[j] += a * b[j] for one row of a micro-tile, NR_VECTORS vectors (unrolled by hand: gcc does
    not fully unroll a loop over the vectors itself).

    fma_tile_row calls it a row at a time, reading each a_i in the call, so that each broadcast of
    a_i is needed only for its own row's FMAs. With 16 vector registers (AVX2, SSE2) the 12
    accumulators, 2 vectors of B and all 6 broadcasts do not fit at once: when the six a_i were read
    first, gcc spilled 2-4 accumulators to the stack in the inner loop (store-to-load latency on
    every k step; AMD EPYC Zen 3, AVX2: 0.4-0.5x the best peer). setup.py also turns on gcc's
    register-pressure-aware scheduling for those builds, without which it still spilled."""
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    fma_row(acc, b, a)
    fma_row(acc + W, b + W, a)
    if NR_VECTORS > 2:
        fma_row(acc + 2 * W, b + 2 * W, a)
    if NR_VECTORS > 3:
        fma_row(acc + 3 * W, b + 3 * W, a)


cdef inline void fma_tile_row(real* acc, const real* b, const real* a0, const real* a1, const real* a2,
                              const real* a3, const real* a4, const real* a5) noexcept nogil:
    """One k step of a micro-kernel: acc[i * NR + j] += *a_i * b[j] for the whole tile, a row at a
    time. The a_i come as pointers, each read just before its row (see fma_tile_line)."""
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    fma_tile_line(acc, b, a0[0])
    fma_tile_line(acc + NR, b, a1[0])
    fma_tile_line(acc + 2 * NR, b, a2[0])
    fma_tile_line(acc + 3 * NR, b, a3[0])
    fma_tile_line(acc + 4 * NR, b, a4[0])
    fma_tile_line(acc + 5 * NR, b, a5[0])


cdef inline void packed_k_step(real* acc, const real* ap, const real* bp, Py_ssize_t p) noexcept nogil:
    """k-step p of the micro-kernel on a packed A and B micro-panel."""
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    fma_tile_row(acc, bp + p * NR, ap + p * MR, ap + p * MR + 1, ap + p * MR + 2, ap + p * MR + 3, ap + p * MR + 4,
                 ap + p * MR + 5)


cdef inline void warm_k_step(real* acc, const real* ap, const real* bp, Py_ssize_t p, real* out, Py_ssize_t so0,
                             Py_ssize_t so1, Py_ssize_t i0, Py_ssize_t j0, Py_ssize_t nr) noexcept nogil:
    """packed_k_step p (< MR), asking for row p of the out tile meanwhile (see update_tile)."""
    prefetch(at_mut(out, i0 + p, j0, so0, so1), 0, 3)
    prefetch(at_mut(out, i0 + p, j0 + nr - 1, so0, so1), 0, 3)
    packed_k_step(acc, ap, bp, p)


cdef void update_tile(Py_ssize_t kc, const real* ap, const real* bp, real* out, Py_ssize_t so0, Py_ssize_t so1,
                      Py_ssize_t i0, Py_ssize_t j0, Py_ssize_t mr, Py_ssize_t nr, bint first) noexcept nogil:
    """The micro-kernel: out tile (i0, j0) = (or +=) packed A panel ap (kc x MR) times packed B panel bp
    (kc x NR), kc >= 1."""
    cdef real acc[TILE_FLOATS]  # the MR x NR accumulators
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Py_ssize_t p, j, line
    cdef Py_ssize_t warm = min(kc, mr)
    for j in range(MR * NR):
        acc[j] = 0
    # Ask for the tile's rows of out during the first k-steps, a row a step, so that they arrive
    # while the kernel computes (as numba_jit's _update_tile; left to the write-back, each tile
    # waited there on L3 or memory). The first step comes before the loops (kc >= 1: every K slice
    # has a row): with a way into them that skipped every step, gcc kept the tile in memory there
    # and zeroed it with a `rep stos` per call (5% of the function's perf samples at 2048^3
    # float32 on a Zen 3).
    warm_k_step(acc, ap, bp, 0, out, so0, so1, i0, j0, nr)
    for p in range(1, warm):
        warm_k_step(acc, ap, bp, p, out, so0, so1, i0, j0, nr)
    for p in range(warm, kc):
        for line in range(NR_BYTES // 64):
            prefetch(<const char*>(bp + (p + B_PREFETCH) * NR) + line * 64, 0, 3)
        packed_k_step(acc, ap, bp, p)
    store_tile(acc, out, so0, so1, i0, j0, mr, nr, first)


cdef void update_tile_unpacked(Py_ssize_t kc, const real* a, Py_ssize_t sa0, Py_ssize_t sa1, Py_ssize_t m,
                               Py_ssize_t p0, const real* bp, real* out, Py_ssize_t so0, Py_ssize_t so1,
                               Py_ssize_t i0, Py_ssize_t j0, Py_ssize_t mr, Py_ssize_t nr, bint first) noexcept nogil:
    """As update_tile, reading A's rows straight from a (columns p0..p0+kc, kc >= 1).

    For tasks that cover a single B panel, where each A block is used once and packing it would
    move as much memory as the product itself (n <= NR: the MLP's 50000x784 @ 784x50). Rows past
    the end are read as the last row (valid memory) and never stored."""
    cdef real acc[TILE_FLOATS]
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Py_ssize_t p, j
    cdef const real* r[MR]
    row_pointers(a, i0, m - 1, p0, sa0, sa1, r)
    for j in range(MR * NR):
        acc[j] = 0
    fma_tile_row(acc, bp, r[0], r[1], r[2], r[3], r[4], r[5])  # the first step first, as in update_tile
    for p in range(1, kc):
        fma_tile_row(acc, bp + p * NR, at(r[0], 0, p, 0, sa1), at(r[1], 0, p, 0, sa1), at(r[2], 0, p, 0, sa1),
                     at(r[3], 0, p, 0, sa1), at(r[4], 0, p, 0, sa1), at(r[5], 0, p, 0, sa1))
    store_tile(acc, out, so0, so1, i0, j0, mr, nr, first)


# --- the blocked, parallel product ------------------------------------------------------------

cdef inline void pack_b_job(const real* b, Py_ssize_t sb0, Py_ssize_t sb1, Py_ssize_t job, Py_ssize_t k_blocks,
                            Py_ssize_t jc, Py_ssize_t nc, Py_ssize_t ks, Py_ssize_t ksz, Py_ssize_t kc_max,
                            real* bpack) noexcept nogil:
    """Job `job` of packing rows ks..ks+ksz, columns jc..jc+nc of b: one (panel, kc_max rows)
    piece, so that even a single panel is packed in parallel."""
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Py_ssize_t t = job // k_blocks
    cdef Py_ssize_t pb = (job - t * k_blocks) * kc_max
    pack_b_panel(b, sb0, sb1, ks + pb, min(kc_max, ksz - pb), jc + t * NR, min(NR, nc - t * NR),
                 bpack + t * ksz * NR + pb * NR)


cdef int run_task(const real* a, Py_ssize_t sa0, Py_ssize_t sa1, Py_ssize_t m, const real* bpack,
                  real* out, Py_ssize_t so0, Py_ssize_t so1, Py_ssize_t n, Py_ssize_t task, Py_ssize_t row_blocks,
                  Py_ssize_t splits, Py_ssize_t n_panels, Py_ssize_t jc, Py_ssize_t ks, Py_ssize_t ksz,
                  Py_ssize_t kc_max, real* apack) noexcept nogil:
    """Task `task`: row block rb = task // splits of out (the MR-tall row panels shared out as evenly
    as row_blocks blocks allow) against its share (task % splits) of the n_panels panels of the
    packed super-block (rows ks..ks+ksz of B), in slices of kc_max. apack: room for the block of A
    (the running thread's slot of the workspace), or NULL."""
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Py_ssize_t rb = task // splits
    cdef Py_ssize_t sp = task - rb * splits
    cdef Py_ssize_t i0 = part_start(m, MR, row_blocks, rb)
    cdef Py_ssize_t mcb = part_start(m, MR, row_blocks, rb + 1) - i0
    cdef Py_ssize_t t_lo = part_start(n_panels, 1, splits, sp)
    cdef Py_ssize_t t_hi = part_start(n_panels, 1, splits, sp + 1)
    cdef bint pack_a = t_hi - t_lo > PACK_A_PANELS  # else A is read in place
    cdef real* own = NULL
    cdef Py_ssize_t ib, pb, kc, t, j0, nr, r, r0
    cdef const real* bpanel
    if pack_a and apack == NULL:
        own = <real*>malloc(cdiv(mcb, MR) * MR * kc_max * sizeof(real))
        if own == NULL:
            return 1
        apack = own
    for ib in range(cdiv(ksz, kc_max)):
        pb = ib * kc_max
        kc = min(kc_max, ksz - pb)
        if pack_a:
            pack_a_block(a, sa0, sa1, i0, mcb, ks + pb, kc, apack)
        for t in range(t_lo, t_hi):
            j0 = jc + t * NR
            nr = min(NR, n - j0)
            bpanel = bpack + t * ksz * NR + pb * NR
            for r in range(cdiv(mcb, MR)):
                r0 = r * MR
                if pack_a:
                    update_tile(kc, apack + r0 * kc, bpanel, out, so0, so1, i0 + r0, j0,
                                min(<Py_ssize_t>MR, mcb - r0), nr, ks + pb == 0)
                else:
                    update_tile_unpacked(kc, a, sa0, sa1, m, ks + pb, bpanel, out, so0, so1, i0 + r0, j0,
                                         min(<Py_ssize_t>MR, mcb - r0), nr, ks + pb == 0)
    free(own)
    return 0


cdef inline Py_ssize_t whole_lines(Py_ssize_t count, Py_ssize_t itemsize) noexcept nogil:
    """count elements rounded up to whole 64-byte cache lines, in elements: each buffer carved out
    of the workspace starts on a line of its own."""
    return cdiv(count * itemsize, 64) * 64 // itemsize


cdef Py_ssize_t workspace_elements(Blocks blocks, Py_ssize_t itemsize, Py_ssize_t threads) noexcept nogil:
    """The most that packed() carves out of a workspace: a packed super-block of B, a block of A per thread."""
    return (whole_lines(max(<Py_ssize_t>PACK_B_ELEMENTS, blocks.kc * blocks.nc), itemsize)
            + threads * whole_lines(cdiv(blocks.mc, MR) * MR * blocks.kc, itemsize))


def workspace_bytes(Py_ssize_t threads):
    """The workspace (kernel_abi.h) that covers every product on up to `threads` threads, in bytes."""
    return max(workspace_elements(float_blocks, 4, threads) * 4, workspace_elements(double_blocks, 8, threads) * 8)


cdef int packed(const real* a, Py_ssize_t sa0, Py_ssize_t sa1, const real* b, Py_ssize_t sb0, Py_ssize_t sb1,
                real* out, Py_ssize_t so0, Py_ssize_t so1, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                int threads, void* workspace, int64_t workspace_bytes) noexcept nogil:
    cdef Py_ssize_t NR = NR_BYTES // sizeof(real)
    cdef Blocks blocks = float_blocks if real is float else double_blocks  # read once: the product's blocking
    cdef Py_ssize_t nc_max = min(blocks.nc, cdiv(n, NR) * NR)
    cdef Py_ssize_t ks_max = max(blocks.kc, (PACK_B_ELEMENTS // nc_max) // blocks.kc * blocks.kc)
    cdef Py_ssize_t jb, jc, nc, n_panels, kb, ks, ksz, k_blocks, job, task
    cdef Py_ssize_t row_blocks, mc, splits, b_len, a_len
    cdef int failed = 0
    cdef real* bpack
    cdef real* apacks = NULL  # one block of A per thread, or NULL: each task allocates its own
    # Tasks: enough row blocks (<= MC rows, a multiple of MR) to keep every thread busy, a whole
    # number per thread, their row panels shared out evenly (run_task); when there are fewer row
    # blocks than threads, the B panels are split between tasks too.
    row_blocks = cdiv(m, blocks.mc)
    if threads > 1:
        row_blocks = max(1, min(cdiv(m, MR), threads * cdiv(row_blocks, threads)))
    mc = cdiv(cdiv(m, MR), row_blocks) * MR  # the most rows of a block
    # The buffers: carved out of the caller's workspace, where it is large enough (its pages stay
    # touched between calls), else allocated.
    b_len = whole_lines(min(k, ks_max) * nc_max, sizeof(real))
    a_len = whole_lines(mc * blocks.kc, sizeof(real))
    if workspace != NULL and (b_len + threads * a_len) * <int64_t>sizeof(real) <= workspace_bytes:
        bpack = <real*>workspace
        apacks = bpack + b_len
    else:
        bpack = <real*>malloc(b_len * sizeof(real))
        if bpack == NULL:
            return NO_MEMORY
    for jb in range(cdiv(n, nc_max)):
        jc = jb * nc_max
        nc = min(nc_max, n - jc)
        n_panels = cdiv(nc, NR)
        splits = 1
        if row_blocks < threads:
            splits = max(1, min(n_panels, threads // row_blocks))
        for kb in range(cdiv(k, ks_max)):
            ks = kb * ks_max
            ksz = min(ks_max, k - ks)
            k_blocks = cdiv(ksz, blocks.kc)
            if threads == 1:  # plain loops: even a team of one thread costs an OpenMP region
                for job in range(n_panels * k_blocks):
                    pack_b_job(b, sb0, sb1, job, k_blocks, jc, nc, ks, ksz, blocks.kc, bpack)
                for task in range(row_blocks * splits):
                    failed += run_task(a, sa0, sa1, m, bpack, out, so0, so1, n, task, row_blocks, splits, n_panels, jc, ks, ksz,
                                       blocks.kc, apacks)
                continue
            for job in prange(n_panels * k_blocks, schedule="static", num_threads=threads):
                pack_b_job(b, sb0, sb1, job, k_blocks, jc, nc, ks, ksz, blocks.kc, bpack)
            # Handed out as threads come free: cores do not always run at one speed (two one-thread
            # products on this VM's two CPUs at once ran up to 20% apart), and a static share left
            # the faster thread waiting (scripts/profile_kernel.py: 7% of the CPU time at 1024^3).
            for task in prange(row_blocks * splits, schedule="dynamic", num_threads=threads):
                failed += run_task(a, sa0, sa1, m, bpack, out, so0, so1, n, task, row_blocks, splits, n_panels, jc, ks, ksz,
                                   blocks.kc, apacks + threadid() * a_len if apacks != NULL else NULL)
    if apacks == NULL:
        free(bpack)
    return NO_MEMORY if failed else OK


# --- the small, serial path ----------------------------------------------------------------
#
# Tiles of MR rows x one or SMALL_VECTORS vectors of columns, straight from a and from b's rows:
# in place where b's rows are contiguous, else (and for the last rows of a b narrower than a
# vector) from a copy of b in a stack buffer, a chunk of rows at a time. No packing, no threads.
#
# A tile's shape must be known at compile time for gcc to keep it in registers, so it is given as
# types: Cython compiles small_tile once per combination of the fused types below (a pointer to
# one, NULL, picks the copy), and the `is` tests on them are decided at compile time.

cdef struct TwoRows:
    char unused
cdef struct FourRows:
    char unused
cdef struct SixRows:
    char unused
cdef struct OneVector:
    char unused
cdef struct TwoVectors:
    char unused

ctypedef fused tile_rows:
    TwoRows
    FourRows
    SixRows

ctypedef fused tile_vectors:
    OneVector
    TwoVectors

cdef inline void small_step(real* acc, const real* b, Py_ssize_t sb0, Py_ssize_t p, const real** a_rows,
                            Py_ssize_t sa1, int rows, int vectors) noexcept nogil:
    """One p of a small tile: acc[i * TW + j] += a_rows[i][p] * b[p, j] for i < rows, `vectors`
    vectors of columns."""
    cdef Py_ssize_t TW = SMALL_WIDTH // sizeof(real)
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef const real* row = at(b, p, 0, sb0, sizeof(real))
    cdef real a0 = at(a_rows[0], 0, p, 0, sa1)[0], a1 = at(a_rows[1], 0, p, 0, sa1)[0]
    cdef real a2 = a1, a3 = a1, a4 = a1, a5 = a1  # (unused below `rows`)
    cdef Py_ssize_t v
    if rows > 2:
        a2 = at(a_rows[2], 0, p, 0, sa1)[0]
        a3 = at(a_rows[3], 0, p, 0, sa1)[0]
    if rows > 4:
        a4 = at(a_rows[4], 0, p, 0, sa1)[0]
        a5 = at(a_rows[5], 0, p, 0, sa1)[0]
    for v in range(vectors if SMALL_VECTORS > 1 else 1):
        fma_rows(acc + v * W, TW, row + v * W, rows, a0, a1, a2, a3, a4, a5)


cdef inline void store_sum(real* dst, const real* x, const real* y, bint first) noexcept nogil:
    """dst[j] = (or += unless first) x[j] + y[j] for one vector's worth of elements."""
    cdef Py_ssize_t j
    if first:
        for j in range(VECTOR_BYTES // sizeof(real)):
            dst[j] = x[j] + y[j]
    else:
        for j in range(VECTOR_BYTES // sizeof(real)):
            dst[j] += x[j] + y[j]


cdef void small_tile(Py_ssize_t kc, const real* a, Py_ssize_t sa0, Py_ssize_t sa1, Py_ssize_t mr,
                     const real* b, Py_ssize_t sb0, const tile_rows* shape_rows, const tile_vectors* shape_vectors,
                     real* out, Py_ssize_t so0, Py_ssize_t so1, Py_ssize_t lo, Py_ssize_t hi, bint first) noexcept nogil:
    """out[i, j] = (or += unless first) the sum over p < kc of a[i, p] * b[p, j], for i < mr <= rows
    and lo <= j < hi, computing `rows` rows (2, 4 or MR) and `vectors` vectors of columns (b's
    rows contiguous, that many columns readable), as the fused types say.

    Rows mr..rows are read as row mr - 1 (valid memory) and never stored. Two sets of accumulators
    (even and odd p) halve the FMA dependency chains. The loop is straight-line code on fixed tile
    offsets, which gcc keeps in registers."""
    cdef int rows = 2 if tile_rows is TwoRows else 4 if tile_rows is FourRows else MR
    cdef int vectors = 2 if tile_vectors is TwoVectors and SMALL_VECTORS > 1 else 1
    cdef real acc[2 * SMALL_TILE_FLOATS]  # two sets of MR rows x TW columns
    cdef Py_ssize_t TW = SMALL_WIDTH // sizeof(real)
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef const real* a_rows[MR]
    cdef Py_ssize_t p, i, j, v
    cdef real* dst
    row_pointers(a, 0, mr - 1, 0, sa0, sa1, a_rows)
    for j in range(2 * MR * TW):
        acc[j] = 0
    for p in range(0, kc - 1, 2):
        small_step(acc, b, sb0, p, a_rows, sa1, rows, vectors)
        small_step(acc + MR * TW, b, sb0, p + 1, a_rows, sa1, rows, vectors)
    if kc % 2:
        small_step(acc, b, sb0, kc - 1, a_rows, sa1, rows, vectors)
    if lo == 0 and hi == vectors * W and so1 == sizeof(real):  # whole rows of vectors: vector stores
        for i in range(rows):
            if i < mr:
                dst = at_mut(out, i, 0, so0, so1)
                for v in range(vectors if SMALL_VECTORS > 1 else 1):
                    store_sum(dst + v * W, acc + i * TW + v * W, acc + (MR + i) * TW + v * W, first)
        return
    for i in range(mr):
        dst = at_mut(out, i, 0, so0, so1)
        for j in range(lo, hi):
            if first:
                at_mut(dst, 0, j, 0, so1)[0] = acc[i * TW + j] + acc[(MR + i) * TW + j]
            else:
                at_mut(dst, 0, j, 0, so1)[0] += acc[i * TW + j] + acc[(MR + i) * TW + j]


cdef inline void small_rows(Py_ssize_t kc, const real* a, Py_ssize_t sa0, Py_ssize_t sa1, Py_ssize_t mr,
                            const real* b, Py_ssize_t sb0, const tile_vectors* vectors, real* out, Py_ssize_t so0,
                            Py_ssize_t so1, Py_ssize_t lo, Py_ssize_t hi, bint first) noexcept nogil:
    """small_tile on the fewest rows (2, 4 or MR) that cover mr: the last rows of m = 32 cost a third
    of a full tile, not all of it."""
    if mr > 4:
        small_tile(kc, a, sa0, sa1, mr, b, sb0, <SixRows*>NULL, vectors, out, so0, so1, lo, hi, first)
    elif mr > 2:
        small_tile(kc, a, sa0, sa1, mr, b, sb0, <FourRows*>NULL, vectors, out, so0, so1, lo, hi, first)
    else:
        small_tile(kc, a, sa0, sa1, mr, b, sb0, <TwoRows*>NULL, vectors, out, so0, so1, lo, hi, first)


cdef void small_block(Py_ssize_t m, Py_ssize_t kc, Py_ssize_t ncols, const real* a, Py_ssize_t sa0,
                      Py_ssize_t sa1, const real* b, Py_ssize_t sb0, Py_ssize_t readable, real* out,
                      Py_ssize_t so0, Py_ssize_t so1, bint first) noexcept nogil:
    """out[:m, :ncols] = (or += unless first) a[:m, :kc] @ b[:kc, :ncols], in small tiles.

    b's rows are contiguous, sb0 bytes apart, with `readable` columns that may be read (at least
    one vector): ncols, or more (a copy's zero padding, or the next elements of a narrow b). A window
    of columns that the end of the readable ones cuts short is shifted left to end there (it overlaps
    the one before; only its new columns are stored), so no read goes past them."""
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef Py_ssize_t ib, i0, j0, start, mr
    for ib in range(cdiv(m, MR)):
        i0 = ib * MR
        mr = min(<Py_ssize_t>MR, m - i0)
        j0 = 0
        while j0 < ncols:
            if SMALL_VECTORS > 1 and ncols - j0 > W and readable >= 2 * W:
                start = min(j0, readable - 2 * W)
                small_rows(kc, at(a, i0, 0, sa0, sa1), sa0, sa1, mr, b + start, sb0, <TwoVectors*>NULL,
                           at_mut(out, i0, start, so0, so1), so0, so1, j0 - start, min(2 * W, ncols - start), first)
                j0 = start + 2 * W
            else:
                start = min(j0, readable - W)
                small_rows(kc, at(a, i0, 0, sa0, sa1), sa0, sa1, mr, b + start, sb0, <OneVector*>NULL,
                           at_mut(out, i0, start, so0, so1), so0, so1, j0 - start, min(W, ncols - start), first)
                j0 = start + W


cdef void small_copied(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* a, Py_ssize_t sa0, Py_ssize_t sa1,
                       const real* b, Py_ssize_t sb0, Py_ssize_t sb1, real* out, Py_ssize_t so0, Py_ssize_t so1,
                       bint first) noexcept nogil:
    """small_block on a copy of b (any strides): blocks of its columns, padded with zeros to whole
    vectors, a chunk of rows at a time, in a buffer on the stack that stays in L1."""
    cdef real buf[SMALL_BUFFER_FLOATS]  # float: all of it; double: half
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef Py_ssize_t capacity = SMALL_BUFFER_FLOATS * 4 // sizeof(real)
    cdef Py_ssize_t block = min(cdiv(n, W), capacity // SMALL_CHUNK_ROWS // W) * W
    cdef Py_ssize_t bb, jb, nb, width, rows, cb, c0, kc, p, j
    for bb in range(cdiv(n, block)):
        jb = bb * block
        nb = min(block, n - jb)
        width = cdiv(nb, W) * W
        rows = capacity // width
        for cb in range(cdiv(k, rows)):
            c0 = cb * rows
            kc = min(rows, k - c0)
            if sb0 < sb1:  # b's columns closer together than its rows: read down each column
                for j in range(nb):
                    for p in range(kc):
                        buf[p * width + j] = at(b, c0 + p, jb + j, sb0, sb1)[0]
            else:
                for p in range(kc):
                    for j in range(nb):
                        buf[p * width + j] = at(b, c0 + p, jb + j, sb0, sb1)[0]
            for p in range(kc):
                for j in range(nb, width):
                    buf[p * width + j] = 0
            small_block(m, kc, nb, at(a, 0, c0, sa0, sa1), sa0, sa1, buf, width * sizeof(real), width,
                        at_mut(out, 0, jb, so0, so1), so0, so1, first and c0 == 0)


cdef void small(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* a, Py_ssize_t sa0, Py_ssize_t sa1,
                const real* b, Py_ssize_t sb0, Py_ssize_t sb1, real* out, Py_ssize_t so0, Py_ssize_t so1) noexcept nogil:
    """The small path: out = a @ b, reading b in place where its rows are contiguous.

    A b narrower than a vector (the notes' 784 x 10) is read a whole vector per row all the same,
    the columns past n belonging to the following rows (never stored), except in its last rows,
    where a vector would reach past b's last element: those are copied."""
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef Py_ssize_t in_place = 0  # rows of b read in place
    if sb1 == sizeof(real):
        if n >= W:
            in_place = k
        elif sb0 > 0:  # row p's vector ends within b if p * sb0 + W <= (k - 1) * sb0 + n (elements)
            in_place = max(0, k - cdiv((W - n) * sizeof(real), sb0))
    if in_place:
        small_block(m, in_place, n, a, sa0, sa1, b, sb0, max(n, W), out, so0, so1, True)
    if in_place < k:
        small_copied(m, k - in_place, n, at(a, 0, in_place, sa0, sa1), sa0, sa1, at(b, in_place, 0, sb0, sb1),
                     sb0, sb1, out, so0, so1, in_place == 0)


# --- the dot-product loop (x @ W.T) ------------------------------------------------------------
#
# Where a's rows and b's columns both run contiguously along k (x @ W.T with W row-major: a layer's
# forward product), each output is the dot product of a row of a and a column of b, read where
# they are: nothing is packed or transposed (the packed path's copy of W.T was ~20% of
# 64x784 @ (50x784).T) and no columns are computed past n (64 for n = 50 there). A tile of
# DOT_ROWS rows of one operand x DOT_COLS rows of the other keeps DOT_ROWS * DOT_COLS vectors of
# accumulators over k (24 of the 32 zmm registers), each summing a vector's worth of products of
# one output; one horizontal sum per output at the end. The loop of csrc/gemm/gemm.cpp's
# dot_product, chosen by the same rule and thresholds (choose_loop), and like there on AVX-512
# only (16 registers cannot hold the tile).
#
# The operands are seen as two sets of rows along k, x and y: out[i, j] = x_i . y_j. y is the one
# with more rows: its groups of DOT_COLS rows are the outer loop (each read from memory once, then
# from L1) and the threads' share; x, the smaller operand, is re-read from cache for each group.

cdef enum:
    DOT_ROWS = 4
    DOT_COLS = 6
    DOT_MIN_K = 512  # rows this long pay for the horizontal sums
    DOT_MAX_SHORT_SIDE = 64  # m or n at most this: where packing costs most for what it saves
    DOT_REREAD_BYTES = 1 << 20  # the smaller operand, re-read from cache, at most this size
    DOT_FMAS_PER_THREAD = 1 << 20  # a fork/join costs about what one core needs for ~1M multiply-adds
    DOT_TILE_FLOATS = DOT_ROWS * DOT_COLS * (VECTOR_BYTES >> 2)  # double uses half
    DOT_TAIL_FLOATS = (DOT_ROWS + DOT_COLS) * (VECTOR_BYTES >> 2)

cdef enum:  # the loops product() takes, as choose_loop names them
    SMALL_LOOP = 0
    PACKED_LOOP = 1
    DOT_LOOP = 2

LOOP_NAMES = ("small", "packed", "dot products")


cdef inline int choose_loop(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, Py_ssize_t sa1, Py_ssize_t sb0,
                            Py_ssize_t itemsize) noexcept nogil:
    """The loop a product takes, the kernel's one rule: dot products where a's rows and b's columns
    are contiguous along k (sa1 and sb0, their byte steps along k, are the itemsize), k >= DOT_MIN_K,
    min(m, n) <= DOT_MAX_SHORT_SIDE and the smaller operand is at most DOT_REREAD_BYTES
    (csrc/gemm/gemm.cpp's in_place_pays, on AVX-512 as there); else the small path up to
    SMALL_WORK multiply-adds; else the packed one."""
    cdef Py_ssize_t short_side = min(m, n)
    if (VECTOR_BYTES == 64 and sa1 == itemsize and sb0 == itemsize and k >= DOT_MIN_K
            and short_side <= DOT_MAX_SHORT_SIDE and short_side * k * itemsize <= DOT_REREAD_BYTES):
        return DOT_LOOP
    return PACKED_LOOP if m * n * k > SMALL_WORK else SMALL_LOOP


def loop_for(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, Py_ssize_t itemsize, Py_ssize_t a_k_step, Py_ssize_t b_k_step):
    """The loop an (m, k) @ (k, n) product of itemsize-byte elements takes, a stepping a_k_step bytes
    along k and b b_k_step (for tests and tools): "small", "packed" or "dot products"."""
    return LOOP_NAMES[choose_loop(m, n, k, a_k_step, b_k_step, itemsize)]


cdef struct OneRow:
    char unused

ctypedef fused dot_rows:  # the rows of x a dot tile computes (TwoRows, FourRows: see the small path)
    OneRow
    TwoRows
    FourRows


cdef inline void dot_column(real* acc, const real* y, const real* x0, const real* x1, const real* x2,
                            const real* x3, int rows) noexcept nogil:
    """acc[r * DOT_COLS * W + j] += x_r[j] * y[j] for r < rows (1, 2 or 4) and j < W (one vector):
    one vector FMA per row once vectorised, as in fma_vector."""
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef Py_ssize_t row = DOT_COLS * W
    cdef Py_ssize_t j
    cdef real yv
    for j in range(W):
        yv = y[j]
        acc[j] += x0[j] * yv
        if rows > 1:
            acc[row + j] += x1[j] * yv
        if rows > 2:
            acc[2 * row + j] += x2[j] * yv
            acc[3 * row + j] += x3[j] * yv


cdef inline void dot_step(real* acc, const real* x0, const real* x1, const real* x2, const real* x3,
                          const real* y0, const real* y1, const real* y2, const real* y3, const real* y4,
                          const real* y5, int rows) noexcept nogil:
    """One vector's worth of k for the whole tile: rows + DOT_COLS vector loads, rows * DOT_COLS FMAs."""
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    dot_column(acc, y0, x0, x1, x2, x3, rows)
    dot_column(acc + W, y1, x0, x1, x2, x3, rows)
    dot_column(acc + 2 * W, y2, x0, x1, x2, x3, rows)
    dot_column(acc + 3 * W, y3, x0, x1, x2, x3, rows)
    dot_column(acc + 4 * W, y4, x0, x1, x2, x3, rows)
    dot_column(acc + 5 * W, y5, x0, x1, x2, x3, rows)


cdef inline void copy_padded(real* dst, const real* src, Py_ssize_t count) noexcept nogil:
    """dst[:W] = src[:count], then zeros (W: one vector)."""
    cdef Py_ssize_t j
    for j in range(count):
        dst[j] = src[j]
    for j in range(count, VECTOR_BYTES // sizeof(real)):
        dst[j] = 0


cdef inline real lane_sum(real* v) noexcept nogil:
    """v[0] + ... + v[W - 1] (W: one vector), by halves (overwrites v)."""
    cdef Py_ssize_t j
    if VECTOR_BYTES // sizeof(real) > 8:
        for j in range(8):
            v[j] += v[j + 8]
    if VECTOR_BYTES // sizeof(real) > 4:
        for j in range(4):
            v[j] += v[j + 4]
    if VECTOR_BYTES // sizeof(real) > 2:
        for j in range(2):
            v[j] += v[j + 2]
    return v[0] + v[1]


cdef void dot_tile(Py_ssize_t k, const real* x, Py_ssize_t sx, Py_ssize_t rows, const real* y, Py_ssize_t sy,
                   Py_ssize_t cols, real* out, Py_ssize_t sox, Py_ssize_t soy, const dot_rows* shape) noexcept nogil:
    """out[i * sox + j * soy] = x_i . y_j (byte offsets) for i < rows <= the fused type's rows and
    j < cols <= DOT_COLS, where x_i (at x + i * sx) and y_j (at y + j * sy) are k contiguous elements.

    Rows past rows (cols) are read as the last one (valid memory) and never stored. The tile's
    shape is known at compile time, so gcc keeps the accumulators in registers over the k loop."""
    cdef int nrows = 1 if dot_rows is OneRow else 2 if dot_rows is TwoRows else DOT_ROWS
    cdef real acc[DOT_TILE_FLOATS]
    cdef real tail[DOT_TAIL_FLOATS]
    cdef Py_ssize_t W = VECTOR_BYTES // sizeof(real)
    cdef Py_ssize_t whole = k - k % W
    cdef Py_ssize_t q, p, i, j
    cdef const real* x1 = at(x, min(<Py_ssize_t>1, rows - 1), 0, sx, 0)
    cdef const real* x2 = at(x, min(<Py_ssize_t>2, rows - 1), 0, sx, 0)
    cdef const real* x3 = at(x, min(<Py_ssize_t>3, rows - 1), 0, sx, 0)
    cdef const real* y1 = at(y, min(<Py_ssize_t>1, cols - 1), 0, sy, 0)
    cdef const real* y2 = at(y, min(<Py_ssize_t>2, cols - 1), 0, sy, 0)
    cdef const real* y3 = at(y, min(<Py_ssize_t>3, cols - 1), 0, sy, 0)
    cdef const real* y4 = at(y, min(<Py_ssize_t>4, cols - 1), 0, sy, 0)
    cdef const real* y5 = at(y, min(<Py_ssize_t>5, cols - 1), 0, sy, 0)
    for j in range(DOT_ROWS * DOT_COLS * W):
        acc[j] = 0
    for q in range(whole // W):
        p = q * W
        dot_step(acc, x + p, x1 + p, x2 + p, x3 + p, y + p, y1 + p, y2 + p, y3 + p, y4 + p, y5 + p, nrows)
    if whole < k:  # the last k % W steps: one more vector step on copies padded with zeros
        copy_padded(tail, x + whole, k - whole)
        copy_padded(tail + W, x1 + whole, k - whole)
        copy_padded(tail + 2 * W, x2 + whole, k - whole)
        copy_padded(tail + 3 * W, x3 + whole, k - whole)
        copy_padded(tail + 4 * W, y + whole, k - whole)
        copy_padded(tail + 5 * W, y1 + whole, k - whole)
        copy_padded(tail + 6 * W, y2 + whole, k - whole)
        copy_padded(tail + 7 * W, y3 + whole, k - whole)
        copy_padded(tail + 8 * W, y4 + whole, k - whole)
        copy_padded(tail + 9 * W, y5 + whole, k - whole)
        dot_step(acc, tail, tail + W, tail + 2 * W, tail + 3 * W, tail + 4 * W, tail + 5 * W, tail + 6 * W,
                 tail + 7 * W, tail + 8 * W, tail + 9 * W, nrows)
    for i in range(rows):
        for j in range(cols):
            at_mut(out, i, j, sox, soy)[0] = lane_sum(acc + (i * DOT_COLS + j) * W)


cdef void dot_block(Py_ssize_t k, const real* x, Py_ssize_t sx, Py_ssize_t nx, const real* y, Py_ssize_t sy,
                    Py_ssize_t lo, Py_ssize_t hi, real* out, Py_ssize_t sox, Py_ssize_t soy) noexcept nogil:
    """Dot tiles for rows lo..hi of y (lo a multiple of DOT_COLS) against all nx rows of x, y's
    groups outer; the tile of the fewest rows (1, 2 or DOT_ROWS) that covers x's last ones."""
    cdef Py_ssize_t jb, j0, cols, ib, i0, rows
    for jb in range(cdiv(hi - lo, DOT_COLS)):
        j0 = lo + jb * DOT_COLS
        cols = min(<Py_ssize_t>DOT_COLS, hi - j0)
        for ib in range(cdiv(nx, DOT_ROWS)):
            i0 = ib * DOT_ROWS
            rows = min(<Py_ssize_t>DOT_ROWS, nx - i0)
            if rows > 2:
                dot_tile(k, at(x, i0, 0, sx, 0), sx, rows, at(y, j0, 0, sy, 0), sy, cols,
                         at_mut(out, i0, j0, sox, soy), sox, soy, <FourRows*>NULL)
            elif rows == 2:
                dot_tile(k, at(x, i0, 0, sx, 0), sx, rows, at(y, j0, 0, sy, 0), sy, cols,
                         at_mut(out, i0, j0, sox, soy), sox, soy, <TwoRows*>NULL)
            else:
                dot_tile(k, at(x, i0, 0, sx, 0), sx, rows, at(y, j0, 0, sy, 0), sy, cols,
                         at_mut(out, i0, j0, sox, soy), sox, soy, <OneRow*>NULL)


cdef int dot_products(const real* a, Py_ssize_t sa0, const real* b, Py_ssize_t sb1, real* out, Py_ssize_t so0,
                      Py_ssize_t so1, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, int threads) noexcept nogil:
    """out = a @ b by dot products (choose_loop says when): threads split y's rows, in whole groups."""
    cdef const real* x = a
    cdef const real* y = b
    cdef Py_ssize_t sx = sa0, sy = sb1, nx = m, ny = n, sox = so0, soy = so1
    cdef Py_ssize_t parts = max(1, min(<Py_ssize_t>threads, m * n * k // DOT_FMAS_PER_THREAD))
    cdef Py_ssize_t t
    if m > n:  # b is the smaller operand: re-read it, stream a's rows once
        x, sx, nx, sox = b, sb1, n, so1
        y, sy, ny, soy = a, sa0, m, so0
    if parts == 1:  # plain loops: even a team of one thread costs an OpenMP region
        dot_block(k, x, sx, nx, y, sy, 0, ny, out, sox, soy)
        return OK
    for t in prange(parts, schedule="static", num_threads=parts):
        dot_block(k, x, sx, nx, y, sy, part_start(ny, DOT_COLS, parts, t), part_start(ny, DOT_COLS, parts, t + 1),
                  out, sox, soy)
    return OK


# --- checks and the entry points -------------------------------------------------------------

cdef inline void extent(Py_ssize_t address, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t s0, Py_ssize_t s1,
                        Py_ssize_t itemsize, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi]: the bytes a non-empty operand's elements occupy."""
    cdef Py_ssize_t span0 = (rows - 1) * s0, span1 = (cols - 1) * s1
    lo[0] = address + min(span0, 0) + min(span1, 0)
    hi[0] = address + max(span0, 0) + max(span1, 0) + itemsize - 1


cdef inline bint disjoint(Py_ssize_t x_lo, Py_ssize_t x_hi, Py_ssize_t y_lo, Py_ssize_t y_hi) noexcept nogil:
    return x_hi < y_lo or y_hi < x_lo


cdef int product(const real* a, Py_ssize_t m, Py_ssize_t k, Py_ssize_t sa0, Py_ssize_t sa1,
                 const real* b, Py_ssize_t kb, Py_ssize_t n, Py_ssize_t sb0, Py_ssize_t sb1,
                 real* out, Py_ssize_t mo, Py_ssize_t no, Py_ssize_t so0, Py_ssize_t so1, int threads,
                 void* workspace=NULL, int64_t workspace_bytes=0) noexcept nogil:
    """Check the arguments, then write a @ b into out; returns a status code. The packed loop packs
    into the workspace where it is large enough, else allocates."""
    cdef Py_ssize_t a_lo, a_hi, b_lo, b_hi, o_lo, o_hi
    cdef Py_ssize_t i, j
    if kb != k or mo != m or no != n:
        return BAD_SHAPES
    if m == 0 or n == 0:
        return OK
    if (m > 1 and so0 == 0) or (n > 1 and so1 == 0):
        return OUT_SELF_OVERLAP
    if k == 0:
        for i in range(m):
            for j in range(n):
                at_mut(out, i, j, so0, so1)[0] = 0
        return OK
    extent(<Py_ssize_t>a, m, k, sa0, sa1, sizeof(real), &a_lo, &a_hi)
    extent(<Py_ssize_t>b, k, n, sb0, sb1, sizeof(real), &b_lo, &b_hi)
    extent(<Py_ssize_t>out, m, n, so0, so1, sizeof(real), &o_lo, &o_hi)
    if not disjoint(o_lo, o_hi, a_lo, a_hi):
        return OUT_OVERLAPS_A
    if not disjoint(o_lo, o_hi, b_lo, b_hi):
        return OUT_OVERLAPS_B
    cdef int loop = choose_loop(m, n, k, sa1, sb0, sizeof(real))
    if loop == DOT_LOOP:
        return dot_products(a, sa0, b, sb1, out, so0, so1, m, k, n, max(1, threads))
    if loop == PACKED_LOOP:
        return packed(a, sa0, sa1, b, sb0, sb1, out, so0, so1, m, k, n, max(1, threads), workspace, workspace_bytes)
    small(m, k, n, a, sa0, sa1, b, sb0, sb1, out, so0, so1)
    return OK


cdef object raise_for(int status, tuple a_shape, tuple b_shape, tuple out_shape, tuple byte_strides):
    """Raise the exception for a status code of product(); byte_strides: (a's, b's, out's)."""
    shapes = f"a {a_shape}, b {b_shape}, out {out_shape}"
    if status == BAD_SHAPES:
        raise ValueError(f"gemmlab cython matmul_2d: shapes do not fit: {shapes}; need a (m, k), b (k, n), out (m, n)")
    if status == OUT_SELF_OVERLAP:
        raise ValueError(f"gemmlab cython matmul_2d: out {out_shape} has elements that share memory "
                         f"(byte strides {byte_strides[2]}: an expanded view?)")
    if status == OUT_OVERLAPS_A or status == OUT_OVERLAPS_B:
        name = "a" if status == OUT_OVERLAPS_A else "b"
        raise ValueError(f"gemmlab cython matmul_2d: out shares memory with {name}; pass a separate output array "
                         f"({shapes}; byte strides a {byte_strides[0]}, b {byte_strides[1]}, out {byte_strides[2]})")
    if status == NO_MEMORY:
        raise MemoryError(f"gemmlab cython matmul_2d: could not allocate the packing buffers for {shapes}")


_DTYPE_NAMES = {"f": "float32", "d": "float64"}  # buffer formats this kernel takes


cdef str describe(object view, object x):
    return f"{view.shape} {_DTYPE_NAMES.get(view.format) or getattr(x, 'dtype', view.format)}"


cdef object check_arrays(object a, object b, object out):
    """Validate the NumPy-level arguments with messages that name them, before Cython's fused-type
    dispatch (whose own errors say only "No matching signature found" or "Buffer dtype mismatch").
    Returns the buffers' format: 'f' (float32) or 'd' (float64)."""
    cdef list views = []
    for name, x in (("a", a), ("b", b), ("out", out)):
        try:
            views.append(memoryview(x))
        except TypeError:
            raise TypeError(f"gemmlab cython matmul_2d: {name} must be a 2-D float32 or float64 array; "
                            f"got {type(x).__name__}") from None
    va, vb, vo = views
    got = f"a {describe(va, a)}, b {describe(vb, b)}, out {describe(vo, out)}"
    if va.ndim != 2 or vb.ndim != 2 or vo.ndim != 2:
        raise ValueError(f"gemmlab cython matmul_2d needs 2-D arrays; got {got}")
    if va.format not in _DTYPE_NAMES or vb.format != va.format or vo.format != va.format:
        raise TypeError(f"gemmlab cython matmul_2d needs float32 or float64 arrays of one dtype, in the machine's "
                        f"byte order; got {got}")
    if vo.readonly:
        raise ValueError(f"gemmlab cython matmul_2d: out is read-only; got {got}")
    return va.format


cdef void run_typed(const real[:, :] a, const real[:, :] b, real[:, :] out, int num_threads) except *:
    cdef int status
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], kb = b.shape[0], n = b.shape[1]
    cdef Py_ssize_t mo = out.shape[0], no = out.shape[1]
    # &x[0, 0] only exists for non-empty views; empty ones are never read.
    cdef const real* pa = &a[0, 0] if m and k else NULL
    cdef const real* pb = &b[0, 0] if kb and n else NULL
    cdef real* po = &out[0, 0] if mo and no else NULL
    with nogil:
        status = product(pa, m, k, a.strides[0], a.strides[1], pb, kb, n, b.strides[0], b.strides[1],
                         po, mo, no, out.strides[0], out.strides[1], num_threads)
    if status:
        raise_for(status, (m, k), (kb, n), (mo, no),
                  ((a.strides[0], a.strides[1]), (b.strides[0], b.strides[1]), (out.strides[0], out.strides[1])))


def matmul_2d(a, b, out, int num_threads=1):
    """Write a @ b into out (2-D arrays of one float dtype, any strides), with num_threads OpenMP threads."""
    if num_threads < 1:
        raise ValueError(f"gemmlab cython matmul_2d: num_threads must be >= 1, got {num_threads}")
    if check_arrays(a, b, out) == "f":
        run_typed[float](a, b, out, num_threads)
    else:
        run_typed[double](a, b, out, num_threads)


def _matmul_2d_addresses(int itemsize, size_t pa, Py_ssize_t m, Py_ssize_t k, Py_ssize_t sa0, Py_ssize_t sa1,
                         size_t pb, Py_ssize_t kb, Py_ssize_t n, Py_ssize_t sb0, Py_ssize_t sb1,
                         size_t po, Py_ssize_t mo, Py_ssize_t no, Py_ssize_t so0, Py_ssize_t so1, int num_threads):
    """matmul_2d on operands given by address, shape and strides in elements (itemsize 4: float32,
    8: float64), for cython_ext's torch path: far cheaper per call than NumPy views and typed
    memoryviews. Internal: the caller vouches that the addresses are live CPU memory of that extent."""
    cdef int status
    if num_threads < 1:
        raise ValueError(f"gemmlab cython matmul_2d: num_threads must be >= 1, got {num_threads}")
    if itemsize == 4:
        with nogil:
            status = product(<const float*>pa, m, k, sa0 * 4, sa1 * 4, <const float*>pb, kb, n, sb0 * 4, sb1 * 4,
                             <float*>po, mo, no, so0 * 4, so1 * 4, num_threads)
    elif itemsize == 8:
        with nogil:
            status = product(<const double*>pa, m, k, sa0 * 8, sa1 * 8, <const double*>pb, kb, n, sb0 * 8, sb1 * 8,
                             <double*>po, mo, no, so0 * 8, so1 * 8, num_threads)
    else:
        raise TypeError(f"gemmlab cython matmul_2d: itemsize must be 4 (float32) or 8 (float64), got {itemsize}")
    if status:
        raise_for(status, (m, k), (kb, n), (mo, no),
                  ((sa0 * itemsize, sa1 * itemsize), (sb0 * itemsize, sb1 * itemsize), (so0 * itemsize, so1 * itemsize)))


# --- the C ABI (csrc/kernel_abi.h): the kernel for gemmlab's C++ dispatch core -----------------
#
# The header itself is read, so the C++ compiler checks that the functions below have exactly the
# ABI's signatures (they are assigned to the ABI's function pointer types).

cdef extern from "kernel_abi.h":
    enum gemmlab_status:
        GEMMLAB_OK
        GEMMLAB_BAD_ARGUMENTS
        GEMMLAB_NO_MEMORY
    const char* GEMMLAB_CAPSULE_F32
    const char* GEMMLAB_CAPSULE_F64
    ctypedef int (*gemmlab_gemm_f32)(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, int64_t,
                                     const float*, int64_t, int64_t, int64_t, float*, int64_t, int64_t, int64_t,
                                     int32_t, void*, int64_t) noexcept nogil
    ctypedef int (*gemmlab_gemm_f64)(int64_t, int64_t, int64_t, int64_t, const double*, int64_t, int64_t, int64_t,
                                     const double*, int64_t, int64_t, int64_t, double*, int64_t, int64_t, int64_t,
                                     int32_t, void*, int64_t) noexcept nogil


cdef int gemm_abi(int64_t batch, int64_t m, int64_t n, int64_t k, const real* a, int64_t a_bs, int64_t a_rs,
                  int64_t a_cs, const real* b, int64_t b_bs, int64_t b_rs, int64_t b_cs, real* c, int64_t c_bs,
                  int64_t c_rs, int64_t c_cs, int32_t threads, void* workspace, int64_t workspace_bytes) noexcept nogil:
    """C[i] = A[i] @ B[i] for i < batch (strides in elements, see kernel_abi.h), each entry through
    the checked product(), which takes byte strides. Thread-safe: it touches only its arguments, the
    caller's workspace and buffers of its own; with threads == 1 the packed path runs plain loops, no
    OpenMP region."""
    cdef int64_t i
    cdef int status
    cdef int64_t size = sizeof(real)
    for i in range(batch):
        status = product(a + i * a_bs, m, k, a_rs * size, a_cs * size, b + i * b_bs, k, n, b_rs * size, b_cs * size,
                         c + i * c_bs, m, n, c_rs * size, c_cs * size, threads, workspace, workspace_bytes)
        if status == NO_MEMORY:
            return GEMMLAB_NO_MEMORY
        if status != OK:
            return GEMMLAB_BAD_ARGUMENTS
    return GEMMLAB_OK


cdef gemmlab_gemm_f32 abi_f32 = gemm_abi[float]
cdef gemmlab_gemm_f64 abi_f64 = gemm_abi[double]
# The functions as gemmlab._cpp.register_kernel takes them (cython_ext registers the build it picked).
ABI_F32 = PyCapsule_New(<void*>abi_f32, GEMMLAB_CAPSULE_F32, NULL)
ABI_F64 = PyCapsule_New(<void*>abi_f64, GEMMLAB_CAPSULE_F64, NULL)
