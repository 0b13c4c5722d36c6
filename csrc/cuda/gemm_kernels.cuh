// gemmlab's CUDA matmul kernels: C = A @ B for float and double, operands of any strides.
//
// This header is deliberately torch-free (plain CUDA C++ on pointers, sizes and element strides), so
// that it can be compiled and checked with nothing but nvcc (csrc/cuda/harness.cu), and even with
// g++ through a CPU emulation of the few CUDA features it uses (csrc/cuda/emulate.h). Its host-side
// interface is declared in gemm.h; gemm.cu instantiates it for the extension, whose torch glue is
// csrc/cuda/cuda_ext.cpp.
//
// The ladder, each step one selectable kernel (Kernel below):
//   naive      one thread per element of C; consecutive threads take consecutive ROWS, so the
//              loads of A and the stores of C of one warp are 32 scattered accesses
//   coalesced  the same, but consecutive threads take consecutive COLUMNS: one warp reads a
//              contiguous run of B and writes a contiguous run of C
//   smem       32x32 tiles of A and B staged in shared memory, one element of C per thread
//   regblock   128x128 block tile, each thread accumulating an 8x8 tile of C in registers,
//              16-byte vector loads from global and shared memory (float; double: 64x64, 4x4)
//   warptile   the default: 128x128 block tile split into 64x32 warp tiles and those into 4x4
//              thread sub-tiles (8x8 per thread), double-buffered shared memory (the next tile's
//              global loads are in flight while the current one is computed), grouped block order
//              for L2 reuse (double: 64x64 block tile, 32x32 warp tiles)
//
// Strides are handled where global memory is read: a tile is read with 16-byte vector loads only
// when the operand is contiguous along the loaded dimension and every vector is 16-byte aligned
// (checked on the host per call); otherwise the kernel reads scalars, ordered so that consecutive
// threads walk the operand's smaller stride. Out-of-range elements of edge tiles read as zero and
// are never stored, so every size works, not just multiples of the tile.

#pragma once

#include "gemm.h"

#if !(defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__))
#include <cuda_runtime.h>
#endif

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
#define GEMMLAB_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), ::gemmlab_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); }))
// Under the emulation every read of global memory is checked against the elements of the operands
// (a read of padding or past a matrix's end is an error even when it cannot change the result).
#define GEMMLAB_GLOBAL_READ(ptr, count) ::gemmlab_emu::check_read((ptr), (count))
#define GEMMLAB_CHECK_ALIGNED(ptr) ::gemmlab_emu::check_aligned(ptr)
#else
#define GEMMLAB_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define GEMMLAB_GLOBAL_READ(ptr, count) ((void)0)
#define GEMMLAB_CHECK_ALIGNED(ptr) ((void)0)
#endif

namespace gemmlab {
namespace gpu {

namespace detail {

// ---------------------------------------------------------------------------------------------
// Building blocks

template <typename T>
struct Vec16;  // the 16-byte vector of T
template <>
struct Vec16<float> {
  using type = float4;
  static constexpr int n = 4;
};
template <>
struct Vec16<double> {
  using type = double2;
  static constexpr int n = 2;
};

__device__ __forceinline__ void unpack(const float4& v, float* d) {
  d[0] = v.x;
  d[1] = v.y;
  d[2] = v.z;
  d[3] = v.w;
}
__device__ __forceinline__ void unpack(const double2& v, double* d) {
  d[0] = v.x;
  d[1] = v.y;
}
__device__ __forceinline__ float4 pack(const float* s) { return make_float4(s[0], s[1], s[2], s[3]); }
__device__ __forceinline__ double2 pack(const double* s) { return make_double2(s[0], s[1]); }

// 16-byte load / store; the address must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void load_vec(const T* src, T* dst) {
  GEMMLAB_CHECK_ALIGNED(src);
  unpack(*reinterpret_cast<const typename Vec16<T>::type*>(src), dst);
}
template <typename T>
__device__ __forceinline__ void load_global_vec(const T* src, T* dst) {
  GEMMLAB_GLOBAL_READ(src, Vec16<T>::n);
  load_vec(src, dst);
}
template <typename T>
__device__ __forceinline__ void store_vec(T* dst, const T* src) {
  GEMMLAB_CHECK_ALIGNED(dst);
  *reinterpret_cast<typename Vec16<T>::type*>(dst) = pack(src);
}

__device__ __forceinline__ int imin(int x, int y) { return x < y ? x : y; }

// A matrix read as op[o][q] = ptr[o * s_outer + q * s_k] with o < outer and q < k: A is read with
// o = row (outer = m), B with o = column (outer = n), so one tile loader serves both.
template <typename T>
struct Operand {
  const T* ptr;
  index_t s_outer, s_k;
  int outer, k;

  __device__ __forceinline__ T at(int o, int q) const {
    GEMMLAB_GLOBAL_READ(ptr + o * s_outer + q * s_k, 1);
    return ptr[o * s_outer + q * s_k];
  }
  __device__ __forceinline__ T at_or_zero(int o, int q) const { return (o < outer && q < k) ? at(o, q) : T(0); }
};

// The output C; vec: C is contiguous along its rows and every 16-byte run starting at a column
// that is a multiple of the vector width is 16-byte aligned.
template <typename T>
struct Output {
  T* ptr;
  index_t s_row, s_col;
  int rows, cols;
  bool vec;
};

// Stores W consecutive elements of one row of C starting at column col (a multiple of the vector
// width), skipping what lies outside C.
template <typename T, int W>
__device__ __forceinline__ void store_row(const Output<T>& c, int row, int col, const T* v) {
  constexpr int V = Vec16<T>::n;
  static_assert(W % V == 0, "a stored run is whole vectors");
  if (row >= c.rows) return;
  T* p = c.ptr + row * c.s_row + col * c.s_col;
  if (c.vec && col + W <= c.cols) {
#pragma unroll
    for (int j = 0; j < W; j += V) store_vec(p + j, v + j);
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) {
      if (col + j < c.cols) p[j * c.s_col] = v[j];
    }
  }
}

// How a tile of an operand is read from global memory.
enum class Load : int {
  ScalarK = 0,      // one element at a time, consecutive threads along k (any strides)
  ScalarOuter = 1,  // one element at a time, consecutive threads along the outer dimension
  KVec = 2,         // 16-byte vectors along k (s_k == 1, aligned)
  OuterVec = 3,     // 16-byte vectors along the outer dimension (s_outer == 1, aligned)
};

template <Load L>
struct LoadTag {
  static constexpr Load value = L;
};

// Moves one OUTER x BK tile of an operand (outer indices outer0.., k indices k0..) from global
// memory into registers (load), then into shared memory laid out [BK][PITCH], element (o, q) at
// s[q * PITCH + o] (store). Splitting the two lets a kernel issue the loads of the next tile before
// computing on the current one. Elements outside the operand read as zero.
template <typename T, int OUTER, int BK, int THREADS, Load L>
struct TileLoader {
  static constexpr int V = Vec16<T>::n;
  static constexpr int PITCH = OUTER + V;  // one vector of padding: fewer bank conflicts, rows stay aligned
  static constexpr int N = OUTER * BK / THREADS;  // elements per thread
  static_assert((OUTER * BK) % (THREADS * V) == 0, "every thread moves whole vectors");
  static_assert(OUTER % V == 0 && BK % V == 0, "tile sides are multiples of the vector width");

  static constexpr bool kOuterFastest = L == Load::ScalarOuter;

  T reg[N];

  // Where this thread's i-th element lies on the scalar paths: outer index o and k index q from the
  // tile's corner, consecutive threads along o (ScalarOuter) or along q (ScalarK).
  __device__ __forceinline__ static void scalar_slot(int i, int& o, int& q) {
    const int e = threadIdx.x + i * THREADS;
    o = kOuterFastest ? e % OUTER : e / BK;
    q = kOuterFastest ? e / OUTER : e % BK;
  }

  __device__ __forceinline__ void load(const Operand<T>& op, int outer0, int k0) {
    const int tid = threadIdx.x;
    if constexpr (L == Load::KVec) {
      constexpr int PER_ROW = BK / V;  // vectors per outer index
#pragma unroll
      for (int i = 0; i < N / V; ++i) {
        const int v = tid + i * THREADS;
        const int o = outer0 + v / PER_ROW, q = k0 + (v % PER_ROW) * V;
        T* dst = reg + i * V;
        if (o < op.outer && q + V <= op.k) {
          load_global_vec(op.ptr + o * op.s_outer + q, dst);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) dst[j] = op.at_or_zero(o, q + j);
        }
      }
    } else if constexpr (L == Load::OuterVec) {
      constexpr int PER_K = OUTER / V;  // vectors per k index
#pragma unroll
      for (int i = 0; i < N / V; ++i) {
        const int v = tid + i * THREADS;
        const int o = outer0 + (v % PER_K) * V, q = k0 + v / PER_K;
        T* dst = reg + i * V;
        if (q < op.k && o + V <= op.outer) {
          load_global_vec(op.ptr + o + q * op.s_k, dst);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) dst[j] = op.at_or_zero(o + j, q);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        int o, q;
        scalar_slot(i, o, q);
        reg[i] = op.at_or_zero(outer0 + o, k0 + q);
      }
    }
  }

  __device__ __forceinline__ void store(T* s) const {
    const int tid = threadIdx.x;
    if constexpr (L == Load::KVec) {
      constexpr int PER_ROW = BK / V;
#pragma unroll
      for (int i = 0; i < N / V; ++i) {
        const int v = tid + i * THREADS;
        const int o = v / PER_ROW, q = (v % PER_ROW) * V;
#pragma unroll
        for (int j = 0; j < V; ++j) s[(q + j) * PITCH + o] = reg[i * V + j];
      }
    } else if constexpr (L == Load::OuterVec) {
      constexpr int PER_K = OUTER / V;
#pragma unroll
      for (int i = 0; i < N / V; ++i) {
        const int v = tid + i * THREADS;
        store_vec(s + (v / PER_K) * PITCH + (v % PER_K) * V, reg + i * V);
      }
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        int o, q;
        scalar_slot(i, o, q);
        s[q * PITCH + o] = reg[i];
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// 1. naive: a block is 32 rows x 8 columns of C, threadIdx.x % 32 picks the row.

constexpr int kSimpleThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kSimpleThreads)
    naive_kernel(Operand<T> A, Operand<T> B, Output<T> C, int tiles_m) {
  const int i = (blockIdx.x % tiles_m) * 32 + threadIdx.x % 32;
  const int j = (blockIdx.x / tiles_m) * 8 + threadIdx.x / 32;
  if (i >= C.rows || j >= C.cols) return;
  T acc = 0;
  for (int q = 0; q < A.k; ++q) acc += A.at(i, q) * B.at(j, q);
  C.ptr[i * C.s_row + j * C.s_col] = acc;
}

// 2. coalesced: a block is 8 rows x 32 columns of C, threadIdx.x % 32 picks the column.

template <typename T>
__global__ void __launch_bounds__(kSimpleThreads)
    coalesced_kernel(Operand<T> A, Operand<T> B, Output<T> C, int tiles_n) {
  const int i = (blockIdx.x / tiles_n) * 8 + threadIdx.x / 32;
  const int j = (blockIdx.x % tiles_n) * 32 + threadIdx.x % 32;
  if (i >= C.rows || j >= C.cols) return;
  T acc = 0;
  for (int q = 0; q < A.k; ++q) acc += A.at(i, q) * B.at(j, q);
  C.ptr[i * C.s_row + j * C.s_col] = acc;
}

// 3. smem: 32x32 tiles of A and B in shared memory, block (32, 32), one element of C per thread.
// Each tile is read so that threadIdx.x walks the operand's smaller stride (a_m_fast: A's rows
// are closer together than its columns; b_n_fast likewise for B's columns).

constexpr int kSmemTile = 32;

template <typename T>
__global__ void __launch_bounds__(kSmemTile* kSmemTile)
    smem_kernel(Operand<T> A, Operand<T> B, Output<T> C, int tiles_n, bool a_m_fast, bool b_n_fast) {
  constexpr int S = kSmemTile;
  __shared__ T As[S][S + 1];  // As[row][q]
  __shared__ T Bs[S][S + 1];  // Bs[q][column]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m0 = (blockIdx.x / tiles_n) * S, n0 = (blockIdx.x % tiles_n) * S;
  T acc = 0;
  for (int q0 = 0; q0 < A.k; q0 += S) {
    {
      const int r = a_m_fast ? tx : ty, q = a_m_fast ? ty : tx;
      As[r][q] = A.at_or_zero(m0 + r, q0 + q);
    }
    {
      const int c = b_n_fast ? tx : ty, q = b_n_fast ? ty : tx;
      Bs[q][c] = B.at_or_zero(n0 + c, q0 + q);
    }
    __syncthreads();
#pragma unroll 8
    for (int q = 0; q < S; ++q) acc += As[ty][q] * Bs[q][tx];
    __syncthreads();
  }
  const int i = m0 + ty, j = n0 + tx;
  if (i < C.rows && j < C.cols) C.ptr[i * C.s_row + j * C.s_col] = acc;
}

// 4. regblock: each thread accumulates a TM x TN tile of C in registers from TM + TN values read
// (as 16-byte vectors) from shared memory per k step. One shared-memory buffer, two barriers per
// BK-deep tile.

template <typename T>
struct RegBlockShape;
template <>
struct RegBlockShape<float> {
  static constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
};
template <>
struct RegBlockShape<double> {
  static constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4;
};
constexpr int kRegBlockThreads = 256;

template <typename T, Load LA, Load LB>
__global__ void __launch_bounds__(kRegBlockThreads)
    regblock_kernel(Operand<T> A, Operand<T> B, Output<T> C, int tiles_n) {
  using S = RegBlockShape<T>;
  constexpr int BM = S::BM, BN = S::BN, BK = S::BK, TM = S::TM, TN = S::TN, V = Vec16<T>::n;
  static_assert((BM / TM) * (BN / TN) == kRegBlockThreads, "one thread per TM x TN tile");
  using LoadA = TileLoader<T, BM, BK, kRegBlockThreads, LA>;
  using LoadB = TileLoader<T, BN, BK, kRegBlockThreads, LB>;
  __shared__ __align__(16) T As[BK * LoadA::PITCH];
  __shared__ __align__(16) T Bs[BK * LoadB::PITCH];

  const int m0 = (blockIdx.x / tiles_n) * BM, n0 = (blockIdx.x % tiles_n) * BN;
  const int ty = threadIdx.x / (BN / TN), tx = threadIdx.x % (BN / TN);
  LoadA la;
  LoadB lb;
  T acc[TM][TN] = {};

  for (int k0 = 0; k0 < A.k; k0 += BK) {
    la.load(A, m0, k0);
    lb.load(B, n0, k0);
    la.store(As);
    lb.store(Bs);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < BK; ++q) {
      T af[TM], bf[TN];
#pragma unroll
      for (int i = 0; i < TM; i += V) load_vec(As + q * LoadA::PITCH + ty * TM + i, af + i);
#pragma unroll
      for (int j = 0; j < TN; j += V) load_vec(Bs + q * LoadB::PITCH + tx * TN + j, bf + j);
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += af[i] * bf[j];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) store_row<T, TN>(C, m0 + ty * TM + i, n0 + tx * TN, acc[i]);
}

// 5. warptile: the block tile (BM x BN) is split among warps (WM x WN each); a warp covers its tile
// in WMITER x WNITER steps of (kLanesM * kSubM) x (kLanesN * kSubN), each lane holding a
// kSubM x kSubN sub-tile per step. A warp's shared-memory reads of one k step are then 8 and 4
// distinct 16-byte vectors, conflict-free and broadcast to the lanes that share them. Shared memory
// is double buffered: the global loads of tile t+1 are issued before tile t is computed and land in
// the other buffer afterwards, so one barrier per tile suffices.

template <typename T>
struct WarpTileShape;
template <>
struct WarpTileShape<float> {
  // 256 threads, warp tiles 64 x 32, 8 x 8 accumulators per thread (2 x 2 sub-tiles of 4 x 4).
  // BK = 8: with 16, the prefetch registers pushed the common (row-major) case past the 128-register
  // cap into spills (ptxas -v, sm_90); with 8 no vector-load variant spills.
  static constexpr int BM = 128, BN = 128, BK = 8, WARPS_M = 2, WARPS_N = 4, WMITER = 2, WNITER = 2;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int MIN_BLOCKS = 2;  // caps registers at 128 per thread: two blocks per SM
};
template <>
struct WarpTileShape<double> {
  static constexpr int BM = 64, BN = 64, BK = 16, WARPS_M = 2, WARPS_N = 2, WMITER = 1, WNITER = 2;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int MIN_BLOCKS = 1;
};
constexpr int kLanesM = 8, kLanesN = 4, kSubM = 4, kSubN = 4;  // a warp's lanes: 8 x 4 sub-tiles of 4 x 4
constexpr int kGroupM = 8;  // block rows per group in the grouped block order

// Block b -> tile (tm, tn): groups of kGroupM block rows are swept column by column, so blocks that
// run at the same time share rows of A and columns of B in L2.
__device__ __forceinline__ void grouped_tile(int b, int tiles_m, int tiles_n, int& tm, int& tn) {
  const int per_group = kGroupM * tiles_n;
  const int first = (b / per_group) * kGroupM;
  const int rows = imin(tiles_m - first, kGroupM);
  const int within = b % per_group;
  tm = first + within % rows;
  tn = within / rows;
}

template <typename T, Load LA, Load LB>
__global__ void __launch_bounds__(WarpTileShape<T>::THREADS, WarpTileShape<T>::MIN_BLOCKS)
    warptile_kernel(Operand<T> A, Operand<T> B, Output<T> C, int tiles_m, int tiles_n) {
  using S = WarpTileShape<T>;
  constexpr int BM = S::BM, BN = S::BN, BK = S::BK, WMITER = S::WMITER, WNITER = S::WNITER;
  constexpr int THREADS = S::THREADS, V = Vec16<T>::n;
  constexpr int WM = BM / S::WARPS_M, WN = BN / S::WARPS_N;
  constexpr int STEP_M = kLanesM * kSubM, STEP_N = kLanesN * kSubN;  // a warp's footprint per step
  static_assert(kLanesM * kLanesN == 32, "a warp is 32 lanes");
  static_assert(WM == WMITER * STEP_M && WN == WNITER * STEP_N, "warp tile = iterations x steps");
  static_assert(kSubM % V == 0 && kSubN % V == 0, "sub-tiles are read as whole vectors");
  using LoadA = TileLoader<T, BM, BK, THREADS, LA>;
  using LoadB = TileLoader<T, BN, BK, THREADS, LB>;
  constexpr int PA = LoadA::PITCH, PB = LoadB::PITCH;
  __shared__ __align__(16) T As[2][BK * PA];
  __shared__ __align__(16) T Bs[2][BK * PB];

  int tm, tn;
  grouped_tile(blockIdx.x, tiles_m, tiles_n, tm, tn);
  const int m0 = tm * BM, n0 = tn * BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp % S::WARPS_M) * WM + (lane / kLanesN) * kSubM;  // this lane's first row in the tile
  const int wn = (warp / S::WARPS_M) * WN + (lane % kLanesN) * kSubN;  // and first column

  T acc[WMITER][WNITER][kSubM][kSubN] = {};

  LoadA la;
  LoadB lb;
  const int ktiles = (A.k + BK - 1) / BK;
  if (ktiles > 0) {
    la.load(A, m0, 0);
    lb.load(B, n0, 0);
    la.store(As[0]);
    lb.store(Bs[0]);
  }
  __syncthreads();

  for (int t = 0; t < ktiles; ++t) {
    const int cur = t & 1;
    const bool more = t + 1 < ktiles;
    if (more) {  // issue the next tile's global loads now; they complete while we compute
      la.load(A, m0, (t + 1) * BK);
      lb.load(B, n0, (t + 1) * BK);
    }
    const T* as = As[cur] + wm;
    const T* bs = Bs[cur] + wn;
#pragma unroll
    for (int q = 0; q < BK; ++q) {
      T af[WMITER][kSubM], bf[WNITER][kSubN];
#pragma unroll
      for (int mi = 0; mi < WMITER; ++mi)
#pragma unroll
        for (int r = 0; r < kSubM; r += V) load_vec(as + q * PA + mi * STEP_M + r, &af[mi][r]);
#pragma unroll
      for (int ni = 0; ni < WNITER; ++ni)
#pragma unroll
        for (int c = 0; c < kSubN; c += V) load_vec(bs + q * PB + ni * STEP_N + c, &bf[ni][c]);
#pragma unroll
      for (int mi = 0; mi < WMITER; ++mi)
#pragma unroll
        for (int ni = 0; ni < WNITER; ++ni)
#pragma unroll
          for (int r = 0; r < kSubM; ++r)
#pragma unroll
            for (int c = 0; c < kSubN; ++c) acc[mi][ni][r][c] += af[mi][r] * bf[ni][c];
    }
    if (more) {  // the other buffer was last read before the previous barrier: free to fill
      la.store(As[cur ^ 1]);
      lb.store(Bs[cur ^ 1]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int mi = 0; mi < WMITER; ++mi)
#pragma unroll
    for (int ni = 0; ni < WNITER; ++ni)
#pragma unroll
      for (int r = 0; r < kSubM; ++r)
        store_row<T, kSubN>(C, m0 + wm + mi * STEP_M + r, n0 + wn + ni * STEP_N, acc[mi][ni][r]);
}

// ---------------------------------------------------------------------------------------------
// Host side: choosing load paths, grids, launching.

template <typename T>
Operand<T> make_operand(const T* ptr, index_t s_outer, index_t s_k, index_t outer, index_t k) {
  // The stride of a size-1 dimension never multiplies a nonzero index: 0 lets it pass the checks.
  return {ptr, outer == 1 ? 0 : s_outer, k == 1 ? 0 : s_k, static_cast<int>(outer), static_cast<int>(k)};
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Whether consecutive threads should walk the outer index (scalar loads, the smem kernel).
template <typename T>
bool outer_fastest(const Operand<T>& op) {
  return std::llabs(op.s_outer) < std::llabs(op.s_k);
}

template <typename T>
Load choose_load(const Operand<T>& op) {
  constexpr int V = Vec16<T>::n;
  if (aligned16(op.ptr) && op.s_k == 1 && op.s_outer % V == 0) return Load::KVec;
  if (aligned16(op.ptr) && op.s_outer == 1 && op.s_k % V == 0) return Load::OuterVec;
  return outer_fastest(op) ? Load::ScalarOuter : Load::ScalarK;
}

// Calls f(LoadTag<la>{}, LoadTag<lb>{}) with the load paths as compile-time constants.
template <typename F>
cudaError_t with_loads(Load la, Load lb, F&& f) {
  auto with_b = [&](auto a_tag) -> cudaError_t {
    switch (lb) {
      case Load::KVec: return f(a_tag, LoadTag<Load::KVec>{});
      case Load::OuterVec: return f(a_tag, LoadTag<Load::OuterVec>{});
      case Load::ScalarOuter: return f(a_tag, LoadTag<Load::ScalarOuter>{});
      default: return f(a_tag, LoadTag<Load::ScalarK>{});
    }
  };
  switch (la) {
    case Load::KVec: return with_b(LoadTag<Load::KVec>{});
    case Load::OuterVec: return with_b(LoadTag<Load::OuterVec>{});
    case Load::ScalarOuter: return with_b(LoadTag<Load::ScalarOuter>{});
    default: return with_b(LoadTag<Load::ScalarK>{});
  }
}

inline index_t ceil_div(index_t x, index_t y) { return (x + y - 1) / y; }

// Launches kernel(args...) on a 1-D grid of `blocks` blocks (at most 2^31 - 1) of `threads` threads:
// cudaErrorInvalidValue for a larger grid, else the launch's error.
template <typename KernelFn, typename... Args>
cudaError_t launch(KernelFn kernel, index_t blocks, dim3 threads, cudaStream_t stream, const Args&... args) {
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  GEMMLAB_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)), threads, stream, args...);
  return cudaGetLastError();
}

}  // namespace detail

template <typename T>
Plan plan(const Problem<T>& p) {
  using namespace detail;
  const Operand<T> A = make_operand(p.a, p.a_rs, p.a_cs, p.m, p.k);
  const Operand<T> B = make_operand(p.b, p.b_cs, p.b_rs, p.n, p.k);
  const bool c_vec = aligned16(p.c) && p.c_cs == 1 && p.c_rs % Vec16<T>::n == 0;
  return {static_cast<int>(choose_load(A)), static_cast<int>(choose_load(B)), c_vec};
}

template <typename T>
cudaError_t gemm(Kernel kind, const Problem<T>& p, cudaStream_t stream) {
  using namespace detail;
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "float or double");
  if (p.m < 0 || p.n < 0 || p.k < 0 || p.m > INT_MAX || p.n > INT_MAX || p.k > INT_MAX) return cudaErrorInvalidValue;
  if (p.m == 0 || p.n == 0) return cudaSuccess;

  const Operand<T> A = make_operand(p.a, p.a_rs, p.a_cs, p.m, p.k);
  const Operand<T> B = make_operand(p.b, p.b_cs, p.b_rs, p.n, p.k);
  const Plan how = plan(p);
  const Output<T> C{p.c, p.c_rs, p.c_cs, static_cast<int>(p.m), static_cast<int>(p.n), how.c_vec};
  const Load la = static_cast<Load>(how.a_load), lb = static_cast<Load>(how.b_load);
  const bool a_m_fast = outer_fastest(A), b_n_fast = outer_fastest(B);

  switch (kind) {
    case Kernel::Naive: {
      const index_t tiles_m = ceil_div(p.m, 32);
      return launch(naive_kernel<T>, tiles_m * ceil_div(p.n, 8), dim3(kSimpleThreads), stream, A, B, C,
                    static_cast<int>(tiles_m));
    }
    case Kernel::Coalesced: {
      const index_t tiles_n = ceil_div(p.n, 32);
      return launch(coalesced_kernel<T>, tiles_n * ceil_div(p.m, 8), dim3(kSimpleThreads), stream, A, B, C,
                    static_cast<int>(tiles_n));
    }
    case Kernel::Smem: {
      const index_t tiles_n = ceil_div(p.n, kSmemTile);
      return launch(smem_kernel<T>, tiles_n * ceil_div(p.m, kSmemTile), dim3(kSmemTile, kSmemTile), stream, A, B, C,
                    static_cast<int>(tiles_n), a_m_fast, b_n_fast);
    }
    case Kernel::RegBlock: {
      using Sh = RegBlockShape<T>;
      const index_t tiles_n = ceil_div(p.n, Sh::BN);
      return with_loads(la, lb, [&](auto ta, auto tb) {
        return launch(regblock_kernel<T, decltype(ta)::value, decltype(tb)::value>, tiles_n * ceil_div(p.m, Sh::BM),
                      dim3(kRegBlockThreads), stream, A, B, C, static_cast<int>(tiles_n));
      });
    }
    case Kernel::WarpTile: {
      using Sh = WarpTileShape<T>;
      const index_t tiles_m = ceil_div(p.m, Sh::BM), tiles_n = ceil_div(p.n, Sh::BN);
      return with_loads(la, lb, [&](auto ta, auto tb) {
        return launch(warptile_kernel<T, decltype(ta)::value, decltype(tb)::value>, tiles_m * tiles_n,
                      dim3(Sh::THREADS), stream, A, B, C, static_cast<int>(tiles_m), static_cast<int>(tiles_n));
      });
    }
  }
  return cudaErrorInvalidValue;
}

}  // namespace gpu
}  // namespace gemmlab
