// AVX-512 micro-kernel and small-product kernel (float32 and float64), compiled for AVX-512 by
// target attribute only; called after cpu_path.cpp has confirmed AVX-512F/VL/DQ at run time.
#pragma once

#include "simd_avx512.h"
#include <array>
#include <utility>

#include "tile.h"

#ifdef GEMMLAB_HAVE_X86
namespace gemmlab::avx512 {
#define GEMMLAB_KERNEL_TARGET GEMMLAB_TARGET_AVX512
#include "pack_simd.inc"
#include "ukernel_simd.inc"
#undef GEMMLAB_KERNEL_TARGET
}  // namespace gemmlab::avx512
#endif
