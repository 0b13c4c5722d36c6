// Packing: copy a block of A or B into a contiguous buffer in exactly the order the micro-kernel
// reads it.
//
// Why pack: the micro-kernel then streams both operands with unit stride from L1/L2 whatever the
// caller's layout was (transposed, sliced or stride-0 expanded views are read through their strides
// here, once per block, instead of on every FMA), and no two rows of a panel fight over one cache
// set as rows with a power-of-two leading dimension would. Partial edge panels are zero-padded to a
// full MR/NR width so the kernel never needs a short vector in its inner loop.
//
// These are plain templates with no ISA attribute: gemm.cpp inlines them into per-ISA task
// functions (`flatten`), so the compiler vectorises the copies for the ISA that runs them. The
// transposing case (source contiguous along k) is a policy: scalar here, in-register SIMD
// transposes on the AVX paths (pack_simd.inc).
#pragma once

#include <algorithm>
#include <cstdint>

namespace gemmlab {

// Transposing pack, portable version: dst[p*W + i] = src[i*ld + p] for p < kc, i < rows, and 0 in
// lanes [rows, W). Eight k-steps of every row per pass, so each source cache line is consumed while
// it is hot. The SIMD paths replace it with in-register transposes (pack_simd.inc).
struct ScalarTransposePack {
  template <int W, class T>
  static inline void run(int64_t kc, int rows, const T* src, int64_t ld, T* __restrict dst, const T* /*next*/) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      for (int i = 0; i < rows; ++i) {
        const T* s = src + i * ld + p;
        T* d = dst + p * W + i;
        for (int q = 0; q < 8; ++q) d[q * W] = s[q];
      }
    }
    for (; p < kc; ++p)
      for (int i = 0; i < rows; ++i) dst[p * W + i] = src[i * ld + p];
    if (rows < W)
      for (int64_t p = 0; p < kc; ++p)
        for (int i = rows; i < W; ++i) dst[p * W + i] = T(0);
  }
};

// A block of A or B -> micro-panels of W lanes: A's panels are MR rows, B's are NR columns; both
// run along k.
// Source: lanes [0, n), k-steps [0, kc), element (lane i, k-step p) at src[i*ls + p*ks].
// Destination: ceil(n/W) panels of W*kc values; in panel q, k-step p holds lanes q*W .. q*W+W-1 at
// dst[q*W*kc + p*W + (0..W-1)]; lanes past n are zero.
template <class T, int W, class Transpose>
inline void pack_panels(int64_t n, int64_t kc, const T* src, int64_t ls, int64_t ks, T* __restrict dst) {
  for (int64_t i0 = 0; i0 < n; i0 += W, src += W * ls, dst += W * kc) {
    const int lanes = static_cast<int>(std::min<int64_t>(W, n - i0));
    if (ls == 1 && lanes == W) {
      // Lanes contiguous (a transposed A, a row-major B): each k-step is one W-value copy.
      for (int64_t p = 0; p < kc; ++p) {
        const T* s = src + p * ks;
        T* d = dst + p * W;
        for (int i = 0; i < W; ++i) d[i] = s[i];
      }
      continue;
    }
    if (ks == 1) {
      // Each lane contiguous along k (a row-major A, a transposed B as in grad @ W.T): a transpose.
      Transpose::template run<W>(kc, lanes, src, ls, dst, src + W * ls);
      continue;
    }
    // Any other strides (stride-0 expanded dimensions, slices with steps, ...).
    for (int64_t p = 0; p < kc; ++p)
      for (int i = 0; i < lanes; ++i) dst[p * W + i] = src[i * ls + p * ks];
    if (lanes < W)
      for (int64_t p = 0; p < kc; ++p)
        for (int i = lanes; i < W; ++i) dst[p * W + i] = T(0);
  }
}

// A block (rows [0, mc), k-steps [0, kc), element (i, p) at a[i*rs + p*cs]) -> MR-row panels.
template <class T, int MR, class Transpose>
inline void pack_a(int64_t mc, int64_t kc, const T* a, int64_t rs, int64_t cs, T* __restrict dst) {
  pack_panels<T, MR, Transpose>(mc, kc, a, rs, cs, dst);
}

// B block (k-steps [0, kc), columns [0, nc), element (p, j) at b[p*rs + j*cs]) -> NR-column panels.
template <class T, int NR, class Transpose>
inline void pack_b(int64_t kc, int64_t nc, const T* b, int64_t rs, int64_t cs, T* __restrict dst) {
  pack_panels<T, NR, Transpose>(nc, kc, b, cs, rs, dst);
}

}  // namespace gemmlab
