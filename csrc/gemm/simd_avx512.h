// Thin wrappers over AVX-512 intrinsics, one struct per element type, so one micro-kernel
// template serves float32 (16 lanes) and float64 (8 lanes).
//
// Every function carries the target attribute: this translation unit is compiled without -m
// flags (an installed build must run on any x86-64), and these are only ever called from
// functions with the same target, after the run-time CPU check in cpu_path.cpp.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define GEMMLAB_HAVE_X86 1
#include <immintrin.h>

#include <cstdint>

#define GEMMLAB_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))
#define GEMMLAB_AVX512_INLINE __attribute__((target("avx512f,avx512vl,avx512dq,fma"), always_inline)) inline

namespace gemmlab::avx512 {

// GCC 12's unmasked forms of these shuffles start from _mm512_undefined_*(), which -Wall reports as
// "may be used uninitialized" once inlined (GCC bug 105593). The maskz forms with an all-ones
// mask compile to the same single instruction and keep the build quiet.
constexpr __mmask16 ALL16 = 0xFFFF;
constexpr __mmask8 ALL8 = 0xFF;
GEMMLAB_AVX512_INLINE __m512 unpacklo(__m512 a, __m512 b) { return _mm512_maskz_unpacklo_ps(ALL16, a, b); }
GEMMLAB_AVX512_INLINE __m512 unpackhi(__m512 a, __m512 b) { return _mm512_maskz_unpackhi_ps(ALL16, a, b); }
GEMMLAB_AVX512_INLINE __m512d unpacklo(__m512d a, __m512d b) { return _mm512_maskz_unpacklo_pd(ALL8, a, b); }
GEMMLAB_AVX512_INLINE __m512d unpackhi(__m512d a, __m512d b) { return _mm512_maskz_unpackhi_pd(ALL8, a, b); }
template <int IMM>
GEMMLAB_AVX512_INLINE __m512 shuffle_lanes(__m512 a, __m512 b) { return _mm512_maskz_shuffle_f32x4(ALL16, a, b, IMM); }
template <int IMM>
GEMMLAB_AVX512_INLINE __m512d shuffle_lanes(__m512d a, __m512d b) { return _mm512_maskz_shuffle_f64x2(ALL8, a, b, IMM); }

struct F32 {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int L = 16;
  GEMMLAB_AVX512_INLINE static V zero() { return _mm512_setzero_ps(); }
  GEMMLAB_AVX512_INLINE static V loadu(const T* p) { return _mm512_loadu_ps(p); }
  GEMMLAB_AVX512_INLINE static V bcast(const T* p) { return _mm512_set1_ps(*p); }
  GEMMLAB_AVX512_INLINE static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  GEMMLAB_AVX512_INLINE static V add(V a, V b) { return _mm512_add_ps(a, b); }
  GEMMLAB_AVX512_INLINE static void storeu(T* p, V v) { _mm512_storeu_ps(p, v); }
  // Lanes [0, n) for 0 <= n <= L. Masked loads never fault on the masked-off lanes, which is
  // what lets edge tiles touch only the caller's elements.
  GEMMLAB_AVX512_INLINE static Mask mask(int n) { return static_cast<Mask>((1u << n) - 1u); }
  GEMMLAB_AVX512_INLINE static V maskz_loadu(Mask m, const T* p) { return _mm512_maskz_loadu_ps(m, p); }
  GEMMLAB_AVX512_INLINE static void mask_storeu(T* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  GEMMLAB_AVX512_INLINE static void store_first(T* p, V v, int n) { mask_storeu(p, mask(n), v); }  // n < L lanes
  GEMMLAB_AVX512_INLINE static T sum(V v) { return _mm512_reduce_add_ps(v); }
  // In-register transpose of a 16 x 16 block: r[i] holds row i on entry, column i on exit.
  // Four rounds of 16 shuffles: 2x2 blocks of floats, of float pairs, then 4x4 of 128-bit lanes.
  GEMMLAB_AVX512_INLINE static void transpose(V r[16]) {
    V a[16], b[16];
#pragma GCC unroll 16
    for (int i = 0; i < 8; ++i) {
      a[2 * i] = unpacklo(r[2 * i], r[2 * i + 1]);
      a[2 * i + 1] = unpackhi(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int g = 0; g < 4; ++g) {  // rows 4g..4g+3; b[4g + x] lane j: column 4j + x
      const __m512d a0 = _mm512_castps_pd(a[4 * g]), a1 = _mm512_castps_pd(a[4 * g + 1]);
      const __m512d a2 = _mm512_castps_pd(a[4 * g + 2]), a3 = _mm512_castps_pd(a[4 * g + 3]);
      b[4 * g] = _mm512_castpd_ps(unpacklo(a0, a2));
      b[4 * g + 1] = _mm512_castpd_ps(unpackhi(a0, a2));
      b[4 * g + 2] = _mm512_castpd_ps(unpacklo(a1, a3));
      b[4 * g + 3] = _mm512_castpd_ps(unpackhi(a1, a3));
    }
#pragma GCC unroll 16
    for (int x = 0; x < 4; ++x) {  // column 4j + x gathers lane j of b[x], b[4+x], b[8+x], b[12+x]
      const V c0 = shuffle_lanes<0x44>(b[x], b[4 + x]), c1 = shuffle_lanes<0xEE>(b[x], b[4 + x]);
      const V c2 = shuffle_lanes<0x44>(b[8 + x], b[12 + x]), c3 = shuffle_lanes<0xEE>(b[8 + x], b[12 + x]);
      r[x] = shuffle_lanes<0x88>(c0, c2);
      r[4 + x] = shuffle_lanes<0xDD>(c0, c2);
      r[8 + x] = shuffle_lanes<0x88>(c1, c3);
      r[12 + x] = shuffle_lanes<0xDD>(c1, c3);
    }
  }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int L = 8;
  GEMMLAB_AVX512_INLINE static V zero() { return _mm512_setzero_pd(); }
  GEMMLAB_AVX512_INLINE static V loadu(const T* p) { return _mm512_loadu_pd(p); }
  GEMMLAB_AVX512_INLINE static V bcast(const T* p) { return _mm512_set1_pd(*p); }
  GEMMLAB_AVX512_INLINE static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  GEMMLAB_AVX512_INLINE static V add(V a, V b) { return _mm512_add_pd(a, b); }
  GEMMLAB_AVX512_INLINE static void storeu(T* p, V v) { _mm512_storeu_pd(p, v); }
  GEMMLAB_AVX512_INLINE static Mask mask(int n) { return static_cast<Mask>((1u << n) - 1u); }
  GEMMLAB_AVX512_INLINE static V maskz_loadu(Mask m, const T* p) { return _mm512_maskz_loadu_pd(m, p); }
  GEMMLAB_AVX512_INLINE static void mask_storeu(T* p, Mask m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  GEMMLAB_AVX512_INLINE static void store_first(T* p, V v, int n) { mask_storeu(p, mask(n), v); }  // n < L lanes
  GEMMLAB_AVX512_INLINE static T sum(V v) { return _mm512_reduce_add_pd(v); }
  // In-register transpose of an 8 x 8 block (see F32::transpose): pairs, then 4x4 of 128-bit lanes.
  GEMMLAB_AVX512_INLINE static void transpose(V r[8]) {
    V a[8];
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {  // a[2i + x] lane j: rows 2i, 2i+1 of column 2j + x
      a[2 * i] = unpacklo(r[2 * i], r[2 * i + 1]);
      a[2 * i + 1] = unpackhi(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int x = 0; x < 2; ++x) {
      const V c0 = shuffle_lanes<0x44>(a[x], a[2 + x]), c1 = shuffle_lanes<0xEE>(a[x], a[2 + x]);
      const V c2 = shuffle_lanes<0x44>(a[4 + x], a[6 + x]), c3 = shuffle_lanes<0xEE>(a[4 + x], a[6 + x]);
      r[x] = shuffle_lanes<0x88>(c0, c2);
      r[2 + x] = shuffle_lanes<0xDD>(c0, c2);
      r[4 + x] = shuffle_lanes<0x88>(c1, c3);
      r[6 + x] = shuffle_lanes<0xDD>(c1, c3);
    }
  }
};

template <class T> struct Simd;
template <> struct Simd<float> { using type = F32; };
template <> struct Simd<double> { using type = F64; };

}  // namespace gemmlab::avx512
#endif
