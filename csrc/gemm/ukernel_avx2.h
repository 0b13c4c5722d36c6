// AVX2+FMA micro-kernel and small-product kernel (float32 and float64), compiled for AVX2 by
// target attribute only; called after cpu_path.cpp has confirmed AVX2 and FMA at run time.
#pragma once

#include "simd_avx2.h"
#include <array>
#include <utility>

#include "tile.h"

#if defined(__x86_64__) || defined(__i386__)
namespace gemmlab::avx2 {
#define GEMMLAB_KERNEL_TARGET GEMMLAB_TARGET_AVX2
#include "pack_simd.inc"
#include "ukernel_simd.inc"
#undef GEMMLAB_KERNEL_TARGET
}  // namespace gemmlab::avx2
#endif
