// gemmlab's CUDA matmul: the host-side interface of the kernels in gemm_kernels.cuh.
//
// Plain C++ (no CUDA kernels, no torch), so that host code compiled by the C++ compiler (the torch
// glue, csrc/cuda/cuda_ext.cpp) can call the kernels that nvcc compiles in csrc/cuda/gemm.cu.

#pragma once

#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
#include "emulate.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstring>

namespace gemmlab {
namespace gpu {

using index_t = long long;

// The ladder, slowest first.
enum class Kernel : int { Naive = 0, Coalesced, Smem, RegBlock, WarpTile };
constexpr int kNumKernels = 5;
constexpr Kernel kDefaultKernel = Kernel::WarpTile;

inline const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::Naive: return "naive";
    case Kernel::Coalesced: return "coalesced";
    case Kernel::Smem: return "smem";
    case Kernel::RegBlock: return "regblock";
    case Kernel::WarpTile: return "warptile";
  }
  return "?";
}

inline bool parse_kernel(const char* name, Kernel* out) {
  for (int i = 0; i < kNumKernels; ++i) {
    if (std::strcmp(name, kernel_name(static_cast<Kernel>(i))) == 0) {
      *out = static_cast<Kernel>(i);
      return true;
    }
  }
  return false;
}

// C (m x n) = A (m x k) @ B (k x n); element (i, j) of X lives at x[i * x_rs + j * x_cs].
// Input strides may be anything, including 0 (broadcast); C must not have overlapping elements.
template <typename T>
struct Problem {
  index_t m, n, k;
  const T* a;
  index_t a_rs, a_cs;
  const T* b;
  index_t b_rs, b_cs;
  T* c;
  index_t c_rs, c_cs;
};

// What a call would use: the load path chosen for each operand and whether C is stored in vectors.
// For tests and diagnostics; gemm() makes the same choices.
struct Plan {
  int a_load, b_load;  // detail::Load values: 0/1 scalars (threads along k / outer), 2 vectors along k, 3 along outer
  bool c_vec;
};

template <typename T>
Plan plan(const Problem<T>& p);

// Launches the chosen kernel on stream: C = A @ B. Returns cudaErrorInvalidValue for sizes beyond
// what the kernels index (a dimension above 2^31 - 1, a negative size) and otherwise the launch's
// error (cudaGetLastError); the kernel runs asynchronously. Nothing is launched when C is empty.
// Instantiated for float and double (csrc/cuda/gemm.cu).
template <typename T>
cudaError_t gemm(Kernel kind, const Problem<T>& p, cudaStream_t stream);

}  // namespace gpu
}  // namespace gemmlab
