/* The C ABI between gemmlab's dispatch core and its compiled kernels.
 *
 * A kernel provides one function per dtype that writes `batch` products C[i] = A[i] @ B[i]
 * (i < batch) on raw operands: C[i] is m x n, A[i] m x k, B[i] k x n, and element (r, p) of A[i]
 * is a[i * a_bs + r * a_rs + p * a_cs] (strides in ELEMENTS, any sign, 0 for broadcast rows,
 * columns or batch entries; likewise B and C). A 2-D product is batch = 1. The dispatch core
 * (csrc/dispatch.cpp) has already checked everything: shapes fit, batch, m, n, k > 0, C's elements
 * are distinct and C shares no memory with A or B. It splits a batch over the threads itself when
 * the entries are small (each call then gets threads = 1); otherwise it passes all the threads.
 *
 * The function returns GEMMLAB_OK, or a status saying what went wrong; it must not throw, call
 * back into Python or keep pointers past its return. It is thread-safe: with threads == 1 it may be
 * called from several threads at once, and then runs on the calling thread alone (an OpenMP team
 * of one, as the Cython kernel's, is fine), at least for the products the kernel declares as
 * serial-safe when it is registered.
 *
 * Kernels in other extension modules hand their functions over in PyCapsules named
 * GEMMLAB_CAPSULE_F32 / GEMMLAB_CAPSULE_F64 (see gemmlab._cpp.register_kernel).
 */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GEMMLAB_ABI_VERSION 1
#define GEMMLAB_CAPSULE_F32 "gemmlab.gemm_f32.v1"
#define GEMMLAB_CAPSULE_F64 "gemmlab.gemm_f64.v1"

enum gemmlab_status {
  GEMMLAB_OK = 0,
  GEMMLAB_BAD_ARGUMENTS = 1, /* the kernel's own checks refused the call */
  GEMMLAB_NO_MEMORY = 2,     /* a packing buffer could not be allocated */
};

typedef int (*gemmlab_gemm_f32)(int64_t batch, int64_t m, int64_t n, int64_t k, const float* a, int64_t a_bs,
                                int64_t a_rs, int64_t a_cs, const float* b, int64_t b_bs, int64_t b_rs, int64_t b_cs,
                                float* c, int64_t c_bs, int64_t c_rs, int64_t c_cs, int32_t threads);

typedef int (*gemmlab_gemm_f64)(int64_t batch, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_bs,
                                int64_t a_rs, int64_t a_cs, const double* b, int64_t b_bs, int64_t b_rs, int64_t b_cs,
                                double* c, int64_t c_bs, int64_t c_rs, int64_t c_cs, int32_t threads);

/* Optional: a message saying why the calling thread's last call failed (it may return NULL). */
typedef const char* (*gemmlab_last_error)(void);

#ifdef __cplusplus
}
#endif
