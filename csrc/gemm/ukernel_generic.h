// Portable micro-kernel: plain C++, no intrinsics, so it builds and runs on any CPU.
//
// Same contract as the SIMD kernels: C[0:ROWS, 0:nr] (+)= Apanel (ROWS of MR-wide steps) times
// Bpanel (NR-wide steps) over kc steps. The accumulators are a small fixed-size array the compiler
// keeps in registers; the j-loop over NR contiguous values is what it vectorises for the baseline
// ISA (SSE2 on x86-64, NEON on AArch64). Sizes (GenericPath, blocking.h) fit 16 128-bit registers.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "pack.h"
#include "tile.h"

namespace gemmlab::generic {

// Computes the first NW columns of the NR-wide panel (NW = NR/2 serves narrow panels).
template <class T, int MR, int NR, int NW, int ROWS>
__attribute__((noinline)) void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b, int64_t bs,
                                            T* c, int64_t rs, int64_t cs, int nr, bool accumulate) {
  T acc[ROWS][NW] = {};
  for (int64_t p = 0; p < kc; ++p, a += MR, b += bs) {
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      const T ar = a[r];
#pragma GCC unroll 16
      for (int j = 0; j < NW; ++j) acc[r][j] += ar * b[j];
    }
  }
  store_tile(&acc[0][0], NW, ROWS, nr, c, rs, cs, accumulate);
}

template <class T, int MR, int NR, int NW, int... R>
constexpr std::array<MicroKernel<T>, sizeof...(R)> make_micro_kernels(std::integer_sequence<int, R...>) {
  return {{&micro_kernel<T, MR, NR, NW, R + 1>...}};
}
// micro_kernels<T, MR, NR, NW>[rows - 1] computes `rows` rows and NW columns of an MR x NR tile.
template <class T, int MR, int NR, int NW>
inline constexpr auto micro_kernels = make_micro_kernels<T, MR, NR, NW>(std::make_integer_sequence<int, MR>{});

// The portable path's micro-tile (blocking.h): MR x NR, the micro-kernel tables for full panels and
// for narrow ones (nr <= NR/2), and the scalar transposing pack.
template <class T_, int MR_, int NR_>
struct MicroTile {
  using T = T_;
  using Transpose = ScalarTransposePack;
  static constexpr int MR = MR_, NR = NR_;
  static constexpr const auto& kernels = micro_kernels<T, MR, NR, NR>;
  static constexpr const auto& narrow_kernels = micro_kernels<T, MR, NR, NR / 2>;
};

// Small products, straight from the caller's memory: B's rows and C's rows contiguous (the
// caller checks), A through both strides. i-p-j order so the inner loop is a contiguous axpy.
template <class T>
void small_gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t ars, int64_t acs, const T* b, int64_t brs,
                T* c, int64_t crs) {
  for (int64_t i = 0; i < m; ++i) {
    T* __restrict row = c + i * crs;
    for (int64_t j = 0; j < n; ++j) row[j] = T(0);
    for (int64_t p = 0; p < k; ++p) {
      const T aip = a[i * ars + p * acs];
      const T* __restrict brow = b + p * brs;
      for (int64_t j = 0; j < n; ++j) row[j] += aip * brow[j];
    }
  }
}

}  // namespace gemmlab::generic
