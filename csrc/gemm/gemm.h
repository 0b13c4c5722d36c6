// gemmlab's BLIS-structured GEMM: C = A @ B for float32/float64 matrices of any strides.
//
// Pieces: cpu_path (run-time ISA choice), pack.h + pack_simd.inc (packing A/B blocks),
// ukernel_* + ukernel_simd.inc (register-blocked micro-kernels and the small-product kernel:
// AVX-512, AVX2+FMA, portable), cpu_caches (this CPU's cache sizes), blocking.h (MR/NR per path,
// KC/MC/NC derived from the caches), five_loops.h (the loops around the micro-kernel), gemm.cpp
// (the in-place path, thread partitioning, per-ISA entry points), and peak (the machine's FMA
// throughput, measured).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu_path.h"
#include "operands.h"

namespace gemmlab {

// C = A @ B with C m x n, A m x k, B k x n (see Operands). Arguments are assumed checked.
// Uses up to `threads` threads (torch.get_num_threads() at the call site) via ATen's
// parallel_for, on the ISA path selected_path() names (raises first if GEMMLAB_CPU is bad).
template <class T>
void gemm(int64_t m, int64_t n, int64_t k, const Operands<T>& op, int threads);

// The same on a path already chosen with selected_path() (which reads the environment: a batch of
// small products reads it once, not once per product).
template <class T>
void gemm_on_path(CpuPath path, int64_t m, int64_t n, int64_t k, const Operands<T>& op, int threads);

// The loop a product takes (see gemm.cpp): "in place" (no packing), "in place, B packed",
// "dot products" (no packing, A's rows and B's columns contiguous) or "packed".
template <class T>
const char* loop_for(CpuPath path, int64_t m, int64_t n, int64_t k, const Operands<T>& op);

// Products with m*n*k at or below this many multiply-adds take the in-place path (on one thread)
// whenever B's and C's rows are contiguous.
constexpr int64_t SMALL_PRODUCT_FMAS = 64 * 64 * 64;
// On AVX-512, larger ones too while A fits in L1, or in L2 and is re-read for at most this many
// strips of columns (measured; see in_place_pays in gemm.cpp).
constexpr double IN_PLACE_A_L1_BYTES = 32 << 10;
constexpr double IN_PLACE_A_L2_BYTES = 512 << 10;
constexpr int64_t IN_PLACE_FEW_STRIPS = 4;
// B whose rows are not contiguous is packed whole first, up to this size.
constexpr double IN_PLACE_PACKED_B_BYTES = 1 << 20;
// The dot-product loop: for rows of at least this many k-steps, m or n at most this short, and the
// smaller operand (re-read from cache) at most this size.
constexpr int64_t DOT_MIN_K = 512;
constexpr int64_t DOT_MAX_SHORT_SIDE = 64;
constexpr double DOT_REREAD_BYTES = 1 << 20;
// The packed path gives each thread at least this many multiply-adds: a fork/join costs a few
// microseconds, about what one core needs for ~1M multiply-adds.
constexpr int64_t FMAS_PER_THREAD = 1 << 20;

// Testing hooks for threads sharing tasks (gemm.cpp): make the thread that owns a product's first
// task sleep this many microseconds before each item it takes (0: never), so that the others take some;
// and how many items threads have taken from others' tasks in this process.
void set_task_sharing_test(int owner_delay_us);
int64_t items_run_by_helpers();

// The register and cache blocking a path uses for one element type now (for tests and tools), and
// the reference cache blocking it was derived from (blocking.h).
struct BlockingInfo {
  int64_t mr, nr, kc, mc, nc, ref_kc, ref_mc, ref_nc;
};
BlockingInfo blocking_info(CpuPath path, bool is_double);

// Diagnostic: the macro-kernel alone (five_loops.h: the micro-kernel over one packed mc x kc block of
// A and one packed kc x nc block of B, adding into an mc x nc C) on synthetic data, one thread; the
// seconds of each of `repeats` passes after an untimed one. scripts/macro_kernel_blocks.py times
// block shapes against each other with it.
std::vector<double> time_macro_kernel(CpuPath path, bool is_double, int64_t kc, int64_t mc, int64_t nc, int repeats);

extern template void gemm<float>(int64_t, int64_t, int64_t, const Operands<float>&, int);
extern template void gemm<double>(int64_t, int64_t, int64_t, const Operands<double>&, int);
extern template void gemm_on_path<float>(CpuPath, int64_t, int64_t, int64_t, const Operands<float>&, int);
extern template void gemm_on_path<double>(CpuPath, int64_t, int64_t, int64_t, const Operands<double>&, int);
extern template const char* loop_for<float>(CpuPath, int64_t, int64_t, int64_t, const Operands<float>&);
extern template const char* loop_for<double>(CpuPath, int64_t, int64_t, int64_t, const Operands<double>&);

}  // namespace gemmlab
