// FMA-throughput microbenchmark (see peak.h).
//
// Each thread updates ACC independent accumulators, acc = acc * x + y, in registers. A core keeps
// (FMA latency x FMA pipes) multiply-adds in flight, 8 on current x86 cores (4 cycles x 2 pipes),
// so ACC above that measures throughput, not latency; ACC stays below the register count so
// nothing spills. x < 1 and y > 0 keep the values near 1/(1-x)*y, far from overflow or denormals.
// Vector width and pipe count are the hardware's own, so this is right on a CPU that runs AVX-512
// on 256-bit pipes (Zen 4) as well as on one with two 512-bit FMA units.

#include "peak.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <map>
#include <numeric>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "simd_avx2.h"
#include "simd_avx512.h"

namespace gemmlab {
namespace {

volatile double g_sink;  // the accumulators' sum lands here, so the loop is not dead code

// The loop, defined once per target: a function that inlines the intrinsics' always-inline
// wrappers (simd_*.h) must carry their target itself.
#define GEMMLAB_DEFINE_CHAINS(NAME, TARGET)                                     \
  template <class S, int ACC>                                                   \
  TARGET void NAME(int64_t steps) {                                             \
    using T = typename S::T;                                                    \
    const T one_less = T(0.999), small = T(1e-3);                               \
    const typename S::V x = S::bcast(&one_less), y = S::bcast(&small);          \
    typename S::V acc[ACC];                                                     \
    for (int i = 0; i < ACC; ++i) acc[i] = y;                                   \
    for (int64_t s = 0; s < steps; ++s) {                                       \
      _Pragma("GCC unroll 32") for (int i = 0; i < ACC; ++i) acc[i] = S::fma(acc[i], x, y); \
    }                                                                           \
    for (int i = 1; i < ACC; ++i) acc[0] = S::add(acc[0], acc[i]);              \
    T lanes[S::L];                                                              \
    S::storeu(lanes, acc[0]);                                                   \
    g_sink = g_sink + static_cast<double>(lanes[0]);                            \
  }

// The portable path: 128-bit GCC vectors, a multiply and an add (the baseline ISA has no FMA), as
// the portable micro-kernel compiles.
template <class T_>
struct Vec128 {
  using T = T_;
  typedef T V __attribute__((vector_size(16)));
  static V bcast(const T* p) { return V{} + *p; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
  static void storeu(T* p, V v) { __builtin_memcpy(p, &v, sizeof(V)); }
  static constexpr int L = 16 / sizeof(T);
};

using Chains = void (*)(int64_t);
struct Kernel {
  Chains run;
  int lanes, accumulators;
};

GEMMLAB_DEFINE_CHAINS(chains_generic, )
#ifdef GEMMLAB_HAVE_X86
GEMMLAB_DEFINE_CHAINS(chains_avx2, GEMMLAB_TARGET_AVX2)
GEMMLAB_DEFINE_CHAINS(chains_avx512, GEMMLAB_TARGET_AVX512)
#endif

Kernel kernel_for(CpuPath path, bool is_double) {
  switch (path) {
#ifdef GEMMLAB_HAVE_X86
    case CpuPath::avx512:
      return is_double ? Kernel{&chains_avx512<avx512::F64, 24>, 8, 24} : Kernel{&chains_avx512<avx512::F32, 24>, 16, 24};
    case CpuPath::avx2:
      return is_double ? Kernel{&chains_avx2<avx2::F64, 12>, 4, 12} : Kernel{&chains_avx2<avx2::F32, 12>, 8, 12};
#endif
    default:
      return is_double ? Kernel{&chains_generic<Vec128<double>, 12>, 2, 12}
                       : Kernel{&chains_generic<Vec128<float>, 12>, 4, 12};
  }
}

// CPU time of the calling thread: the time it ran, not the time it waited for a core, so a
// neighbouring process that takes turns on our cores does not lower the figure (the machine's
// limit is what a core does while it runs). A thread sharing a core with its SMT sibling runs at
// half speed all the while and is counted so.
double thread_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Steps per second summed over `threads` threads, each running `steps` steps, started together
// (so that clocks and power limits are those of all cores busy at once).
double steps_per_second(Chains run, int threads, int64_t steps) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> rates(threads);
  auto work = [&](int i) {
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) {
    }
    const double start = thread_seconds();
    run(steps);
    rates[i] = static_cast<double>(steps) / std::max(thread_seconds() - start, 1e-9);
  };
  std::vector<std::thread> helpers;
  for (int i = 1; i < threads; ++i) helpers.emplace_back(work, i);
  while (ready.load() < threads - 1) std::this_thread::yield();
  go.store(true, std::memory_order_release);
  work(0);
  for (auto& t : helpers) t.join();
  return std::accumulate(rates.begin(), rates.end(), 0.0);
}

double measure(CpuPath path, bool is_double, int threads) {
  const Kernel k = kernel_for(path, is_double);
  // Grow the step count until one thread runs ~2 ms, then keep the best of 20 runs on all threads:
  // on these shared virtual machines a whole burst of 5 runs (~10 ms) measured half the 2-thread
  // figure now and then (gemmlab bench: 176 GFLOP/s where the next run gave 357).
  int64_t steps = 1 << 12;
  while (static_cast<double>(steps) / steps_per_second(k.run, 1, steps) < 2e-3 && steps < (int64_t(1) << 40)) steps *= 2;
  double best = 0;
  for (int rep = 0; rep < 20; ++rep) best = std::max(best, steps_per_second(k.run, threads, steps));
  return 2.0 * k.lanes * k.accumulators * best / 1e9;
}

}  // namespace

double peak_gflops(CpuPath path, bool is_double, int threads, bool refresh) {
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  TORCH_CHECK_VALUE(threads >= 1 && static_cast<unsigned>(threads) <= cpus, "peak_gflops: threads must be 1..", cpus,
                    " (this machine's logical CPUs); got ", threads);
  TORCH_CHECK_VALUE(path_supported(path), "peak_gflops: this CPU does not support the ", path_name(path), " path");
  static std::mutex mutex;
  static std::map<std::tuple<int, bool, int>, double> measured;
  std::lock_guard<std::mutex> lock(mutex);  // one measurement at a time: two would share the cores
  const auto key = std::make_tuple(static_cast<int>(path), is_double, threads);
  auto found = measured.find(key);
  if (found == measured.end()) return measured[key] = measure(path, is_double, threads);
  if (refresh) found->second = std::max(found->second, measure(path, is_double, threads));
  return found->second;
}

}  // namespace gemmlab
