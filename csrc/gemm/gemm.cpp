// gemmlab's GEMM driver: path selection, the small-product path, thread partitioning and the
// per-ISA task entry points around the five loops (five_loops.h).

#include "gemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <new>

#include "blocking.h"
#include "five_loops.h"

namespace gemmlab {
namespace {

// ---- Packing buffers ---------------------------------------------------------------------------
// One pair per thread, grown on demand and kept for the thread's life: allocating (and page-faulting)
// a few MiB on every call would cost more than packing them.
class AlignedBuffer {
 public:
  ~AlignedBuffer() { std::free(ptr_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(ptr_);
      size_ = 0;
      const size_t rounded = (bytes + 4095) / 4096 * 4096;  // aligned_alloc wants a multiple
      ptr_ = std::aligned_alloc(4096, rounded);
      if (ptr_ == nullptr) throw std::bad_alloc();
      size_ = rounded;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

thread_local AlignedBuffer tls_pack_a, tls_pack_b;

// ---- One task, compiled per ISA ----------------------------------------------------------------
// A task is a rectangle of C: rows [m0, m1), columns [n0, n1), all of K.
template <class T>
struct Task {
  int64_t m0, m1, n0, n1;
};

template <class P>
void run_task(const Operands<typename P::T>& op, const Task<typename P::T>& t, int64_t k) {
  using T = typename P::T;
  T* pa = static_cast<T*>(tls_pack_a.get(sizeof(T) * pack_a_size<P>()));
  T* pb = static_cast<T*>(tls_pack_b.get(sizeof(T) * pack_b_size<P>(t.n1 - t.n0, k)));
  gemm_task<P>(op, t.m0, t.m1, t.n0, t.n1, k, pa, pb);
}

// `flatten` inlines the loops and the packing into these entry points, so they are compiled for
// the entry point's ISA (the micro-kernels themselves are noinline and carry their own target).
template <class T>
__attribute__((flatten)) void task_generic(const Operands<T>& op, const Task<T>& t, int64_t k) {
  run_task<GenericPath<T>>(op, t, k);
}
#ifdef GEMMLAB_HAVE_X86
template <class T>
GEMMLAB_TARGET_AVX2 __attribute__((flatten)) void task_avx2(const Operands<T>& op, const Task<T>& t, int64_t k) {
  run_task<Avx2Path<T>>(op, t, k);
}
template <class T>
GEMMLAB_TARGET_AVX512 __attribute__((flatten)) void task_avx512(const Operands<T>& op, const Task<T>& t, int64_t k) {
  run_task<Avx512Path<T>>(op, t, k);
}
#endif

// ---- Small products ----------------------------------------------------------------------------
// No packing, no threads: the kernel reads A and B where they are. Needs B's and C's rows
// contiguous (unit column stride), which is what the small layers of a network give. Any other
// small product takes the packed path on one thread: its SIMD transposing pack beat a scalar copy
// of B into row-major order (measured: 64^3 with B = W.T, 4.9 vs 7.0 us).
template <class P, class T>
void small_simd(int64_t m, int64_t n, int64_t k, const Operands<T>& op) {
  constexpr int L = P::Simd::L;
  constexpr int W = P::SMALL_VECTORS * L;
  for (int64_t j0 = 0; j0 < n; j0 += W) {
    const int ncols = static_cast<int>(std::min<int64_t>(W, n - j0));
    const int nv = static_cast<int>(ceil_div(ncols, L));
    for (int64_t i0 = 0; i0 < m; i0 += P::SMALL_ROWS) {
      const int rows = static_cast<int>(std::min<int64_t>(P::SMALL_ROWS, m - i0));
      P::small[rows - 1][nv - 1](k, op.a + i0 * op.ars, op.ars, op.acs, op.b + j0, op.brs, op.c + i0 * op.crs + j0,
                                 op.crs, ncols);
    }
  }
}

template <class T>
void small_product(CpuPath path, int64_t m, int64_t n, int64_t k, const Operands<T>& op) {
  switch (path) {
#ifdef GEMMLAB_HAVE_X86
    case CpuPath::avx512: return small_simd<Avx512Path<T>>(m, n, k, op);
    case CpuPath::avx2: return small_simd<Avx2Path<T>>(m, n, k, op);
#endif
    default: return generic::small_gemm(m, n, k, op.a, op.ars, op.acs, op.b, op.brs, op.c, op.crs);
  }
}

// ---- Thread partitioning -----------------------------------------------------------------------
// Split C into a tm x tn grid of tasks, one per thread. Each task packs its own share of A and all
// the B columns it needs (and vice versa), so a split along M re-packs B tm times and a split along
// N re-packs A tn times. Pick the grid with the least re-packing; a transposing pack (the operand's
// layout is the opposite of the packed one) counts double because it is the slower copy. K is
// never split: that keeps every element's summation order, and so the result, independent of the
// thread count.
struct Grid {
  int tm = 1, tn = 1;
};

template <class P>
Grid choose_grid(int64_t m, int64_t n, int64_t k, const Operands<typename P::T>& op, int threads) {
  const double fmas = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  int useful = static_cast<int>(std::min<double>(threads, std::max(1.0, fmas / FMAS_PER_THREAD)));
  const int64_t m_panels = ceil_div(m, P::MR), n_panels = ceil_div(n, P::NR);
  const double cost_a = op.ars == 1 ? 1.0 : 2.0;  // packed A is column-ordered within a panel
  const double cost_b = op.bcs == 1 ? 1.0 : 2.0;  // packed B is row-ordered within a panel
  for (int total = std::max(1, useful); total > 1; --total) {
    Grid best;
    double best_cost = -1;
    for (int tm = 1; tm <= total; ++tm) {
      if (total % tm != 0) continue;
      const int tn = total / tm;
      if (tm > m_panels || tn > n_panels) continue;
      const double cost = tm * static_cast<double>(k) * n * cost_b + tn * static_cast<double>(m) * k * cost_a;
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best = {tm, tn};
      }
    }
    if (best_cost >= 0) return best;
  }
  return {};
}

// Part `i` of `parts` of [0, extent), cut on multiples of `unit` (whole micro-panels).
inline void split(int64_t extent, int unit, int parts, int i, int64_t* begin, int64_t* end) {
  const int64_t panels = ceil_div(extent, unit);
  *begin = std::min(extent, panels * i / parts * unit);
  *end = std::min(extent, panels * (i + 1) / parts * unit);
}

template <class P>
void packed_product(void (*task)(const Operands<typename P::T>&, const Task<typename P::T>&, int64_t), int64_t m,
                    int64_t n, int64_t k, const Operands<typename P::T>& op, int threads) {
  using T = typename P::T;
  const Grid grid = choose_grid<P>(m, n, k, op, threads);
  const int tasks = grid.tm * grid.tn;
  auto run = [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      Task<T> task_rect;
      split(m, P::MR, grid.tm, static_cast<int>(t / grid.tn), &task_rect.m0, &task_rect.m1);
      split(n, P::NR, grid.tn, static_cast<int>(t % grid.tn), &task_rect.n0, &task_rect.n1);
      if (task_rect.m0 < task_rect.m1 && task_rect.n0 < task_rect.n1) task(op, task_rect, k);
    }
  };
  if (tasks == 1) {
    run(0, 1);  // no parallel region at all: a single-thread call costs no fork/join
  } else {
    at::parallel_for(0, tasks, 1, run);
  }
}

}  // namespace

template <class T>
void gemm(int64_t m, int64_t n, int64_t k, const Operands<T>& op, int threads) {
  gemm_on_path(selected_path(), m, n, k, op, threads);  // a bad GEMMLAB_CPU raises before touching anything
}

template <class T>
void gemm_on_path(CpuPath path, int64_t m, int64_t n, int64_t k, const Operands<T>& op, int threads) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: C = 0
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) op.c[i * op.crs + j * op.ccs] = T(0);
    return;
  }
  const double fmas = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (fmas <= SMALL_PRODUCT_FMAS && op.bcs == 1 && op.ccs == 1) return small_product(path, m, n, k, op);
  switch (path) {
#ifdef GEMMLAB_HAVE_X86
    case CpuPath::avx512: return packed_product<Avx512Path<T>>(&task_avx512<T>, m, n, k, op, threads);
    case CpuPath::avx2: return packed_product<Avx2Path<T>>(&task_avx2<T>, m, n, k, op, threads);
#endif
    default: return packed_product<GenericPath<T>>(&task_generic<T>, m, n, k, op, threads);
  }
}

namespace {
template <class P>
BlockingInfo info() {
  return {P::MR, P::NR, P::KC, P::MC, P::NC};
}
template <class T>
BlockingInfo info_for(CpuPath path) {
  switch (path) {
#ifdef GEMMLAB_HAVE_X86
    case CpuPath::avx512: return info<Avx512Path<T>>();
    case CpuPath::avx2: return info<Avx2Path<T>>();
#endif
    default: return info<GenericPath<T>>();
  }
}
}  // namespace

BlockingInfo blocking_info(CpuPath path, bool is_double) {
  return is_double ? info_for<double>(path) : info_for<float>(path);
}

template void gemm<float>(int64_t, int64_t, int64_t, const Operands<float>&, int);
template void gemm<double>(int64_t, int64_t, int64_t, const Operands<double>&, int);
template void gemm_on_path<float>(CpuPath, int64_t, int64_t, int64_t, const Operands<float>&, int);
template void gemm_on_path<double>(CpuPath, int64_t, int64_t, int64_t, const Operands<double>&, int);

}  // namespace gemmlab
