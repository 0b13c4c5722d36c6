// Thin wrappers over AVX2+FMA intrinsics (256-bit), one struct per element type; see
// simd_avx512.h for why every function carries a target attribute.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstdint>

#define GEMMLAB_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GEMMLAB_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace gemmlab::avx2 {

struct F32 {
  using T = float;
  using V = __m256;
  static constexpr int L = 8;
  GEMMLAB_AVX2_INLINE static V zero() { return _mm256_setzero_ps(); }
  GEMMLAB_AVX2_INLINE static V loadu(const T* p) { return _mm256_loadu_ps(p); }
  GEMMLAB_AVX2_INLINE static V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  GEMMLAB_AVX2_INLINE static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  GEMMLAB_AVX2_INLINE static V add(V a, V b) { return _mm256_add_ps(a, b); }
  GEMMLAB_AVX2_INLINE static void storeu(T* p, V v) { _mm256_storeu_ps(p, v); }
  // AVX2 masks are vectors: lane i is on when its sign bit is set. Masked-off lanes never fault.
  GEMMLAB_AVX2_INLINE static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  GEMMLAB_AVX2_INLINE static V maskz_loadu(__m256i m, const T* p) { return _mm256_maskload_ps(p, m); }
  GEMMLAB_AVX2_INLINE static void mask_storeu(T* p, __m256i m, V v) { _mm256_maskstore_ps(p, m, v); }
  // v's first n lanes (0 < n < L) to p, in 16-, 8- and 4-byte pieces: AMD's vmaskmovps store is
  // microcoded (Zen 3: half the cpp kernel's packing time at 256^3).
  GEMMLAB_AVX2_INLINE static void store_first(T* p, V v, int n) {
    __m128 part = _mm256_castps256_ps128(v);
    if (n >= 4) {
      _mm_storeu_ps(p, part);
      part = _mm256_extractf128_ps(v, 1);
      p += 4;
      n -= 4;
    }
    if (n >= 2) {
      _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
      part = _mm_movehl_ps(part, part);
      p += 2;
      n -= 2;
    }
    if (n) _mm_store_ss(p, part);
  }
  // In-register transpose of an 8 x 8 block: r[i] holds row i on entry, column i on exit.
  GEMMLAB_AVX2_INLINE static void transpose(V r[8]) {
    V a[8], b[8];
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      a[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      a[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int g = 0; g < 2; ++g) {  // b[4g + x] lane j: rows 4g..4g+3 of column 4j + x
      const __m256d a0 = _mm256_castps_pd(a[4 * g]), a1 = _mm256_castps_pd(a[4 * g + 1]);
      const __m256d a2 = _mm256_castps_pd(a[4 * g + 2]), a3 = _mm256_castps_pd(a[4 * g + 3]);
      b[4 * g] = _mm256_castpd_ps(_mm256_unpacklo_pd(a0, a2));
      b[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a0, a2));
      b[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(a1, a3));
      b[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(a1, a3));
    }
#pragma GCC unroll 16
    for (int x = 0; x < 4; ++x) {
      r[x] = _mm256_permute2f128_ps(b[x], b[4 + x], 0x20);
      r[4 + x] = _mm256_permute2f128_ps(b[x], b[4 + x], 0x31);
    }
  }
};

struct F64 {
  using T = double;
  using V = __m256d;
  static constexpr int L = 4;
  GEMMLAB_AVX2_INLINE static V zero() { return _mm256_setzero_pd(); }
  GEMMLAB_AVX2_INLINE static V loadu(const T* p) { return _mm256_loadu_pd(p); }
  GEMMLAB_AVX2_INLINE static V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  GEMMLAB_AVX2_INLINE static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  GEMMLAB_AVX2_INLINE static V add(V a, V b) { return _mm256_add_pd(a, b); }
  GEMMLAB_AVX2_INLINE static void storeu(T* p, V v) { _mm256_storeu_pd(p, v); }
  GEMMLAB_AVX2_INLINE static __m256i mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  GEMMLAB_AVX2_INLINE static V maskz_loadu(__m256i m, const T* p) { return _mm256_maskload_pd(p, m); }
  GEMMLAB_AVX2_INLINE static void mask_storeu(T* p, __m256i m, V v) { _mm256_maskstore_pd(p, m, v); }
  GEMMLAB_AVX2_INLINE static void store_first(T* p, V v, int n) {  // as F32's
    __m128d part = _mm256_castpd256_pd128(v);
    if (n >= 2) {
      _mm_storeu_pd(p, part);
      part = _mm256_extractf128_pd(v, 1);
      p += 2;
      n -= 2;
    }
    if (n) _mm_store_sd(p, part);
  }
  // In-register transpose of a 4 x 4 block.
  GEMMLAB_AVX2_INLINE static void transpose(V r[4]) {
    const V a0 = _mm256_unpacklo_pd(r[0], r[1]), a1 = _mm256_unpackhi_pd(r[0], r[1]);
    const V a2 = _mm256_unpacklo_pd(r[2], r[3]), a3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(a0, a2, 0x20);
    r[1] = _mm256_permute2f128_pd(a1, a3, 0x20);
    r[2] = _mm256_permute2f128_pd(a0, a2, 0x31);
    r[3] = _mm256_permute2f128_pd(a1, a3, 0x31);
  }
};

template <class T> struct Simd;
template <> struct Simd<float> { using type = F32; };
template <> struct Simd<double> { using type = F64; };

}  // namespace gemmlab::avx2
#endif
