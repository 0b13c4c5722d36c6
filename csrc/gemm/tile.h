// Writing a finished micro-tile back into the caller's C.
//
// Micro-kernels always compute a full register tile. When the tile sticks out of C (edge tiles)
// or C's columns are not contiguous (a transposed or strided out), the kernel spills its registers
// into a small aligned buffer and this copies only the valid mr x nr part through C's strides, so
// nothing outside the caller's tensor is ever read or written.
#pragma once

#include <cstdint>

namespace gemmlab {

// c[i*rs + j*cs] (+)= tile[i*ld + j] for i < mr, j < nr. `accumulate` is false for the first
// K-block: C is then overwritten, never read (it may hold garbage or NaN).
template <class T>
inline void store_tile(const T* tile, int ld, int mr, int nr, T* c, int64_t rs, int64_t cs, bool accumulate) {
  for (int i = 0; i < mr; ++i) {
    T* row = c + i * rs;
    const T* t = tile + i * ld;
    if (accumulate) {
      for (int j = 0; j < nr; ++j) row[j * cs] += t[j];
    } else {
      for (int j = 0; j < nr; ++j) row[j * cs] = t[j];
    }
  }
}

}  // namespace gemmlab

namespace gemmlab {

// Every micro-kernel has this signature (see ukernel_simd.inc for the meaning of the arguments).
template <class T>
using MicroKernel = void (*)(int64_t kc, const T* a, const T* b, int64_t bs, T* c, int64_t rs, int64_t cs,
                             int nr, bool accumulate);

// Small-product kernel signature (see ukernel_simd.inc).
template <class T>
using SmallKernel = void (*)(int64_t k, const T* a, int64_t ars, int64_t acs, const T* b, int64_t brs, T* c,
                             int64_t crs, int ncols);

// Dot-product kernel signature (see ukernel_simd.inc).
template <class T>
using DotKernel = void (*)(int64_t k, const T* a, int64_t ars, const T* b, int64_t bcs, T* c, int64_t crs, int64_t ccs,
                           const T* prefetch_row);

}  // namespace gemmlab
