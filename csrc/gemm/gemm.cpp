// gemmlab's GEMM driver: path selection, the in-place path, thread partitioning and the
// per-ISA task entry points around the five loops (five_loops.h).

#include "gemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <type_traits>
#include <vector>

#include "aligned_buffer.h"
#include "blocking.h"
#include "five_loops.h"

namespace gemmlab {
namespace {

// ---- Packing buffers: one pair per thread, kept for the thread's life ---------------------------
thread_local AlignedBuffer tls_pack_a, tls_pack_b;

// ---- One task, compiled per ISA ----------------------------------------------------------------
// A task is a rectangle of C: rows [m0, m1), columns [n0, n1), all of K.
template <class T>
struct Task {
  int64_t m0, m1, n0, n1;
};

// ---- Threads sharing their tasks ----------------------------------------------------------------
// The threads of a product do not run at equal speeds (the development VM's two vCPUs measured up to
// 20% apart), and with one fixed task each the faster one waited for the slower: 8.5-9.2% of the CPU
// time of a 2-thread 1024^3 product (scripts/profile_kernel.py; MKL's threads waited 0.4%). So a
// thread that has run its own task runs items (row blocks, five_loops.h) of another task's open
// phase: it packs their A blocks into its own buffer and reads the B block the owner packed.
//
// A task's board says which items are free. `claim` holds the open phase (counted from 1; 0 before
// the first) in its high half and the next free item in its low half, and whoever takes an item adds
// one to it. The owner opens a phase by storing (phase, 0) once its B block is packed, and packs the
// next one only when the items others took from it have all been run (`taken_done`). Only owners
// wait, and only for items that are being run, so no thread waits for one that is waiting.
struct alignas(64) TaskBoard {
  std::atomic<uint64_t> claim{0};
  std::atomic<int64_t> taken_done{0};  // items of this task run by other threads, all phases
  const void* packed_b = nullptr;      // the owner's B buffer: set before the first phase opens
};
constexpr int PHASE_SHIFT = 32;
constexpr uint64_t ITEM_MASK = (uint64_t(1) << PHASE_SHIFT) - 1, FINISHED_PHASE = ITEM_MASK;

// Testing hook (set_task_sharing_test): the owner of task 0 sleeps this long before each item it
// takes, and before its first until another thread has run one (a second at most: a product may run
// on one thread); helpers wait for owners to begin. So other threads take some items however late
// their threads start. And the items taken from others so far.
std::atomic<int> owner_delay_us{0};
std::atomic<int64_t> items_taken{0};

void wait_for_a_helper(const TaskBoard& board) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (board.taken_done.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
}

// A spinning wait's step: a pause instruction, or a yield after a while (more threads than cores).
// Not inlined, so that a profile tells waiting from work (scripts/profile_kernel.py counts it as
// thread runtime).
__attribute__((noinline)) void wait_for_others(int* spins) {
#ifdef GEMMLAB_HAVE_X86
  if (++*spins < 1000) return _mm_pause();
#endif
  std::this_thread::yield();
}

template <class P>
void run_own_task(const TaskLoops<P>& loops, TaskBoard& board, int delay_us) {
  using T = typename P::T;
  T* pa = static_cast<T*>(tls_pack_a.get(sizeof(T) * loops.pack_a_elements()));
  T* pb = static_cast<T*>(tls_pack_b.get(sizeof(T) * loops.pack_b_elements()));
  board.packed_b = pb;
  const int64_t items = loops.items();
  int64_t own = 0;
  for (int64_t phase = 0; phase < loops.phases(); ++phase) {
    loops.pack_phase(phase, pb);
    board.claim.store(uint64_t(phase + 1) << PHASE_SHIFT, std::memory_order_release);
    if (phase == 0 && delay_us > 0) wait_for_a_helper(board);
    for (;;) {
      if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
      const int64_t item = static_cast<int64_t>(board.claim.fetch_add(1, std::memory_order_relaxed) & ITEM_MASK);
      if (item >= items) break;
      loops.run_item(phase, item, pa, pb);
      ++own;
    }
    for (int spins = 0; own + board.taken_done.load(std::memory_order_acquire) < (phase + 1) * items;)
      wait_for_others(&spins);
  }
  board.claim.store(FINISHED_PHASE << PHASE_SHIFT, std::memory_order_release);
}

// Runs free items of another thread's task until its last phase has none left; returns at once if its
// owner has not begun it (that thread will run it all), except under the testing hook, where it waits
// for the owner to begin: whether the owner's thread started first must not decide whether a test
// sees sharing.
template <class P>
void help_with_task(const TaskLoops<P>& loops, TaskBoard& board) {
  using T = typename P::T;
  T* pa = static_cast<T*>(tls_pack_a.get(sizeof(T) * loops.pack_a_elements()));
  const uint64_t items = static_cast<uint64_t>(loops.items()), last_phase = static_cast<uint64_t>(loops.phases());
  for (int spins = 0;;) {
    uint64_t seen = board.claim.load(std::memory_order_acquire);
    if (seen >> PHASE_SHIFT == FINISHED_PHASE) return;
    if (seen >> PHASE_SHIFT == 0) {  // not begun: its owner will run it all, unless a test wants it shared
      if (owner_delay_us.load(std::memory_order_relaxed) == 0) return;
      wait_for_others(&spins);
      continue;
    }
    if ((seen & ITEM_MASK) >= items) {  // the phase's items are all taken: wait for the next phase
      if (seen >> PHASE_SHIFT == last_phase) return;
      wait_for_others(&spins);
      continue;
    }
    const uint64_t taken = board.claim.fetch_add(1, std::memory_order_acq_rel);
    const uint64_t phase = taken >> PHASE_SHIFT, item = taken & ITEM_MASK;
    if (phase == 0 || phase == FINISHED_PHASE || item >= items) continue;
    loops.run_item(static_cast<int64_t>(phase - 1), static_cast<int64_t>(item), pa,
                   static_cast<const T*>(board.packed_b));
    board.taken_done.fetch_add(1, std::memory_order_release);
    items_taken.fetch_add(1, std::memory_order_relaxed);
  }
}

template <class P>
void run_task(const Operands<typename P::T>& op, const Task<typename P::T>& t, int64_t k, const CacheBlocks& cb) {
  using T = typename P::T;
  const TaskLoops<P> loops(op, t.m0, t.m1, t.n0, t.n1, k, cb);  // its buffers serve the B-in-place loop too
  T* pa = static_cast<T*>(tls_pack_a.get(sizeof(T) * loops.pack_a_elements()));
  T* pb = static_cast<T*>(tls_pack_b.get(sizeof(T) * loops.pack_b_elements()));
  gemm_task<P>(op, t.m0, t.m1, t.n0, t.n1, k, pa, pb, cb);
}

// The entry points of path P, compiled for its ISA: `flatten` inlines the loops and the packing into
// them (the micro-kernels themselves are noinline and carry their own target). `task` runs one task
// of the packed path alone; `own_task` and `help` run a shared one (see TaskBoard); `pack_whole_b`
// packs all of B for the in-place loop (in_place_with_packed_b).
#define GEMMLAB_TASK_ENTRIES(TARGET, PATH)                                                                    \
  TARGET __attribute__((flatten)) static void task(const Operands<T>& op, const Task<T>& t, int64_t k,        \
                                                   const CacheBlocks& cb) {                                   \
    run_task<PATH>(op, t, k, cb);                                                                             \
  }                                                                                                           \
  TARGET __attribute__((flatten)) static void own_task(const TaskLoops<PATH>& loops, TaskBoard& board,       \
                                                       int delay_us) {                                        \
    run_own_task<PATH>(loops, board, delay_us);                                                               \
  }                                                                                                           \
  TARGET __attribute__((flatten)) static void help(const TaskLoops<PATH>& loops, TaskBoard& board) {          \
    help_with_task<PATH>(loops, board);                                                                       \
  }
template <class P>
struct Compiled;
template <class T>
struct Compiled<GenericPath<T>> {
  GEMMLAB_TASK_ENTRIES(, GenericPath<T>)
};
#ifdef GEMMLAB_HAVE_X86
template <class T>
struct Compiled<Avx2Path<T>> {
  GEMMLAB_TASK_ENTRIES(GEMMLAB_TARGET_AVX2, Avx2Path<T>)
};
template <class T>
struct Compiled<Avx512Path<T>> {
  GEMMLAB_TASK_ENTRIES(GEMMLAB_TARGET_AVX512, Avx512Path<T>)
  GEMMLAB_TARGET_AVX512 __attribute__((flatten)) static void pack_whole_b(int64_t k, int64_t n, const Operands<T>& op,
                                                                           T* dst) {
    pack_b<T, Avx512Path<T>::NR, typename Avx512Path<T>::Transpose>(k, n, op.b, op.brs, op.bcs, dst);
  }
};
#endif
#undef GEMMLAB_TASK_ENTRIES

// ---- The in-place path --------------------------------------------------------------------------
// No packing: the small kernel reads A and B where they are (B's and C's rows must be contiguous,
// which is what a network's layers give), one tile of up to SMALL_ROWS rows x one strip of
// SMALL_VECTORS vectors at a time, strips outer so a strip of B stays in cache for every row tile.
// Row tiles are of equal height (64 rows: 13+13+13+13+12, not 14+14+14+14+8) so that no tile runs
// short of accumulators. Any other layout takes the packed path: its SIMD transposing pack beat a
// scalar copy of B into row-major order (measured: 64^3 with B = W.T, 4.9 vs 7.0 us).
//
// B as the in-place loop reads it: strip s (columns s*W .. s*W+W-1) at b + s*strip_stride, its
// k-step p at + p*brs, columns contiguous; a thread's share of the columns starts at a multiple of
// column_unit. The caller's row-major B (caller_strips): strip_stride = W, and any whole vector may
// start a share. B packed into NR-wide panels (NR = W): strip_stride = k*NR, brs = NR, whole panels.
template <class T>
struct Strips {
  const T* b;
  int64_t brs, strip_stride;
  int column_unit;
};

template <class P>
Strips<typename P::T> caller_strips(const Operands<typename P::T>& op) {
  return {op.b, op.brs, P::SMALL_VECTORS * P::Simd::L, P::Simd::L};
}

template <class P, class T>
void in_place_block(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k, const Operands<T>& op,
                    const Strips<T>& b) {
  constexpr int L = P::Simd::L;
  constexpr int W = P::SMALL_VECTORS * L;
  const int64_t m = m1 - m0;
  const int64_t tile_rows = ceil_div(m, ceil_div(m, int64_t(P::SMALL_ROWS)));
  for (int64_t j0 = n0; j0 < n1; j0 += W) {
    const int ncols = static_cast<int>(std::min<int64_t>(W, n1 - j0));
    const int nv = static_cast<int>(ceil_div(ncols, L));
    const T* strip = b.b + j0 / W * b.strip_stride + j0 % W;
    for (int64_t i0 = m0; i0 < m1; i0 += tile_rows) {
      const int rows = static_cast<int>(std::min<int64_t>(tile_rows, m1 - i0));
      P::small[rows - 1][nv - 1](k, op.a + i0 * op.ars, op.ars, op.acs, strip, b.brs, op.c + i0 * op.crs + j0, op.crs,
                                 ncols);
    }
  }
}

int useful_threads(int64_t m, int64_t n, int64_t k, int threads) {
  const double fmas = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  return static_cast<int>(std::min<double>(threads, std::max(1.0, fmas / FMAS_PER_THREAD)));
}

// Part `i` of `parts` of [0, extent), cut on multiples of `unit` (whole micro-panels or vectors).
inline void split(int64_t extent, int unit, int parts, int i, int64_t* begin, int64_t* end) {
  const int64_t panels = ceil_div(extent, unit);
  *begin = std::min(extent, panels * i / parts * unit);
  *end = std::min(extent, panels * (i + 1) / parts * unit);
}

// How the in-place and dot-product loops share C among threads: bands of rows, cut on multiples of
// row_unit, while every thread gets at least min_rows of them; else bands of columns, cut on
// multiples of column_unit.
struct Shares {
  int64_t min_rows;
  int row_unit, column_unit;
};

// Runs block(m0, m1, n0, n1) on every share of C (m x n), one share per useful thread.
template <class Block>
void share_among_threads(int64_t m, int64_t n, int64_t k, int threads, const Shares& shares, const Block& block) {
  const int parts = useful_threads(m, n, k, threads);
  if (parts == 1) return block(0, m, 0, n);
  const bool by_rows = m >= parts * shares.min_rows;
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      int64_t begin, end;
      split(by_rows ? m : n, by_rows ? shares.row_unit : shares.column_unit, parts, static_cast<int>(t), &begin, &end);
      if (begin == end) continue;
      by_rows ? block(begin, end, 0, n) : block(0, m, begin, end);
    }
  });
}

// Threads take rows while each gets at least a tile's worth, else columns (see Strips).
template <class P, class T>
void in_place_product(int64_t m, int64_t n, int64_t k, const Operands<T>& op, const Strips<T>& b, int threads) {
  const Shares shares{/*min_rows=*/P::SMALL_ROWS, /*row_unit=*/1, /*column_unit=*/b.column_unit};
  share_among_threads(m, n, k, threads, shares, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    in_place_block<P>(m0, m1, n0, n1, k, op, b);
  });
}

// B whose rows are not contiguous (a layer's x @ W.T) is packed whole, once, into NR-wide panels,
// which are the in-place loop's strips; A is still read in place. Packing only B halves the copying
// of the packed path on a layer's products (64x784 @ (50x784).T: A is 64x784, B 784x50).
template <class P>
void in_place_with_packed_b(int64_t m, int64_t n, int64_t k, const Operands<typename P::T>& op, int threads) {
  using T = typename P::T;
  static_assert(P::NR == P::SMALL_VECTORS * P::Simd::L, "a packed panel must be one in-place strip");
  T* pb = static_cast<T*>(tls_pack_b.get(sizeof(T) * round_up(n, P::NR) * k));
  Compiled<P>::pack_whole_b(k, n, op, pb);
  in_place_product<P>(m, n, k, op, Strips<T>{pb, P::NR, k * P::NR, P::NR}, threads);
}

// ---- The dot-product path -----------------------------------------------------------------------
// A's rows and B's columns contiguous along k (x @ W.T, a layer's forward product): each output a
// dot product of the two (see dot_kernel), nothing packed or transposed. The smaller operand is
// the one re-read from cache: columns outer when A is smaller (a group of DOT_COLS columns of B
// meets every row group of A), rows outer otherwise (a group of DOT_ROWS rows of A, in L1, meets
// every column group of B, and A streams from memory once).
template <class P, class T>
void dot_block(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k, const Operands<T>& op) {
  auto tile = [&](int64_t i0, int64_t j0, const T* prefetch_row) {
    const int rows = static_cast<int>(std::min<int64_t>(P::DOT_ROWS, m1 - i0));
    const int cols = static_cast<int>(std::min<int64_t>(P::DOT_COLS, n1 - j0));
    P::dot[rows - 1][cols - 1](k, op.a + i0 * op.ars, op.ars, op.b + j0 * op.bcs, op.bcs,
                               op.c + i0 * op.crs + j0 * op.ccs, op.crs, op.ccs, prefetch_row);
  };
  if (m1 - m0 <= n1 - n0) {
    for (int64_t j0 = n0; j0 < n1; j0 += P::DOT_COLS)
      for (int64_t i0 = m0; i0 < m1; i0 += P::DOT_ROWS) tile(i0, j0, nullptr);
  } else {
    // A streams from memory once, and the hardware prefetchers idle while a row group is re-read
    // from L1. Where this thread's rows of A do not fit in L2, the tiles of a row group prefetch
    // the next group's rows into L2, one row per tile, spread evenly over the tiles (with fewer
    // tiles than rows, some rows are left to the hardware).
    const bool prefetch = static_cast<double>(m1 - m0) * static_cast<double>(op.ars) * sizeof(T) > cache_sizes().l2;
    const int64_t groups = ceil_div(n1 - n0, int64_t(P::DOT_COLS));
    for (int64_t i0 = m0; i0 < m1; i0 += P::DOT_ROWS) {
      const int64_t next = i0 + P::DOT_ROWS, next_rows = std::min<int64_t>(P::DOT_ROWS, m1 - next);
      for (int64_t g = 0; g < groups; ++g) {
        // tile g takes row `first` of the next group when no earlier tile took it
        const int64_t first = ceil_div(g * P::DOT_ROWS, groups);
        const bool takes = prefetch && first < next_rows && first < ceil_div((g + 1) * P::DOT_ROWS, groups);
        tile(i0, n0 + g * P::DOT_COLS, takes ? op.a + (next + first) * op.ars : nullptr);
      }
    }
  }
}

// Threads take whole row groups while each gets a few groups, else whole column groups.
template <class P, class T>
void dot_product(int64_t m, int64_t n, int64_t k, const Operands<T>& op, int threads) {
  const Shares shares{/*min_rows=*/4 * P::DOT_ROWS, /*row_unit=*/P::DOT_ROWS, /*column_unit=*/P::DOT_COLS};
  share_among_threads(m, n, k, threads, shares, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    dot_block<P>(m0, m1, n0, n1, k, op);
  });
}

enum class InPlace { no, yes, after_packing_b, dot_products };  // the loop a product takes

// Whether the in-place path beats packing. It re-reads A once per strip of columns and each strip
// of B once per row tile, from cache. Measured on the AVX-512 Xeon, one thread: it wins while A
// fits in L1 (50x64 @ 64x784: 148 vs 135 GFLOP/s), or fits in L2 and is re-read for a few strips
// only (64x784 @ 784x50: 113 vs 86; 64x1024 @ 1024x64: 145 vs 120), and loses where a large A is
// re-read often (256^3: 144 vs 165; 1024x64 @ 64x1024: 124 vs 161). The portable path and AVX2
// keep it for small products only (not measured beyond them).
template <class P, class T>
InPlace in_place_pays(int64_t m, int64_t n, int64_t k, const Operands<T>& op) {
  if (op.ccs != 1) return InPlace::no;
  const double fmas = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (op.bcs == 1 && fmas <= SMALL_PRODUCT_FMAS) return InPlace::yes;
  if constexpr (!P::UNPACKED_MEDIUM) {
    return InPlace::no;
  } else {
    const double a_bytes = static_cast<double>(m) * static_cast<double>(k) * sizeof(T);
    const int64_t strips = ceil_div(n, int64_t(P::SMALL_VECTORS) * P::Simd::L);
    const bool a_fits = a_bytes <= IN_PLACE_A_L1_BYTES || (strips <= IN_PLACE_FEW_STRIPS && a_bytes <= IN_PLACE_A_L2_BYTES);
    // Dot products: one horizontal sum per output, paid for by long rows (k >= DOT_MIN_K: 64x784 @
    // (50x784).T 29 vs 52 us packed; 128x256 @ (128x256).T 75 vs 59), and no packing, which pays
    // where one side is short (512x784x50: 269 vs 396 us; 2048x512x128: 2087 vs 1832); the smaller
    // operand is re-read from cache.
    const double b_bytes = static_cast<double>(n) * static_cast<double>(k) * sizeof(T);
    if (op.acs == 1 && op.brs == 1 && k >= DOT_MIN_K && std::min(m, n) <= DOT_MAX_SHORT_SIDE &&
        std::min(a_bytes, b_bytes) <= DOT_REREAD_BYTES) {
      return InPlace::dot_products;
    }
    if (!a_fits) return InPlace::no;
    if (op.bcs == 1) return InPlace::yes;
    // Packing B first paid for one or two strips (64x784 @ (50x784).T: 51 vs 54 us) or an A in
    // L1, and lost at four strips of an A in L2 (128x256 @ (128x256).T: 63 vs 58 us).
    if (strips > 2 && a_bytes > IN_PLACE_A_L1_BYTES) return InPlace::no;
    const double packed_b_bytes = static_cast<double>(round_up(n, P::NR)) * static_cast<double>(k) * sizeof(T);
    return packed_b_bytes <= IN_PLACE_PACKED_B_BYTES ? InPlace::after_packing_b : InPlace::no;
  }
}

// ---- Thread partitioning -----------------------------------------------------------------------
// Split C into a tm x tn grid of tasks, one per thread (shared at the end: TaskBoard). Each task
// packs its own share of A and all the B columns it needs (and vice versa), so a split along M
// re-packs B tm times and a split along N re-packs A tn times. Pick the grid with the least
// re-packing, and of equal ones the split along N. (Counting a transposing pack double, as this once did, split row-major squares along M, which
// measured slower on the 2-thread Xeon: N over M 1.02-1.05x at 512^3-1024^3 float32 and float64,
// 1.03-1.27x at 4096^3, equal at 2048^3; threads sharing one packed B, BLIS-style, gained nothing
// over either.) K is never split: that keeps every element's summation order, and so the result,
// independent of the thread count.
struct Grid {
  int tm = 1, tn = 1;
};

template <class P>
Grid choose_grid(int64_t m, int64_t n, int64_t k, int threads) {
  const int useful = useful_threads(m, n, k, threads);
  const int64_t m_panels = ceil_div(m, P::MR), n_panels = ceil_div(n, P::NR);
  for (int total = std::max(1, useful); total > 1; --total) {
    Grid best;
    double best_cost = -1;
    for (int tm = 1; tm <= total; ++tm) {
      if (total % tm != 0) continue;
      const int tn = total / tm;
      if (tm > m_panels || tn > n_panels) continue;
      const double cost = tm * static_cast<double>(k) * n + tn * static_cast<double>(m) * k;
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best = {tm, tn};
      }
    }
    if (best_cost >= 0) return best;
  }
  return {};
}

template <class P>
void packed_product(int64_t m, int64_t n, int64_t k, const Operands<typename P::T>& op, int threads) {
  using T = typename P::T;
  const CacheBlocks cb = derive_blocks<P>(cache_sizes());  // a few integer operations on sizes read once
  const Grid grid = choose_grid<P>(m, n, k, threads);
  const int tasks = grid.tm * grid.tn;
  auto task_rect = [&](int t) {
    Task<T> rect;
    split(m, P::MR, grid.tm, t / grid.tn, &rect.m0, &rect.m1);
    split(n, P::NR, grid.tn, t % grid.tn, &rect.n0, &rect.n1);
    return rect;
  };
  if (tasks == 1) return Compiled<P>::task(op, task_rect(0), k, cb);  // no parallel region: no fork/join
  std::vector<TaskBoard> boards(tasks);
  auto loops_of = [&](int t) {
    const Task<T> r = task_rect(t);
    return TaskLoops<P>(op, r.m0, r.m1, r.n0, r.n1, k, cb);
  };
  auto shared = [&](int t) {  // a task of one row block (b_in_place) has nothing to share
    const Task<T> r = task_rect(t);
    return r.m0 < r.m1 && r.n0 < r.n1 && !b_in_place<P>(op, r.m1 - r.m0, cb);
  };
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    for (int t = static_cast<int>(first); t < last; ++t) {
      if (shared(t)) {
        Compiled<P>::own_task(loops_of(t), boards[t], t == 0 ? owner_delay_us.load(std::memory_order_relaxed) : 0);
      } else {
        const Task<T> r = task_rect(t);
        if (r.m0 < r.m1 && r.n0 < r.n1) Compiled<P>::task(op, r, k, cb);
      }
    }
    for (int d = 1; d < tasks; ++d) {  // then the others' tasks, the next one first
      const int t = static_cast<int>((last - 1 + d) % tasks);
      if ((t < first || t >= last) && shared(t)) Compiled<P>::help(loops_of(t), boards[t]);
    }
  });
}

// C = A @ B on path P: the loop in_place_pays picks.
template <class P>
void product(int64_t m, int64_t n, int64_t k, const Operands<typename P::T>& op, int threads) {
  using T = typename P::T;
  const InPlace loop = in_place_pays<P>(m, n, k, op);
  if constexpr (P::UNPACKED_MEDIUM) {  // only such a path picks these two
    if (loop == InPlace::after_packing_b) return in_place_with_packed_b<P>(m, n, k, op, threads);
    if (loop == InPlace::dot_products) return dot_product<P>(m, n, k, op, threads);
  }
  if (loop == InPlace::yes) {
    if constexpr (std::is_same_v<P, GenericPath<T>>) {  // no SIMD small kernels: plain loops, one thread
      return generic::small_gemm(m, n, k, op.a, op.ars, op.acs, op.b, op.brs, op.c, op.crs);
    } else {
      return in_place_product<P>(m, n, k, op, caller_strips<P>(op), threads);
    }
  }
  packed_product<P>(m, n, k, op, threads);
}

// The one switch on the ISA path: f(P{}), P the path's type (blocking.h) for element type T.
template <class T, class F>
auto on_path(CpuPath path, const F& f) {
  switch (path) {
#ifdef GEMMLAB_HAVE_X86
    case CpuPath::avx512: return f(Avx512Path<T>{});
    case CpuPath::avx2: return f(Avx2Path<T>{});
#endif
    default: return f(GenericPath<T>{});
  }
}

}  // namespace

void set_task_sharing_test(int owner_delay_us_) { owner_delay_us.store(owner_delay_us_); }
int64_t items_run_by_helpers() { return items_taken.load(); }

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
  on_path<T>(path, [&](auto p) { product<decltype(p)>(m, n, k, op, threads); });
}

template <class T>
const char* loop_for(CpuPath path, int64_t m, int64_t n, int64_t k, const Operands<T>& op) {
  switch (on_path<T>(path, [&](auto p) { return in_place_pays<decltype(p)>(m, n, k, op); })) {
    case InPlace::yes: return "in place";
    case InPlace::after_packing_b: return "in place, B packed";
    case InPlace::dot_products: return "dot products";
    default: return "packed";
  }
}

namespace {
template <class P>
BlockingInfo info() {
  const CacheBlocks cb = derive_blocks<P>(cache_sizes());
  return {P::MR, P::NR, cb.kc, cb.mc, cb.nc, P::REF_KC, P::REF_MC, P::REF_NC};
}
}  // namespace

BlockingInfo blocking_info(CpuPath path, bool is_double) {
  auto of = [](auto p) { return info<decltype(p)>(); };
  return is_double ? on_path<double>(path, of) : on_path<float>(path, of);
}

namespace {
template <class P>
std::vector<double> time_macro_kernel_on(int64_t kc, int64_t mc, int64_t nc, int repeats) {
  using T = typename P::T;
  AlignedBuffer a_buffer, b_buffer, c_buffer;
  const int64_t a_size = round_up(mc, P::MR) * kc, b_size = kc * round_up(nc, P::NR);
  T* pa = static_cast<T*>(a_buffer.get(sizeof(T) * a_size));
  T* pb = static_cast<T*>(b_buffer.get(sizeof(T) * b_size));
  T* c = static_cast<T*>(c_buffer.get(sizeof(T) * mc * nc));
  for (int64_t i = 0; i < a_size; ++i) pa[i] = T(i % 7 + 1) / T(8);  // not zeros, far from overflow
  for (int64_t i = 0; i < b_size; ++i) pb[i] = T(i % 5 + 1) / T(4);
  std::fill(c, c + mc * nc, T(0));
  std::vector<double> seconds;
  for (int r = -1; r < repeats; ++r) {  // an untimed first pass brings the blocks into the caches
    const auto start = std::chrono::steady_clock::now();
    macro_kernel<P>(mc, nc, kc, pa, packed_panels<P>(pb), c, nc, 1, /*accumulate=*/true);
    if (r >= 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return seconds;
}
}  // namespace

std::vector<double> time_macro_kernel(CpuPath path, bool is_double, int64_t kc, int64_t mc, int64_t nc, int repeats) {
  constexpr int64_t most = int64_t(1) << 16;
  TORCH_CHECK_VALUE(kc >= 1 && mc >= 1 && nc >= 1 && kc <= most && mc <= most && nc <= most,
                    "time_macro_kernel: kc, mc and nc must be 1..", most, "; got kc ", kc, ", mc ", mc, ", nc ", nc);
  const int64_t bytes = (is_double ? 8 : 4) * ((mc + 64) * kc + kc * (nc + 64) + mc * nc);
  TORCH_CHECK_VALUE(bytes <= (int64_t(1) << 30), "time_macro_kernel: the blocks of kc ", kc, ", mc ", mc, ", nc ", nc,
                    " need more than 1 GiB");
  TORCH_CHECK_VALUE(repeats >= 1 && repeats <= 10000, "time_macro_kernel: repeats must be 1..10000; got ", repeats);
  auto run = [&](auto p) { return time_macro_kernel_on<decltype(p)>(kc, mc, nc, repeats); };
  return is_double ? on_path<double>(path, run) : on_path<float>(path, run);
}

template void gemm<float>(int64_t, int64_t, int64_t, const Operands<float>&, int);
template void gemm<double>(int64_t, int64_t, int64_t, const Operands<double>&, int);
template void gemm_on_path<float>(CpuPath, int64_t, int64_t, int64_t, const Operands<float>&, int);
template void gemm_on_path<double>(CpuPath, int64_t, int64_t, int64_t, const Operands<double>&, int);
template const char* loop_for<float>(CpuPath, int64_t, int64_t, int64_t, const Operands<float>&);
template const char* loop_for<double>(CpuPath, int64_t, int64_t, int64_t, const Operands<double>&);

}  // namespace gemmlab
