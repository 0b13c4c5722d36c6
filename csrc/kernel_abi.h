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
 * Scratch memory comes from the caller: `workspace` is `workspace_bytes` long (what the kernel asked
 * for when it was registered; NULL and 0 if it asked for none), 4096-byte aligned, used by this call
 * alone and valid for the call only. The core keeps one per calling thread and hands the same one back
 * on every call, so its pages are touched once: a kernel that allocated its packing buffers afresh on
 * every call paid a page fault per 4 KiB each time, or not, as the allocator's history in that process
 * decided (the float64 1024 cube took 18 or 34 ms by process). A kernel that needs more than it got
 * for some call allocates the rest itself.
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

#define GEMMLAB_ABI_VERSION 2
#define GEMMLAB_CAPSULE_F32 "gemmlab.gemm_f32.v2"
#define GEMMLAB_CAPSULE_F64 "gemmlab.gemm_f64.v2"

enum gemmlab_status {
  GEMMLAB_OK = 0,
  GEMMLAB_BAD_ARGUMENTS = 1, /* the kernel's own checks refused the call */
  GEMMLAB_NO_MEMORY = 2,     /* a packing buffer could not be allocated */
};

typedef int (*gemmlab_gemm_f32)(int64_t batch, int64_t m, int64_t n, int64_t k, const float* a, int64_t a_bs,
                                int64_t a_rs, int64_t a_cs, const float* b, int64_t b_bs, int64_t b_rs, int64_t b_cs,
                                float* c, int64_t c_bs, int64_t c_rs, int64_t c_cs, int32_t threads, void* workspace,
                                int64_t workspace_bytes);

typedef int (*gemmlab_gemm_f64)(int64_t batch, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_bs,
                                int64_t a_rs, int64_t a_cs, const double* b, int64_t b_bs, int64_t b_rs, int64_t b_cs,
                                double* c, int64_t c_bs, int64_t c_rs, int64_t c_cs, int32_t threads, void* workspace,
                                int64_t workspace_bytes);

/* Optional: a message saying why the calling thread's last call failed (it may return NULL). */
typedef const char* (*gemmlab_last_error)(void);

#ifdef __cplusplus
}
#endif
