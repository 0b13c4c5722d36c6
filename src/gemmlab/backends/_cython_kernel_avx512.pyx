# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""gemmlab's Cython kernel built for AVX-512 (setup.py: -mavx512f -mavx512vl -mavx512bw -mavx512dq
-mfma, 512-bit vectors preferred); see _cython_kernel.pyx.

Import it only on a CPU with those extensions (cython_ext checks): its code may use them anywhere."""

VARIANT = "avx512"

cdef enum:
    VECTOR_BYTES = 64  # AVX-512: 32 registers of 64 bytes
    NR_VECTORS = 4  # micro-tile 6 x 4 vectors: 24 accumulators (NR = 64 float32 / 32 float64)
    # The reference cache blocking, for caches like the Xeon's (L1d 48 KiB, L2 2 MiB; the body
    # derives what runs from this CPU's):
    # KC x NR panel of B: 256 KiB (float32), software-prefetched from L2 a few k-steps ahead (see
    # update_tile); MC x KC block of A: 768 KiB in L2 (of 2 MiB). Longer K slices mean fewer passes
    # of loads and stores over C. Measured on the Xeon, 2 threads, one process alternating the two:
    # against KC 512 / MC 384 (float32) and 192 (float64), float32 1024^3 294 vs 291 GFLOP/s,
    # 2048^3 303 vs 294; float64 144 vs 143 and 143 vs 139; 50000x784 @ 784x50 186 vs 188 (float32).
    REF_KC = 1024
    REF_MC = 192  # float32
    REF_MC_DOUBLE = 96

include "_cython_kernel_body.pxi"
