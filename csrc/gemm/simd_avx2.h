// Thin wrappers over AVX2+FMA intrinsics (256-bit), one struct per element type; see
// simd_avx512.h for why every function carries a target attribute.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstdint>

#define GEMMLAB_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GEMMLAB_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace gemmlab::avx2 {

// The first `bytes` bytes of v (a multiple of 4 below 32) to p, in 16-, 8- and 4-byte pieces: each
// type's store_first, the partial store of its transposing pack. AMD microcodes the masked store
// (vmaskmovps), which had taken half of the cpp kernel's packing time at 256^3 on a Zen 3.
GEMMLAB_AVX2_INLINE void store_first_bytes(void* p, __m256i v, int bytes) {
  char* at = static_cast<char*>(p);
  __m128i part = _mm256_castsi256_si128(v);
  if (bytes >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at), part);
    part = _mm256_extracti128_si256(v, 1);
    at += 16;
    bytes -= 16;
  }
  if (bytes >= 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(at), part);
    part = _mm_srli_si128(part, 8);
    at += 8;
    bytes -= 8;
  }
  if (bytes) _mm_store_ss(reinterpret_cast<float*>(at), _mm_castsi128_ps(part));
}

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
  GEMMLAB_AVX2_INLINE static void store_first(T* p, V v, int n) { store_first_bytes(p, _mm256_castps_si256(v), n * 4); }
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
  GEMMLAB_AVX2_INLINE static void store_first(T* p, V v, int n) { store_first_bytes(p, _mm256_castpd_si256(v), n * 8); }
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
