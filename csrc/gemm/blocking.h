// Register blocking (MR x NR micro-tile) and cache blocking (KC, MC, NC) for every ISA path and
// element type, bundled with the matching kernels.
//
// Register blocking: as many accumulators as the register file holds, leaving room for the NR/L
// vectors of B and one broadcast of A; more rows per tile means fewer B loads per FMA.
//
// Cache blocking: each path's REF_KC, REF_MC, REF_NC are the values measured best on the reference
// machine (Sapphire Rapids class: L1d 48 KiB and L2 2 MiB per core, large shared L3), single-
// threaded, starting from the BLIS analysis; derive_blocks() scales them, at run time, to the caches
// of the CPU the process runs on (cpu_caches.h), keeping the share of each cache every block had:
//   KC (depth of a K slice): each slice adds into every C tile once, so a longer slice means fewer
//       passes of loads and stores over C; BLIS sizes it so one B micro-panel (KC x NR) stays in
//       L1. With the B panel software-prefetched from L2 (ukernel_simd.inc), fewer passes over C
//       won, the more so as this machine's memory bandwidth is low (~8 GB/s for both cores): AVX-512
//       float32 2048^3 went 143 -> 153 -> 159 GFLOP/s from KC=256 to 512 to 1024 (a 128 KiB B
//       panel), the skinny MLP products gained 3-5%, 512^3 and 1024^3 stayed at ~155-162. Beyond
//       1024 nothing improved. float64 peaks at KC=768 (the same 96-128 KiB of B panel).
//   MC (rows per packed A block, which lives in L2 and is reused by all NC/NR B panels): an A block
//       of about 340 KiB measured best at every KC (float32: KC=1024 -> MC=84; float64: 768 -> 56);
//       ~520 KiB blocks were 3-5% slower.
//   NC (columns per packed B block, reused by all MC blocks; in L3): insensitive between 512 and
//       4096; 2048 bounds each thread's B buffer to KC*NC (8 MiB float32).
// AVX2 was measured on an AMD EPYC Zen 3 (L1d 32 KiB, L2 512 KiB; 2 threads,
// scripts/compare_builds.py): in float32, KC 512 (a 32 KiB B panel, all of L1) against the 168 that
// a reference KC of 256 scales to there ran 256^3-4096^3 at 1.07, 0.99, 1.07, 1.03 and 1.01x, and
// the reference KC is set to give it; float64 went 1.03 and 1.01x at 1024^3-2048^3 but 0.94-0.95x
// at 4096^3, so it keeps 256. The portable path was flat within noise around the BLIS-style values
// used here.
// All are multiples of MR/NR so the balanced blocks (five_loops.h) stay aligned to micro-panels.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu_caches.h"

#include "pack.h"
#include "simd_avx2.h"
#include "simd_avx512.h"
#include "ukernel_avx2.h"
#include "ukernel_avx512.h"
#include "ukernel_generic.h"

namespace gemmlab {

// A path: its micro-tile (element type T, MR x NR, the micro-kernel tables and the transposing pack:
// the ISA's MicroTile) and the reference cache blocks measured with it.
template <class Tile, int KC, int MC, int NC>
struct Blocking : Tile {
  static constexpr int REF_KC = KC, REF_MC = MC, REF_NC = NC;
  static_assert(MC % Tile::MR == 0 && NC % Tile::NR == 0, "cache blocks must hold whole micro-panels");
};

// The caches the reference values were measured with.
constexpr int64_t REFERENCE_L1D = 48 << 10, REFERENCE_L2 = 2 << 20;

// The cache blocking a product uses (CacheBlocks, cpu_caches.h), from this CPU's caches: equal to the
// reference values on caches like the reference machine's.
template <class P>
CacheBlocks derive_blocks(const CacheSizes& caches) {
  const int64_t size = sizeof(typename P::T);
  // KC: the B micro-panel (KC x NR) keeps its share of L1d (a multiple of 8 k-steps); up to twice
  // the reference, beyond which nothing improved there.
  const int64_t kc = std::clamp<int64_t>(P::REF_KC * caches.l1d / REFERENCE_L1D / 8 * 8, 16, 2 * P::REF_KC);
  // MC: the packed A block (MC x KC) keeps its share of L2 (about a sixth on the AVX-512 path).
  const int64_t a_block_bytes = P::REF_MC * P::REF_KC * size * caches.l2 / REFERENCE_L2;
  const int64_t mc = std::clamp<int64_t>(a_block_bytes / (kc * size) / P::MR * P::MR, P::MR, 4 * P::REF_MC);
  // NC: the packed B block (KC x NC) within half of this CPU's share of the last-level cache, and
  // no wider than the reference (its buffer size; NC was insensitive between 512 and 4096).
  const int64_t last_level = caches.l3 > 0 ? caches.l3 : caches.l2;
  const int64_t nc = std::clamp<int64_t>(last_level / 2 / (kc * size) / P::NR * P::NR, P::NR, P::REF_NC);
  return {kc, mc, nc};
}

// Portable path: 128-bit vectors (SSE2 / NEON), 16 registers: 6 rows x 2 vectors of accumulators.
template <class T>
struct GenericPath : Blocking<generic::MicroTile<T, 6, 2 * (16 / int(sizeof(T)))>, 256, 96, 2048> {
  static constexpr bool UNPACKED_MEDIUM = false;
};

#ifdef GEMMLAB_HAVE_X86
// AVX2: 16 ymm registers: 6 rows x 2 vectors = 12 accumulators, 2 for B, 1 broadcast. KC per type
// (see above): float32 768, float64 256.
template <class T>
struct Avx2Path : Blocking<avx2::MicroTile<typename avx2::Simd<T>::type, 6>, sizeof(T) == 4 ? 768 : 256, 144, 2048> {
  static constexpr int SMALL_ROWS = 6, SMALL_VECTORS = 1;
  static constexpr bool UNPACKED_MEDIUM = false;
  static constexpr const auto& small = avx2::small_kernels<typename Avx2Path::Simd, SMALL_ROWS, SMALL_VECTORS>;
};

// AVX-512: 32 zmm registers: 14 rows x 2 vectors = 28 accumulators, 2 for B, 1 broadcast. KC and MC
// were measured per type (see above): float32 1024 and 84, float64 768 and 56.
template <class T>
struct Avx512Path : Blocking<avx512::MicroTile<typename avx512::Simd<T>::type, 14>, sizeof(T) == 4 ? 1024 : 768,
                             sizeof(T) == 4 ? 84 : 56, 2048> {
  // The in-place path's tiles are as large as the micro-kernel's (one set of accumulators); the
  // dot-product path's 4 x 6 tile: 24 accumulators + 4 vectors of A + 1 of B.
  static constexpr int SMALL_ROWS = Avx512Path::MR, SMALL_VECTORS = 2;
  static constexpr bool UNPACKED_MEDIUM = true;
  static constexpr const auto& small = avx512::small_kernels<typename Avx512Path::Simd, SMALL_ROWS, SMALL_VECTORS>;
  static constexpr int DOT_ROWS = 4, DOT_COLS = 6;
  static constexpr const auto& dot = avx512::dot_kernels<typename Avx512Path::Simd, DOT_ROWS, DOT_COLS>;
};
#endif

}  // namespace gemmlab
