// The three matrices of one product, as raw pointers and element strides.
#pragma once

#include <cstdint>

namespace gemmlab {

// C (m x n) = A (m x k) @ B (k x n). Element (i, p) of A is a[i*ars + p*acs], and so on. Strides
// are in elements and may be anything torch allows (0 for expanded inputs, non-unit for slices
// and transposes); C's strides never make two elements share memory (checked by the caller).
template <class T>
struct Operands {
  const T* a;
  int64_t ars, acs;
  const T* b;
  int64_t brs, bcs;
  T* c;
  int64_t crs, ccs;
};

}  // namespace gemmlab
