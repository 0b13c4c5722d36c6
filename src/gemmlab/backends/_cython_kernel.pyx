# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""gemmlab's Cython kernel, portable build: out = a @ b on 2-D arrays of any strides.

Compiled with the default x86-64 flags (SSE2), so it runs on any x86-64 CPU; the same body is
also built as _cython_kernel_avx2 and _cython_kernel_avx512 (see _cython_kernel_body.pxi and
cython_ext, which picks the best one the CPU supports). Every argument is checked before the loops
run, since bounds checks are off.
"""

VARIANT = "generic"

cdef enum:
    VECTOR_BYTES = 16  # SSE2: 16 registers of 16 bytes
    NR_VECTORS = 2  # micro-tile 6 x 2 vectors: 12 accumulators
    # The reference cache blocking, for caches like the Xeon's (L1d 48 KiB, L2 2 MiB; the body
    # derives what runs from this CPU's). KC: the KC x NR panel of packed B is reused by every MR
    # panel, so it should stay in L1: KC * NR_BYTES = 8 KiB here, leaving room for A and out; a
    # longer KC also makes fewer passes over out. MC: the MC x KC block of packed A should stay in
    # L2 (<= 192 KiB).
    REF_KC = 256
    REF_MC = 96
    REF_MC_DOUBLE = REF_MC

include "_cython_kernel_body.pxi"
