// A CPU stand-in for the few CUDA features gemm_kernels.cuh uses, so that the kernels' indexing,
// edge tiles, load paths and barriers can be checked with g++ on a machine without a GPU
// (compile with -DGEMMLAB_CUDA_EMULATE -x c++; see tests/test_cuda_kernels_emulated.py).
//
// Every thread of a block runs as a fiber (ucontext) on one OS thread. The fibers of a block run
// round-robin, each until it reaches __syncthreads() or returns; a round ends when all of them
// have, and a block whose threads do not all meet at the same barriers is reported as an error
// (on a GPU that would be undefined behaviour). Execution is deterministic: a missing barrier shows
// up as a wrong result every time instead of as a rare race. Shared memory is a function-local
// static, which is right because blocks run one after another.
//
// This models what the kernels compute, not how fast: memory coalescing, bank conflicts, register
// limits and the memory model of a real GPU are out of its reach.

#pragma once

#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
constexpr cudaError_t cudaErrorLaunchFailure = 719;
using cudaStream_t = void*;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace gemmlab_emu {

constexpr std::size_t kStackBytes = 128 * 1024;

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  bool done = false;
};

inline ucontext_t scheduler;
inline std::vector<std::unique_ptr<Fiber>> fibers;
inline int current = -1;
inline const std::function<void()>* body = nullptr;
inline cudaError_t last_error = cudaSuccess;

// Global-memory reads: the harness registers, per buffer, which slots hold matrix elements; a read
// of any other address is counted (and the first one described) until the next reset_reads().
struct Readable {
  const char* base;
  std::size_t bytes, elem;
  const std::vector<char>* is_element;  // one flag per elem-sized slot
};
inline std::vector<Readable> readable;
inline long long bad_reads = 0;
inline char first_bad_read[160] = "";

inline long long misaligned = 0;  // 16-byte vector accesses at addresses that are not multiples of 16

inline void reset_reads() {
  readable.clear();
  bad_reads = 0;
  first_bad_read[0] = 0;
  misaligned = 0;
}

inline void check_aligned(const void* p) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) ++misaligned;
}

template <typename T>
void check_read(const T* p, int count) {
  if (readable.empty()) return;
  for (int j = 0; j < count; ++j) {
    const char* at = reinterpret_cast<const char*>(p + j);
    bool ok = false;
    for (const Readable& r : readable) {
      if (at >= r.base && at < r.base + r.bytes) {
        const std::size_t slot = static_cast<std::size_t>(at - r.base) / r.elem;
        ok = (at - r.base) % r.elem == 0 && (*r.is_element)[slot];
        if (!ok && bad_reads == 0)
          std::snprintf(first_bad_read, sizeof first_bad_read, "read of slot %zu of a %zu-slot operand buffer, not an element",
                        slot, r.bytes / r.elem);
        break;
      }
    }
    if (!ok) {
      if (bad_reads == 0 && first_bad_read[0] == 0)
        std::snprintf(first_bad_read, sizeof first_bad_read, "read outside every operand buffer");
      ++bad_reads;
    }
  }
}

inline void fiber_main() {
  (*body)();
  fibers[current]->done = true;  // returning resumes the scheduler (uc_link)
}

inline void set_thread(unsigned t) {
  threadIdx = dim3(t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y));
}

inline void launch(dim3 grid, dim3 block, const std::function<void()>& fn) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  while (fibers.size() < threads) {
    auto f = std::make_unique<Fiber>();
    f->stack = std::make_unique<char[]>(kStackBytes);
    fibers.push_back(std::move(f));
  }
  gridDim = grid;
  blockDim = block;
  body = &fn;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        for (unsigned t = 0; t < threads; ++t) {
          Fiber& f = *fibers[t];
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = f.stack.get();
          f.context.uc_stack.ss_size = kStackBytes;
          f.context.uc_link = &scheduler;
          makecontext(&f.context, fiber_main, 0);
          f.done = false;
        }
        for (;;) {  // one round: every live thread runs to its next barrier or to its end
          unsigned finished = 0;
          for (unsigned t = 0; t < threads; ++t) {
            if (fibers[t]->done) continue;
            current = static_cast<int>(t);
            set_thread(t);
            swapcontext(&scheduler, &fibers[t]->context);
          }
          for (unsigned t = 0; t < threads; ++t) finished += fibers[t]->done ? 1 : 0;
          if (finished == threads) break;
          if (finished != 0) {
            std::fprintf(stderr, "emulated launch: block (%u, %u, %u): %u of %llu threads returned while the others wait at __syncthreads()\n",
                         bx, by, bz, finished, threads);
            last_error = cudaErrorLaunchFailure;
            return;
          }
        }
      }
}

}  // namespace gemmlab_emu

inline void __syncthreads() { swapcontext(&gemmlab_emu::fibers[gemmlab_emu::current]->context, &gemmlab_emu::scheduler); }

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = gemmlab_emu::last_error;
  gemmlab_emu::last_error = cudaSuccess;
  return e;
}

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure (barrier divergence in the emulation)";
    default: return "unknown error";
  }
}
