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
    REF_KC = 128  # KC x NR panel of B: 32 KiB in L1 (of 48 KiB)
    REF_MC = 192  # MC x KC block of A: <= 192 KiB (float64) in L2 (of 2 MiB)

include "_cython_kernel_body.pxi"
