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

// A block -> micro-panels of MR rows.
// Source: rows [0, mc), k-steps [0, kc) of A, element (i, p) at a[i*rs + p*cs].
// Destination: ceil(mc/MR) panels of MR*kc values; in panel q, k-step p holds rows q*MR .. q*MR+MR-1
// at dst[q*MR*kc + p*MR + (0..MR-1)]; rows past mc are zero.
template <class T, int MR, class Transpose>
inline void pack_a(int64_t mc, int64_t kc, const T* a, int64_t rs, int64_t cs, T* __restrict dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, a += MR * rs, dst += MR * kc) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, mc - i0));
    if (rs == 1 && mr == MR) {
      // Columns of A contiguous (a transposed view): each k-step is MR consecutive values.
      for (int64_t p = 0; p < kc; ++p) {
        const T* s = a + p * cs;
        T* d = dst + p * MR;
        for (int i = 0; i < MR; ++i) d[i] = s[i];
      }
      continue;
    }
    if (cs == 1) {
      // Rows contiguous (plain row-major A): a transpose.
      Transpose::template run<MR>(kc, mr, a, rs, dst, a + MR * rs);
      continue;
    }
    // Any other strides (stride-0 expanded dimensions, slices with steps, ...).
    for (int64_t p = 0; p < kc; ++p)
      for (int i = 0; i < mr; ++i) dst[p * MR + i] = a[i * rs + p * cs];
    if (mr < MR)
      for (int64_t p = 0; p < kc; ++p)
        for (int i = mr; i < MR; ++i) dst[p * MR + i] = T(0);
  }
}

// B block -> micro-panels of NR columns.
// Source: k-steps [0, kc), columns [0, nc) of B, element (p, j) at b[p*rs + j*cs].
// Destination: ceil(nc/NR) panels of NR*kc values; in panel q, k-step p holds columns
// q*NR .. q*NR+NR-1 at dst[q*NR*kc + p*NR + (0..NR-1)]; columns past nc are zero.
template <class T, int NR, class Transpose>
inline void pack_b(int64_t kc, int64_t nc, const T* b, int64_t rs, int64_t cs, T* __restrict dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR, b += NR * cs, dst += NR * kc) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, nc - j0));
    if (cs == 1 && nr == NR) {
      // Rows of B contiguous (plain row-major B): each k-step is one NR-value copy.
      for (int64_t p = 0; p < kc; ++p) {
        const T* s = b + p * rs;
        T* d = dst + p * NR;
        for (int j = 0; j < NR; ++j) d[j] = s[j];
      }
      continue;
    }
    if (rs == 1) {
      // Columns contiguous (a transposed view of B, as in grad @ W.T): a transpose.
      Transpose::template run<NR>(kc, nr, b, cs, dst, b + NR * cs);
      continue;
    }
    for (int64_t p = 0; p < kc; ++p)
      for (int j = 0; j < nr; ++j) dst[p * NR + j] = b[p * rs + j * cs];
    if (nr < NR)
      for (int64_t p = 0; p < kc; ++p)
        for (int j = nr; j < NR; ++j) dst[p * NR + j] = T(0);
  }
}

}  // namespace gemmlab
