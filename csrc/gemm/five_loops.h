// The five loops around the micro-kernel (BLIS's jc, pc, ic, jr, ir), for one task: one
// rectangle of C, the whole K range. Threads run disjoint tasks (see gemm.cpp), each packing into
// its own buffers, so the loops need no synchronisation.
//
//   jc: NC-wide column blocks of C and B                 (packed B block: L2/L3)
//    pc: KC-deep slices of K: pack B[pc, jc] once
//     ic: MC-tall row blocks: pack A[ic, pc] once         (packed A block: L2)
//      jr: NR-wide micro-panels of the packed B            (one B micro-panel: L1)
//       ir: MR-tall micro-panels of the packed A: one micro-kernel call per MR x NR tile of C
#pragma once

#include <algorithm>
#include <cstdint>

#include "operands.h"
#include "pack.h"

namespace gemmlab {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Size of the blocks when n items are cut into as few blocks of at most `max` as possible, made
// as equal as possible and rounded up to whole `unit`s: K = 784 with KC = 256 gives four slices of
// 196, not three of 256 and a sliver of 16 whose micro-kernel calls would be mostly overhead.
inline int64_t even_block(int64_t n, int64_t max, int64_t unit) {
  const int64_t blocks = ceil_div(n, max);
  return round_up(ceil_div(n, blocks), unit);
}

// K slice size: depends on k alone, never on the task's rectangle or the thread count, so every
// element of C is summed in the same order however the work is split (results are bit-identical
// for any number of threads).
template <class P>
inline int64_t kc_block(int64_t k) { return even_block(k, P::KC, 1); }

// C[m0:m1, n0:n1] = A[m0:m1, :] @ B[:, n0:n1]. pa holds P::MC*P::KC values, pb P::KC*P::NC.
template <class P>
inline void gemm_task(const Operands<typename P::T>& op, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k,
                      typename P::T* pa, typename P::T* pb) {
  constexpr int MR = P::MR, NR = P::NR;
  const int64_t kc_blk = kc_block<P>(k);
  const int64_t mc_blk = even_block(m1 - m0, P::MC, MR);
  const int64_t nc_blk = even_block(n1 - n0, P::NC, NR);
  for (int64_t jc = n0; jc < n1; jc += nc_blk) {
    const int64_t nc = std::min(nc_blk, n1 - jc);
    for (int64_t pc = 0; pc < k; pc += kc_blk) {
      const int64_t kc = std::min(kc_blk, k - pc);
      pack_b<typename P::T, NR, typename P::Transpose>(kc, nc, op.b + pc * op.brs + jc * op.bcs, op.brs, op.bcs, pb);
      for (int64_t ic = m0; ic < m1; ic += mc_blk) {
        const int64_t mc = std::min(mc_blk, m1 - ic);
        pack_a<typename P::T, MR, typename P::Transpose>(mc, kc, op.a + ic * op.ars + pc * op.acs, op.ars, op.acs, pa);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            P::kernels[mr - 1](kc, pa + ir * kc, pb + jr * kc, op.c + (ic + ir) * op.crs + (jc + jr) * op.ccs, op.crs,
                               op.ccs, nr, /*accumulate=*/pc != 0);
          }
        }
      }
    }
  }
}

}  // namespace gemmlab
