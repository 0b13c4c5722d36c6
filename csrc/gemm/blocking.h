// Register blocking (MR x NR micro-tile) and cache blocking (KC, MC, NC) for every ISA path and
// element type, bundled with the matching kernels.
//
// Cache blocking, following the BLIS analysis for this machine (Sapphire Rapids class: L1d
// 48 KiB and L2 2 MiB per core, a large shared L3):
//   KC: one packed B micro-panel (KC x NR) is reused by every A micro-panel of the MC block, so it
//       should stay in L1 next to the A micro-panel streaming past it: KC*NR*size + KC*MR*size
//       well under 48 KiB. Long KC also amortises the C tile's load/store per micro-kernel call.
//   MC: the packed A block (MC x KC) is reused across all NC/NR B micro-panels and lives in L2;
//       about half of L2, leaving room for the B panels passing through and C.
//   NC: the packed B block (KC x NC) is reused across all MC-blocks of the task and lives in L2/L3;
//       each thread packs its own, so NC is per-thread L3 share, not the whole L3.
// The values were picked by sweeping them on the development machine (see the commit message and
// scripts/bench_cpp.py); they are all multiples of MR/NR so the balanced blocks stay aligned.
#pragma once

#include <cstdint>

#include "pack.h"
#include "simd_avx2.h"
#include "simd_avx512.h"
#include "ukernel_avx2.h"
#include "ukernel_avx512.h"
#include "ukernel_generic.h"

namespace gemmlab {

template <class T_, int MR_, int NR_, int KC_, int MC_, int NC_>
struct Blocking {
  using T = T_;
  static constexpr int MR = MR_, NR = NR_, KC = KC_, MC = MC_, NC = NC_;
  static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole micro-panels");
};

// Portable path: 128-bit vectors (SSE2 / NEON), 16 registers: 6 rows x 2 vectors of accumulators.
template <class T> struct GenericPath;
template <> struct GenericPath<float> : Blocking<float, 6, 8, 256, 96, 2048> {
  using Transpose = ScalarTransposePack;
  static constexpr const auto& kernels = generic::micro_kernels<float, MR, NR>;
};
template <> struct GenericPath<double> : Blocking<double, 6, 4, 256, 96, 2048> {
  using Transpose = ScalarTransposePack;
  static constexpr const auto& kernels = generic::micro_kernels<double, MR, NR>;
};

#ifdef GEMMLAB_HAVE_X86
// AVX2: 16 ymm registers: 6 rows x 2 vectors = 12 accumulators, 2 for B, 1 broadcast.
template <class T> struct Avx2Path;
template <> struct Avx2Path<float> : Blocking<float, 6, 16, 256, 144, 2048> {
  using Simd = avx2::F32;
  using Transpose = avx2::TransposePack<Simd>;
  static constexpr const auto& kernels = avx2::micro_kernels<Simd, MR, NR / Simd::L>;
  static constexpr int SMALL_ROWS = 6, SMALL_VECTORS = 1;
  static constexpr const auto& small = avx2::small_kernels<Simd, SMALL_ROWS, SMALL_VECTORS>;
};
template <> struct Avx2Path<double> : Blocking<double, 6, 8, 256, 144, 2048> {
  using Simd = avx2::F64;
  using Transpose = avx2::TransposePack<Simd>;
  static constexpr const auto& kernels = avx2::micro_kernels<Simd, MR, NR / Simd::L>;
  static constexpr int SMALL_ROWS = 6, SMALL_VECTORS = 1;
  static constexpr const auto& small = avx2::small_kernels<Simd, SMALL_ROWS, SMALL_VECTORS>;
};

// AVX-512: 32 zmm registers: 14 rows x 2 vectors = 28 accumulators, 2 for B, 1 broadcast.
template <class T> struct Avx512Path;
template <> struct Avx512Path<float> : Blocking<float, 14, 32, 256, 336, 4096> {
  using Simd = avx512::F32;
  using Transpose = avx512::TransposePack<Simd>;
  static constexpr const auto& kernels = avx512::micro_kernels<Simd, MR, NR / Simd::L>;
  static constexpr int SMALL_ROWS = 6, SMALL_VECTORS = 2;
  static constexpr const auto& small = avx512::small_kernels<Simd, SMALL_ROWS, SMALL_VECTORS>;
};
template <> struct Avx512Path<double> : Blocking<double, 14, 16, 256, 336, 4096> {
  using Simd = avx512::F64;
  using Transpose = avx512::TransposePack<Simd>;
  static constexpr const auto& kernels = avx512::micro_kernels<Simd, MR, NR / Simd::L>;
  static constexpr int SMALL_ROWS = 6, SMALL_VECTORS = 2;
  static constexpr const auto& small = avx512::small_kernels<Simd, SMALL_ROWS, SMALL_VECTORS>;
};
#endif

}  // namespace gemmlab
