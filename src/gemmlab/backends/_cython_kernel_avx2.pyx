# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""gemmlab's Cython kernel built for AVX2 + FMA (setup.py: -mavx2 -mfma); see _cython_kernel.pyx.

Import it only on a CPU with AVX2 and FMA (cython_ext checks): its code may use them anywhere."""

VARIANT = "avx2"

cdef enum:
    VECTOR_BYTES = 32  # AVX2: 16 registers of 32 bytes
    NR_VECTORS = 2  # micro-tile 6 x 2 vectors: 12 accumulators, + 2 for B and 1 broadcast
    # The reference cache blocking, for caches like the Xeon's (L1d 48 KiB, L2 2 MiB; the body
    # derives what runs from this CPU's):
    # KC x NR panel of B: 48 KiB (float32), from L1 and L2 (B_PREFETCH); on a 32 KiB L1, KC 512.
    # Longer K slices mean fewer micro-kernel calls and passes over C, each of which costs this
    # kernel more than cpp's: on an AMD EPYC Zen 3 (2 threads, scripts/compare_builds.py), KC 512
    # against the 168 that REF_KC 256 scaled to ran 256^3-4096^3 1.03-1.20x as fast, float32 and
    # float64 (1.08 and 1.20 at 1024^3).
    REF_KC = 768
    # MC x KC block of A: 576 KiB float32 (1152 KiB float64) in L2: MC 72 on a 512 KiB L2. (96 rows,
    # scaled to MC 36 on that L2, fetched each B panel from L3 too often: Zen 3, 2048^3, 1 thread,
    # MC 72 ran 11-24% faster in float32 and 6-11% in float64.)
    REF_MC = 192
    REF_MC_DOUBLE = REF_MC

include "_cython_kernel_body.pxi"
