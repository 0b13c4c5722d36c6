// A torch-free check of gemmlab's CUDA kernels (gemm_kernels.cuh), built with plain nvcc:
//
//   nvcc -std=c++17 -arch=sm_90 -O3 -o build/cuda_harness csrc/cuda/harness.cu   (scripts/cuda_check.sh)
//
// Building it instantiates every kernel of the ladder for float and double with every load path.
// Run on a machine with a CUDA device, it launches each kernel on many shapes (odd sizes, sizes
// that are not multiples of any tile, k = 0, single rows and columns) and storage layouts
// (row- and column-major, padded, strided, misaligned, broadcast), on NaN-poisoned outputs, and
// checks every element against a long double CPU reference with gemmlab's k-scaled error bound;
// it also checks that nothing outside C was written. Without a device it only checks the host-side
// planning and says that the kernels were not run (exit 0; --require-gpu makes that exit 2).
//
// Compiled with g++ -x c++ -DGEMMLAB_CUDA_EMULATE instead, the same checks run the kernels on the
// CPU through emulate.h (the quick case list; see tests/test_cuda_kernels_emulated.py).

#include "gemm_kernels.cuh"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace g = gemmlab::gpu;

#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

namespace {

// ----------------------------------------------------------------------------------------------
// Device memory, or host memory under the emulation.

[[maybe_unused]] bool check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
  return false;
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  std::size_t size = 0;
  explicit DeviceBuffer(std::size_t n) : size(n) {
#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
    ptr = static_cast<T*>(std::aligned_alloc(256, ((n * sizeof(T) + 255) / 256) * 256));
#else
    if (!check_cuda(cudaMalloc(&ptr, n * sizeof(T)), "cudaMalloc")) std::exit(1);
#endif
  }
  ~DeviceBuffer() {
#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
    std::free(ptr);
#else
    cudaFree(ptr);
#endif
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void upload(const std::vector<T>& host) {
#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
    std::memcpy(ptr, host.data(), size * sizeof(T));
#else
    if (!check_cuda(cudaMemcpy(ptr, host.data(), size * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy")) std::exit(1);
#endif
  }
  std::vector<T> download() const {
    std::vector<T> host(size);
#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
    std::memcpy(host.data(), ptr, size * sizeof(T));
#else
    if (!check_cuda(cudaMemcpy(host.data(), ptr, size * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy")) std::exit(1);
#endif
    return host;
  }
};

// ----------------------------------------------------------------------------------------------
// Storage layouts: where element (i, j) of a rows x cols matrix lives in a buffer. Every buffer has
// kGuard NaN elements before and after it, and every slot no element maps to is NaN too, so a read
// of the wrong element poisons the result and a stray write shows up as a changed NaN.

constexpr std::size_t kGuard = 64;

enum class Layout { RowMajor, ColMajor, PaddedRows, PaddedCols, Strided, Offset, Broadcast };
constexpr Layout kInputLayouts[] = {Layout::RowMajor, Layout::ColMajor, Layout::PaddedRows, Layout::PaddedCols,
                                    Layout::Strided,  Layout::Offset,   Layout::Broadcast};
constexpr Layout kOutputLayouts[] = {Layout::RowMajor, Layout::PaddedRows, Layout::ColMajor, Layout::Offset};

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::RowMajor: return "row-major";
    case Layout::ColMajor: return "column-major";
    case Layout::PaddedRows: return "padded-rows";
    case Layout::PaddedCols: return "padded-columns";
    case Layout::Strided: return "strided";
    case Layout::Offset: return "offset";
    case Layout::Broadcast: return "broadcast";
  }
  return "?";
}

long long round_up(long long x, long long to) { return (x + to - 1) / to * to; }

struct Storage {
  long long offset, rs, cs;  // element (i, j) at guard + offset + i * rs + j * cs
  std::size_t size;          // buffer elements, guards included
};

Storage storage(Layout l, long long rows, long long cols) {
  long long offset = 0, rs = cols, cs = 1, span = rows * cols;
  switch (l) {
    case Layout::RowMajor: break;
    case Layout::ColMajor: rs = 1, cs = rows; break;
    case Layout::PaddedRows: rs = round_up(cols, 8) + 8, span = rows * rs; break;  // aligned rows, vector path
    case Layout::PaddedCols: rs = 1, cs = round_up(rows, 8) + 8, span = cols * cs; break;
    case Layout::Strided: offset = 1, rs = 2 * cols + 3, cs = 2, span = 1 + rows * rs; break;  // scalar path
    case Layout::Offset: offset = 1, span = 1 + rows * cols; break;                        // misaligned
    case Layout::Broadcast: rs = 0, span = cols; break;                                   // every row the same
  }
  return {offset, rs, cs, static_cast<std::size_t>(span + static_cast<long long>(2 * kGuard))};
}

// Which buffer slots hold an element of the matrix.
std::vector<char> element_slots(const Storage& s, long long rows, long long cols) {
  std::vector<char> is_element(s.size, 0);
  for (long long i = 0; i < rows; ++i)
    for (long long j = 0; j < cols; ++j) is_element[kGuard + s.offset + i * s.rs + j * s.cs] = 1;
  return is_element;
}

// ----------------------------------------------------------------------------------------------

template <typename T>
struct Matrix {  // logical values, row-major
  long long rows, cols;
  std::vector<T> v;
  T at(long long i, long long j) const { return v[i * cols + j]; }
};

template <typename T>
Matrix<T> random_matrix(long long rows, long long cols, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  Matrix<T> m{rows, cols, std::vector<T>(static_cast<std::size_t>(rows * cols))};
  for (auto& x : m.v) x = static_cast<T>(normal(rng));
  return m;
}

// The values a broadcast layout actually holds: every row equal to row 0.
template <typename T>
Matrix<T> as_stored(const Matrix<T>& m, Layout l) {
  if (l != Layout::Broadcast || m.rows == 0) return m;
  Matrix<T> out = m;
  for (long long i = 1; i < m.rows; ++i)
    for (long long j = 0; j < m.cols; ++j) out.v[i * m.cols + j] = m.v[j];
  return out;
}

template <typename T>
std::vector<T> fill(const Matrix<T>& m, const Storage& s) {
  std::vector<T> buf(s.size, std::numeric_limits<T>::quiet_NaN());
  for (long long i = 0; i < m.rows; ++i)
    for (long long j = 0; j < m.cols; ++j) buf[kGuard + s.offset + i * s.rs + j * s.cs] = m.at(i, j);
  return buf;
}

struct Reference {
  std::vector<long double> value, scale;  // a @ b and |a| @ |b|
};

template <typename T>
Reference reference(const Matrix<T>& a, const Matrix<T>& b) {
  const long long m = a.rows, k = a.cols, n = b.cols;
  Reference r{std::vector<long double>(m * n, 0.0L), std::vector<long double>(m * n, 0.0L)};
  for (long long i = 0; i < m; ++i)
    for (long long p = 0; p < k; ++p) {
      const long double x = a.at(i, p);
      for (long long j = 0; j < n; ++j) {
        const long double y = b.at(p, j);
        r.value[i * n + j] += x * y;
        r.scale[i * n + j] += std::fabs(x * y);
      }
    }
  return r;
}

struct Shape {
  long long m, k, n;
};

struct Tally {
  long long launches = 0, failures = 0;
};

// One launch: fill the operands in their layouts, poison C, run, compare. Returns "" or what failed.
template <typename T>
std::string run_case(g::Kernel kind, const Matrix<T>& a, Layout la, const Matrix<T>& b, Layout lb, Layout lc,
                     const Reference& ref) {
  const long long m = a.rows, k = a.cols, n = b.cols;
  const Storage sa = storage(la, m, k), sb = storage(lb, k, n), sc = storage(lc, m, n);
  DeviceBuffer<T> da(sa.size), db(sb.size), dc(sc.size);
  da.upload(fill(as_stored(a, la), sa));
  db.upload(fill(as_stored(b, lb), sb));
  dc.upload(std::vector<T>(sc.size, std::numeric_limits<T>::quiet_NaN()));

  const g::Problem<T> p{m,           n,     k,     da.ptr + kGuard + sa.offset, sa.rs, sa.cs, db.ptr + kGuard + sb.offset,
                        sb.rs,       sb.cs, dc.ptr + kGuard + sc.offset,        sc.rs, sc.cs};
#if defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__)
  const std::vector<char> a_slots = element_slots(sa, m, k), b_slots = element_slots(sb, k, n);
  gemmlab_emu::reset_reads();
  gemmlab_emu::readable = {{reinterpret_cast<const char*>(da.ptr), sa.size * sizeof(T), sizeof(T), &a_slots},
                           {reinterpret_cast<const char*>(db.ptr), sb.size * sizeof(T), sizeof(T), &b_slots}};
  const cudaError_t err = g::gemm(kind, p, nullptr);
  const long long bad_reads = gemmlab_emu::bad_reads, misaligned = gemmlab_emu::misaligned;
  const std::string first_bad_read = gemmlab_emu::first_bad_read;
  gemmlab_emu::reset_reads();
  if (err == cudaSuccess && misaligned)
    return std::to_string(misaligned) + " 16-byte vector accesses at addresses that are not 16-byte aligned";
  if (err == cudaSuccess && bad_reads)
    return "read memory that is not an element of A or B (" + std::to_string(bad_reads) + " reads; first: " + first_bad_read + ")";
#else
  cudaError_t err = g::gemm(kind, p, nullptr);
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
#endif
  if (err != cudaSuccess) return std::string("launch failed: ") + cudaGetErrorString(err);

  const std::vector<T> got = dc.download();
  const long double eps = std::numeric_limits<T>::epsilon();
  const long double tiny = std::numeric_limits<double>::min();
  const std::vector<char> is_element = element_slots(sc, m, n);
  for (long long i = 0; i < m; ++i)
    for (long long j = 0; j < n; ++j) {
      const std::size_t at = kGuard + sc.offset + i * sc.rs + j * sc.cs;
      const long double x = got[at], want = ref.value[i * n + j];
      const long double bound = (2 * k + 2) * eps * ref.scale[i * n + j] + tiny;
      if (!(std::fabs(x - want) <= bound)) {  // NaN fails too
        char msg[160];
        std::snprintf(msg, sizeof msg, "C[%lld][%lld] = %.9Lg, expected %.9Lg (bound %.3Lg)", i, j, x, want, bound);
        return msg;
      }
    }
  for (std::size_t at = 0; at < sc.size; ++at) {
    if (!is_element[at] && !std::isnan(got[at])) {
      char msg[120];
      std::snprintf(msg, sizeof msg, "wrote outside C: buffer slot %lld (C starts at %lld)", static_cast<long long>(at),
                    static_cast<long long>(kGuard + sc.offset));
      return msg;
    }
  }
  return "";
}

template <typename T>
void check_all(const std::vector<Shape>& shapes, bool all_layouts, Tally& tally, const char* dtype) {
  std::mt19937_64 rng(1234);
  for (const Shape& s : shapes) {
    const Matrix<T> a = random_matrix<T>(s.m, s.k, rng), b = random_matrix<T>(s.k, s.n, rng);
    // Broadcast layouts change the values; one reference per combination of broadcast or not.
    const Matrix<T> a_b = as_stored(a, Layout::Broadcast), b_b = as_stored(b, Layout::Broadcast);
    const Reference refs[2][2] = {{reference(a, b), reference(a, b_b)}, {reference(a_b, b), reference(a_b, b_b)}};

    struct Combo {
      Layout a, b, c;
    };
    std::vector<Combo> combos;
    for (Layout la : kInputLayouts)
      for (Layout lb : kInputLayouts)
        if (all_layouts || la == lb || la == Layout::RowMajor || lb == Layout::RowMajor)
          combos.push_back({la, lb, Layout::RowMajor});
    for (Layout lc : kOutputLayouts)
      if (lc != Layout::RowMajor) combos.push_back({Layout::RowMajor, Layout::RowMajor, lc});

    for (int kk = 0; kk < g::kNumKernels; ++kk) {
      const g::Kernel kind = static_cast<g::Kernel>(kk);
      for (const Combo& c : combos) {
        const Reference& ref = refs[c.a == Layout::Broadcast][c.b == Layout::Broadcast];
        const std::string what = run_case(kind, a, c.a, b, c.b, c.c, ref);
        ++tally.launches;
        if (!what.empty()) {
          if (++tally.failures <= 25)
            std::printf("FAIL %-9s %-6s m=%lld k=%lld n=%lld  A %s, B %s, C %s: %s\n", g::kernel_name(kind), dtype, s.m,
                        s.k, s.n, layout_name(c.a), layout_name(c.b), layout_name(c.c), what.c_str());
        }
      }
    }
  }
}

// Host-side planning: the load paths that the storage layouts should get. Needs no device.
template <typename T>
int check_plans(const char* dtype) {
  struct Expect {
    Layout a, b, c;
    int a_load, b_load;
    bool c_vec;
  };
  const long long m = 67, k = 35, n = 29;  // no multiple of 4: only padded layouts give aligned rows
  const Expect expect[] = {
      // load paths: 0 scalars with threads along k, 1 scalars along outer, 2 vectors along k, 3 along outer
      {Layout::PaddedRows, Layout::PaddedRows, Layout::PaddedRows, 2, 3, true},  // A along k, B along n
      {Layout::PaddedCols, Layout::PaddedCols, Layout::ColMajor, 3, 2, false},   // transposed: A along m, B along k
      {Layout::RowMajor, Layout::ColMajor, Layout::RowMajor, 0, 0, false},       // rows of 35 / 67: misaligned
      {Layout::ColMajor, Layout::RowMajor, Layout::Offset, 1, 1, false},         // the same, transposed
      {Layout::Strided, Layout::Offset, Layout::Offset, 0, 1, false},
      {Layout::Broadcast, Layout::PaddedRows, Layout::PaddedRows, 2, 3, true},   // stride-0 rows: still vectors
  };
  int bad = 0;
  alignas(16) static T buffer[16384];
  for (const Expect& e : expect) {
    const Storage sa = storage(e.a, m, k), sb = storage(e.b, k, n), sc = storage(e.c, m, n);
    const g::Problem<T> p{m, n, k, buffer + sa.offset, sa.rs, sa.cs, buffer + sb.offset, sb.rs, sb.cs,
                          buffer + sc.offset, sc.rs, sc.cs};
    const g::Plan got = g::plan(p);
    if (got.a_load != e.a_load || got.b_load != e.b_load || got.c_vec != e.c_vec) {
      std::printf("FAIL plan %s: A %s, B %s, C %s -> loads %d/%d, c_vec %d; expected %d/%d, %d\n", dtype,
                  layout_name(e.a), layout_name(e.b), layout_name(e.c), got.a_load, got.b_load, got.c_vec, e.a_load,
                  e.b_load, e.c_vec);
      ++bad;
    }
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  bool require_gpu = false, quick = kEmulated;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--require-gpu") == 0) {
      require_gpu = true;
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--require-gpu] [--quick]\n", argv[0]);
      return 2;
    }
  }

  const int plan_failures = check_plans<float>("float32") + check_plans<double>("float64");
  if (plan_failures) return 1;

#if !(defined(GEMMLAB_CUDA_EMULATE) && !defined(__CUDACC__))
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("cuda harness: every kernel compiled for float and double; no CUDA device here (%s), so none was run\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    return require_gpu ? 2 : 0;
  }
#else
  (void)require_gpu;
#endif

  // Sizes: single elements, odd sizes, k = 0, one row / one column, and sizes just past the tiles
  // (32, 64, 128) so that every kernel has partial tiles in m, n and k.
  std::vector<Shape> shapes = {{1, 1, 1}, {5, 7, 3}, {17, 33, 9}, {64, 0, 64}, {1, 37, 70}, {70, 37, 1}, {129, 67, 131}};
  if (!quick) {
    shapes.push_back({128, 128, 128});
    shapes.push_back({33, 200, 65});
    shapes.push_back({300, 257, 263});
  }
  Tally tally;
  check_all<float>(shapes, !quick, tally, "float32");
  check_all<double>(shapes, !quick, tally, "float64");
  std::printf("cuda harness (%s): %lld launches of %d kernels (float32, float64; %zu shapes; storage layouts%s): %s\n",
              kEmulated ? "CPU emulation" : "GPU", tally.launches, g::kNumKernels, shapes.size(),
              quick ? ", quick set" : "", tally.failures ? "FAILURES above" : "all within the error bound");
  if (tally.failures) std::printf("%lld failures\n", tally.failures);
  return tally.failures ? 1 : 0;
}
