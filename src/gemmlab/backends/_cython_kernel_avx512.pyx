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
    # KC x NR panel of B: 128 KiB, streamed from L2; MC x KC block of A: 768 KiB in L2 (of 2 MiB).
    # Measured on the Xeon, 2 threads, 256^3-4096^3, against KC 128 / MC 192 (B's panel in L1):
    # float32 1.10-1.19x (KC 512 / MC 192: 1.07-1.15x), float64 1.03-1.09x (MC 384: 1.01-1.09x).
    REF_KC = 512
    REF_MC = 384  # float32
    REF_MC_DOUBLE = 192

include "_cython_kernel_body.pxi"
