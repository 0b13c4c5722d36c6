// The five loops around the micro-kernel (BLIS's jc, pc, ic, jr, ir), for one task: one
// rectangle of C, the whole K range. Each thread owns one task (see gemm.cpp) and packs into its
// own buffers; a thread that helps with another's task runs whole row blocks of it (TaskLoops), so
// no two threads ever write the same part of C or of a buffer.
//
//   jc: NC-wide column blocks of C and B                 (packed B block: L2/L3)
//    pc: KC-deep slices of K: pack B[pc, jc] once
//     ic: MC-tall row blocks: pack A[ic, pc] once         (packed A block: L2)
//      jr: NR-wide micro-panels of the packed B            (one B micro-panel: L1)
//       ir: MR-tall micro-panels of the packed A: one micro-kernel call per MR x NR tile of C
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu_caches.h"
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
// for any number of threads; the blocks follow the caches, which the process reads once).
inline int64_t kc_block(int64_t k, const CacheBlocks& cb) { return even_block(k, cb.kc, 1); }

// Where the macro-kernel finds B's micro-panels (kc k-steps each): panels [0, full) at
// b + j * panel_stride with k-steps `step` apart, the rest packed at packed + (j - full) * kc * NR.
// A packed block has full = 0; a B read in place (b_in_place) has its full-width panels in the
// caller's memory and only its ragged last panel packed.
template <class T>
struct BPanels {
  const T* b;
  int64_t panel_stride, step, full;
  const T* packed;
};

template <class P>
BPanels<typename P::T> packed_panels(const typename P::T* pb) {
  return {nullptr, 0, 0, 0, pb};
}

// The two innermost loops (BLIS's "macro-kernel"): C[0:mc, 0:nc] (+)= packed A block (mc x kc)
// times the B block (kc x nc), one micro-kernel call per MR x NR tile: the instance of exactly
// the tile's rows, and of half the width when the tile's columns fit in half a panel.
template <class P>
inline void macro_kernel(int64_t mc, int64_t nc, int64_t kc, const typename P::T* pa, const BPanels<typename P::T>& b,
                         typename P::T* c, int64_t crs, int64_t ccs, bool accumulate) {
  constexpr int MR = P::MR, NR = P::NR;
  for (int64_t jr = 0, j = 0; jr < nc; jr += NR, ++j) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    const auto& kernels = nr <= NR / 2 ? P::narrow_kernels : P::kernels;  // skip an all-padding half
    const bool in_place = j < b.full;
    const typename P::T* panel = in_place ? b.b + j * b.panel_stride : b.packed + (j - b.full) * kc * NR;
    const int64_t step = in_place ? b.step : NR;
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
      kernels[mr - 1](kc, pa + ir * kc, panel, step, c + ir * crs + jr * ccs, crs, ccs, nr, accumulate);
    }
  }
}

// Whether a task may keep all of K of its packed B block (k x nc) at once, and swap the pc and ic
// loops (see gemm_task). Half of L2, leaving the other half for the packed A block and C tiles.
constexpr int64_t B_RESIDENT_BYTES = 1 << 20;

template <class P>
inline int64_t nc_block(int64_t n, const CacheBlocks& cb) { return even_block(n, cb.nc, P::NR); }

template <class P>
inline bool b_resident(int64_t n, int64_t k, const CacheBlocks& cb) {
  return k * nc_block<P>(n, cb) * static_cast<int64_t>(sizeof(typename P::T)) <= B_RESIDENT_BYTES;
}

// Whether a task reads B's full-width micro-panels where they are instead of packing them: B's
// rows contiguous (a row-major B, as x in a layer's weight gradient grad.T @ x) and the task's rows
// one block of A, so each B panel serves only a few micro-kernel calls and packing it would cost
// about what using it does. Measured on the AVX-512 Xeon, 2 threads, float32 (float64): 50x512 @
// 512x784 172 -> 145 us (370 -> 260), the 50000-row weight gradient 50x50000 @ 50000x784 24.0 ->
// 20.2 ms; row strides of 1024 and 4096 elements gained less (50x1024 @ 1024x1024 495 -> 475 us)
// but did not lose. (Only on the path where that was measured: UNPACKED_MEDIUM.)
template <class P>
inline bool b_in_place(const Operands<typename P::T>& op, int64_t rows, const CacheBlocks& cb) {
  if constexpr (!P::UNPACKED_MEDIUM) {
    return false;
  } else {
    return op.bcs == 1 && rows <= cb.mc;
  }
}

// C[m0:m1, n0:n1] = A[m0:m1, :] @ B[:, n0:n1] under blocking cb, cut into phases and items so that
// threads can share one task (gemm.cpp): a phase packs a B block into pb, its items are the MC-tall
// row blocks that use it, each packing its own A blocks into the pa of whichever thread runs it. Any
// thread may run any item of a phase whose B block is packed; a phase's B buffer is reused by the
// next phase only once all its items have run.
//
// Usual order (jc, pc, ic): a phase is one KC-deep slice of one NC-wide column block, and an item
// adds that slice's product into its rows of C. When all of K of the B block fits in half of L2
// (skinny B, as in x @ W of an MLP layer) it is packed once and the order becomes jc, ic, pc: a
// phase is a whole column block, and an item its rows' whole product. Each row block of A is then
// read in one sweep (whole rows streaming from memory, rather than one KC-wide strip of every row
// per pass) and its C tiles stay in cache across the K slices instead of being re-read from memory
// once per slice. Both orders add the K slices into each element in the same order, so results are
// identical, whoever runs the items.
template <class P>
struct TaskLoops {
  using T = typename P::T;
  const Operands<T>& op;
  int64_t m0, m1, n0, n1, k;
  int64_t kc_blk, mc_blk, nc_blk;
  bool resident;

  TaskLoops(const Operands<T>& op, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k, const CacheBlocks& cb)
      : op(op), m0(m0), m1(m1), n0(n0), n1(n1), k(k), kc_blk(kc_block(k, cb)), mc_blk(even_block(m1 - m0, cb.mc, P::MR)),
        nc_blk(nc_block<P>(n1 - n0, cb)),
        resident(b_resident<P>(n1 - n0, k, cb)) {}

  int64_t slices_per_phase() const { return resident ? 1 : ceil_div(k, kc_blk); }
  int64_t phases() const { return ceil_div(n1 - n0, nc_blk) * slices_per_phase(); }
  int64_t items() const { return ceil_div(m1 - m0, mc_blk); }
  // Packing buffer sizes (elements). They also hold what the B-in-place loop of gemm_task packs: its
  // one block of rows (at most mc_blk) and B's ragged last panel (kc_blk x NR).
  int64_t pack_a_elements() const { return mc_blk * kc_blk; }
  int64_t pack_b_elements() const { return (resident ? k : kc_blk) * nc_blk; }

  // Phase `phase`'s column block and (usual order) K slice.
  void locate(int64_t phase, int64_t* jc, int64_t* nc, int64_t* pc) const {
    *jc = n0 + phase / slices_per_phase() * nc_blk;
    *nc = std::min(nc_blk, n1 - *jc);
    *pc = resident ? 0 : phase % slices_per_phase() * kc_blk;
  }

  void pack_phase(int64_t phase, T* pb) const {
    int64_t jc, nc, pc;
    locate(phase, &jc, &nc, &pc);
    const T* b_block = op.b + jc * op.bcs;
    const int64_t nc_padded = round_up(nc, P::NR);
    for (int64_t s = pc; s < (resident ? k : pc + 1); s += kc_blk)
      pack_b<T, P::NR, typename P::Transpose>(std::min(kc_blk, k - s), nc, b_block + s * op.brs, op.brs, op.bcs,
                                              pb + (resident ? s * nc_padded : 0));
  }

  void run_item(int64_t phase, int64_t item, T* pa, const T* pb) const {
    int64_t jc, nc, pc;
    locate(phase, &jc, &nc, &pc);
    const int64_t ic = m0 + item * mc_blk, mc = std::min(mc_blk, m1 - ic), nc_padded = round_up(nc, P::NR);
    T* c_block = op.c + ic * op.crs + jc * op.ccs;
    for (int64_t s = pc; s < (resident ? k : pc + 1); s += kc_blk) {
      const int64_t kc = std::min(kc_blk, k - s);
      pack_a<T, P::MR, typename P::Transpose>(mc, kc, op.a + ic * op.ars + s * op.acs, op.ars, op.acs, pa);
      macro_kernel<P>(mc, nc, kc, pa, packed_panels<P>(pb + (resident ? s * nc_padded : 0)), c_block, op.crs, op.ccs,
                      s != 0);
    }
  }
};

// The whole of a task on one thread, with pa and pb sized by its TaskLoops' pack_*_elements.
template <class P>
inline void gemm_task(const Operands<typename P::T>& op, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k,
                      typename P::T* pa, typename P::T* pb, const CacheBlocks& cb) {
  using T = typename P::T;
  constexpr int MR = P::MR, NR = P::NR;
  if (b_in_place<P>(op, m1 - m0, cb)) {
    // One block of rows: per K slice, pack it (and B's ragged last panel, if any) and sweep B.
    const int64_t kc_blk = kc_block(k, cb);
    const int64_t mc = m1 - m0, nc = n1 - n0, full = nc / NR;
    for (int64_t pc = 0; pc < k; pc += kc_blk) {
      const int64_t kc = std::min(kc_blk, k - pc);
      const T* b_slice = op.b + pc * op.brs + n0;
      if (nc > full * NR)
        pack_b<T, NR, typename P::Transpose>(kc, nc - full * NR, b_slice + full * NR, op.brs, 1, pb);
      pack_a<T, MR, typename P::Transpose>(mc, kc, op.a + m0 * op.ars + pc * op.acs, op.ars, op.acs, pa);
      macro_kernel<P>(mc, nc, kc, pa, BPanels<T>{b_slice, NR, op.brs, full, pb}, op.c + m0 * op.crs + n0 * op.ccs,
                      op.crs, op.ccs, pc != 0);
    }
    return;
  }
  const TaskLoops<P> loops(op, m0, m1, n0, n1, k, cb);
  for (int64_t phase = 0; phase < loops.phases(); ++phase) {
    loops.pack_phase(phase, pb);
    for (int64_t item = 0; item < loops.items(); ++item) loops.run_item(phase, item, pa, pb);
  }
}

}  // namespace gemmlab
