// gemmlab's dispatch core (see dispatch.h): torch.matmul's shape semantics on top of a 2-D kernel,
// for batched operands with broadcast (stride-0) batch dimensions, without copying any operand.

#include "dispatch.h"
#include "gemm/aligned_buffer.h"

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <c10/util/SmallVector.h>
#include <sys/mman.h>
#include <pthread.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace gemmlab {
namespace {

// A fixed table, so that the hot path reads it without a lock while a kernel is being added.
constexpr int MAX_KERNELS = 16;
std::array<Kernel, MAX_KERNELS> table;
std::atomic<int> table_size{0};
std::mutex registering;

std::atomic<bool> tracing{false};
std::mutex trace_mutex;
std::vector<std::tuple<std::string, int64_t, int64_t, int64_t, int64_t, at::ScalarType, uint64_t>> trace;

// Batches whose entries have fewer multiply-adds than this per thread are run a range of entries
// per thread (each on the kernel's serial path); a fork/join costs a few microseconds.
constexpr int64_t BATCH_FMAS_PER_TASK = 1 << 16;
// An entry with fewer multiply-adds than this per thread cannot keep the threads busy on its own.
constexpr int64_t FMAS_PER_THREAD = 1 << 20;
// Products above this many multiply-adds release the GIL while the kernel runs.
constexpr int64_t RELEASE_GIL_FMAS = 1 << 18;

// A plain torch.Tensor (or nn.Parameter) that no torch function override or mode wants to see.
const at::Tensor* plain_tensor(py::handle obj) {
  PyObject* p = obj.ptr();
  // Exact types only: Parameter's torch function is disabled, any other subclass may have one.
  if (!THPVariable_CheckExact(p) || at::impl::torch_function_mode_enabled()) return nullptr;
  return &THPVariable_Unpack(p);
}

bool dtype_supported(const Kernel& kern, at::ScalarType t) {
  switch (t) {
    case at::kFloat:
    case at::kDouble: return true;
    case at::kHalf:
    case at::kBFloat16:
    case at::kComplexFloat:
    case at::kComplexDouble: return kern.is_torch || kern.is_auto;
    default: return false;
  }
}

bool device_supported(const Kernel& kern, const at::Device& d) {
  return d.is_cpu() || ((kern.is_torch || kern.is_auto) && d.is_cuda());
}

// One batch dimension (after broadcasting), with each operand's stride along it in elements.
struct BatchDim {
  int64_t size, sa, sb, sc;
};

// A (batched) product in the kernels' terms: C[i] (m x n) = A[i] (m x k) @ B[i] (k x n) for every
// index i of the batch dimensions, all strides in elements.
struct Problem {
  int64_t m = 0, n = 0, k = 0;
  int64_t a_rs = 0, a_cs = 0, b_rs = 0, b_cs = 0, c_rs = 0, c_cs = 0;
  c10::SmallVector<BatchDim, 4> batch;  // outermost first; size-1 dimensions dropped
  c10::SmallVector<int64_t, 6> full_shape;  // batch sizes (broadcast), m, n: the output before squeezing
  c10::SmallVector<int64_t, 6> out_shape;  // torch.matmul's result shape
  int64_t count = 1;  // number of 2-D products
};

// The operands' sizes and strides with torch.matmul's 1-D promotion: (k,) -> (1, k) for a,
// (k,) -> (k, 1) for b. The stride of a promoted size-1 dimension is never used.
struct Promoted {
  c10::SmallVector<int64_t, 6> sizes, strides;
};

Promoted promote(const at::Tensor& t, bool is_a) {
  Promoted p;
  p.sizes.assign(t.sizes().begin(), t.sizes().end());
  p.strides.assign(t.strides().begin(), t.strides().end());
  if (t.dim() == 1) {
    const auto at_ = is_a ? p.sizes.begin() : p.sizes.end();
    p.sizes.insert(at_, 1);
    p.strides.insert(is_a ? p.strides.begin() : p.strides.end(), 0);
  }
  return p;
}

// Fills the shapes and the batch dimensions; false if the shapes do not fit.
bool plan(const at::Tensor& a, const at::Tensor& b, Problem& pr) {
  const Promoted pa = promote(a, true), pb = promote(b, false);
  const size_t da = pa.sizes.size(), db = pb.sizes.size();
  pr.m = pa.sizes[da - 2];
  pr.k = pa.sizes[da - 1];
  pr.n = pb.sizes[db - 1];
  if (pb.sizes[db - 2] != pr.k) return false;
  pr.a_rs = pa.strides[da - 2];
  pr.a_cs = pa.strides[da - 1];
  pr.b_rs = pb.strides[db - 2];
  pr.b_cs = pb.strides[db - 1];
  const size_t lead = std::max(da, db) - 2;
  for (size_t d = 0; d < lead; ++d) {  // right-aligned broadcasting of the batch dimensions
    const int64_t off_a = static_cast<int64_t>(d) - static_cast<int64_t>(lead - (da - 2));
    const int64_t off_b = static_cast<int64_t>(d) - static_cast<int64_t>(lead - (db - 2));
    const int64_t size_a = off_a >= 0 ? pa.sizes[off_a] : 1, size_b = off_b >= 0 ? pb.sizes[off_b] : 1;
    if (size_a != size_b && size_a != 1 && size_b != 1) return false;
    const int64_t size = size_a == 1 ? size_b : size_a;
    pr.full_shape.push_back(size);
    if (size != 1) {
      pr.batch.push_back({size, size_a == 1 ? 0 : pa.strides[off_a], size_b == 1 ? 0 : pb.strides[off_b], 0});
    }
    pr.count *= size;
  }
  pr.full_shape.push_back(pr.m);
  pr.full_shape.push_back(pr.n);
  pr.out_shape.assign(pr.full_shape.begin(), pr.full_shape.end() - 2);
  if (a.dim() > 1) pr.out_shape.push_back(pr.m);
  if (b.dim() > 1) pr.out_shape.push_back(pr.n);
  return true;
}

// C's strides in the (batch..., m, n) frame: those of a user's `out` (shape out_shape, so a
// dimension torch.matmul squeezes away gets stride 0), or, for out == nullptr, those of the
// contiguous tensor of shape full_shape the core allocates.
void set_output_strides(const at::Tensor* out, bool a_is_1d, bool b_is_1d, Problem& pr) {
  c10::SmallVector<int64_t, 6> strides;
  if (out != nullptr) {
    strides.assign(out->strides().begin(), out->strides().end());
    if (a_is_1d) strides.insert(strides.end() - (b_is_1d ? 0 : 1), 0);
    if (b_is_1d) strides.push_back(0);
  } else {
    strides.resize(pr.full_shape.size());
    int64_t step = 1;
    for (size_t d = strides.size(); d-- > 0;) {
      strides[d] = step;
      step *= pr.full_shape[d];
    }
  }
  const size_t lead = strides.size() - 2;
  pr.c_rs = strides[lead];
  pr.c_cs = strides[lead + 1];
  size_t j = 0;
  for (size_t d = 0; d < lead; ++d) {
    if (pr.full_shape[d] != 1) pr.batch[j++].sc = strides[d];
  }
}

// Merge batch dimensions that one stride walks for all three operands, and fold a batch that
// shares one B into the rows of a single product (no batch left: one bigger, faster product).
void simplify(Problem& pr) {
  auto& dims = pr.batch;
  for (size_t d = dims.size(); d-- > 1;) {
    BatchDim& outer = dims[d - 1];
    const BatchDim& inner = dims[d];
    if (outer.sa == inner.sa * inner.size && outer.sb == inner.sb * inner.size && outer.sc == inner.sc * inner.size) {
      outer = {outer.size * inner.size, inner.sa, inner.sb, inner.sc};
      dims.erase(dims.begin() + d);
    }
  }
  if (pr.m == 1 && !dims.empty()) {  // a single row's stride is free: take the batch's
    pr.a_rs = dims.back().sa;
    pr.c_rs = dims.back().sc;
  }
  if (dims.size() == 1 && dims[0].sb == 0 && dims[0].sa == pr.m * pr.a_rs && dims[0].sc == pr.m * pr.c_rs) {
    pr.m *= dims[0].size;
    pr.count = 1;
    dims.clear();
  }
}

// The plan's last steps, once the output is known (out == nullptr: the one the core allocates).
void finish_plan(const at::Tensor* out, const at::Tensor& a, const at::Tensor& b, Problem& pr) {
  set_output_strides(out, a.dim() == 1, b.dim() == 1, pr);
  simplify(pr);
}

// --- auto: the kernel chosen for a product's bucket (dispatch.h) ---------------------------------
using AutoTable = std::unordered_map<uint64_t, int>;  // Bucket::key() -> kernel id
// Read on every auto product without a lock; replaced whole by set_auto_table. A replaced table is
// kept, never freed: a product in another thread may still be reading it (and a process replaces
// its table only a few times: when it loads the tuned file, and when `gemmlab tune` writes it).
std::atomic<const AutoTable*> auto_table{nullptr};
std::vector<std::unique_ptr<const AutoTable>> auto_tables;  // every table installed (under `registering`)
int auto_rule_cpu = -1, auto_rule_other = -1;  // the built-in rule's kernels: cpp, torch

int ceil_log2(int64_t x) { return x <= 1 ? 0 : 64 - __builtin_clzll(static_cast<uint64_t>(x - 1)); }

// 'R': the elements of a row are adjacent (row-major), 'C': those of a column are (column-major,
// e.g. a transposed row-major matrix), 'S': neither. A single row or column is adjacent either way.
char layout_of(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if (cols == 1 || cs == 1) return 'R';
  if (rows == 1 || rs == 1) return 'C';
  return 'S';
}

int layout_code(char layout) { return layout == 'R' ? 0 : layout == 'C' ? 1 : 2; }

Bucket bucket_of(const Problem& pr, const at::Tensor& a) {
  return {a.scalar_type(), a.device().type(), ceil_log2(pr.m), ceil_log2(pr.k), ceil_log2(pr.n), ceil_log2(pr.count),
          layout_of(pr.m, pr.k, pr.a_rs, pr.a_cs), layout_of(pr.k, pr.n, pr.b_rs, pr.b_cs), at::get_num_threads()};
}

// The kernel auto runs a planned product on: its bucket's entry, if the table has one whose kernel
// takes the operands, else the built-in rule. A handful of integer operations and one hash lookup.
const Kernel& resolve_auto(const Problem& pr, const at::Tensor& a) {
  if (const AutoTable* tuned = auto_table.load(std::memory_order_acquire)) {
    const auto found = tuned->find(bucket_of(pr, a).key());
    if (found != tuned->end()) {
      const Kernel& chosen = table[found->second];
      if (dtype_supported(chosen, a.scalar_type()) && device_supported(chosen, a.device())) return chosen;
    }
  }
  const bool cpu_float = a.is_cpu() && (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble);
  return table[cpu_float && auto_rule_cpu >= 0 ? auto_rule_cpu : auto_rule_other];
}

void record(const Kernel& kern, const Problem& pr, at::ScalarType dtype) {
  if (!tracing.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(trace_mutex);
  trace.emplace_back(kern.name, pr.count, pr.m, pr.k, pr.n, dtype,
                     static_cast<uint64_t>(pthread_self()));  // what Python's threading.get_ident() gives
}

// [lowest, highest] element offset a non-empty strided tensor touches, relative to its data pointer.
std::pair<int64_t, int64_t> extent(const at::Tensor& t) {
  int64_t lo = 0, hi = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t span = (t.size(d) - 1) * t.stride(d);
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

// By address, not by storage: two storages can hold the same memory (torch.from_numpy of two
// views of one array, DLPack, frombuffer), and a write through one then corrupts the other's reads.
bool may_overlap(const at::Tensor& x, const at::Tensor& y) {
  if (x.numel() == 0 || y.numel() == 0) return false;
  const auto [xl, xh] = extent(x);
  const auto [yl, yh] = extent(y);
  const char* xb = static_cast<const char*>(x.data_ptr());
  const char* yb = static_cast<const char*>(y.data_ptr());
  const int64_t xs = x.element_size(), ys = y.element_size();
  return !(xb + (xh + 1) * xs <= yb + yl * ys || yb + (yh + 1) * ys <= xb + xl * xs);
}

// Whether no two elements of t share memory, by a sufficient test: ordered by stride, each
// dimension's stride must step past everything the smaller ones reach.
bool distinct_elements(const at::Tensor& t) {
  c10::SmallVector<std::pair<int64_t, int64_t>, 6> dims;  // (|stride|, size) of dimensions longer than 1
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) > 1) dims.emplace_back(std::abs(t.stride(d)), t.size(d));
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;  // the largest offset the dimensions so far can reach
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) return false;
    reach += (size - 1) * stride;
  }
  return true;
}

// A user's `out`: right dtype, device and shape, its elements distinct, no memory shared with a or b,
// and writable here (torch writes an inference tensor outside inference mode, then raises).
bool out_acceptable(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const Problem& pr) {
  if (out.layout() != at::kStrided || out.scalar_type() != a.scalar_type() || out.device() != a.device() ||
      out.sizes() != at::IntArrayRef(pr.out_shape) || out.is_neg() || out.is_conj() ||
      (out.is_inference() && !c10::InferenceMode::is_enabled()))
    return false;
  return distinct_elements(out) && !may_overlap(out, a) && !may_overlap(out, b);
}

bool huge_pages_enabled() {
  const char* env = std::getenv("GEMMLAB_HUGE_PAGES");
  return env == nullptr || std::string(env) != "0";
}

// A fresh contiguous output; a large one is advised as huge pages before anything touches it, so
// the first touch faults in 2 MiB pages rather than 4 KiB ones (the kernel decides whether it can).
at::Tensor allocate(const Problem& pr, const at::TensorOptions& options) {
  // CPU tensors straight from the CPU allocator: the dispatcher's at::empty costs a third more.
  at::Tensor c = options.device().is_cpu() ? at::detail::empty_cpu(pr.full_shape, options) : at::empty(pr.full_shape, options);
  const int64_t bytes = c.nbytes();
  if (bytes >= HUGE_PAGE_MIN_BYTES && c.is_cpu() && huge_pages_enabled()) {
    constexpr uintptr_t HUGE = uintptr_t(2) << 20;
    const uintptr_t start = reinterpret_cast<uintptr_t>(c.data_ptr());
    const uintptr_t lo = (start + HUGE - 1) & ~(HUGE - 1), hi = (start + bytes) & ~(HUGE - 1);
#ifdef MADV_HUGEPAGE
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only: failure is fine
#endif
  }
  return c;
}

// Calls fn(offset_a, offset_b, offset_c, count) for batch entries [begin, end), in runs of
// consecutive entries along the innermost batch dimension (offsets in elements, of each run's first).
template <class Fn>
void for_runs(const Problem& pr, int64_t begin, int64_t end, Fn&& fn) {
  if (pr.batch.empty()) return fn(0, 0, 0, int64_t(1));
  const size_t nd = pr.batch.size();
  const BatchDim& inner = pr.batch[nd - 1];
  c10::SmallVector<int64_t, 4> index(nd, 0);
  for (int64_t i = begin; i < end;) {
    int64_t rest = i, oa = 0, ob = 0, oc = 0;
    for (size_t d = nd; d-- > 0;) {  // unravel i
      index[d] = rest % pr.batch[d].size;
      rest /= pr.batch[d].size;
      oa += index[d] * pr.batch[d].sa;
      ob += index[d] * pr.batch[d].sb;
      oc += index[d] * pr.batch[d].sc;
    }
    const int64_t run = std::min(end - i, inner.size - index[nd - 1]);
    fn(oa, ob, oc, run);
    i += run;
  }
}

// The calling thread's workspace for kern (a worker's, when batch entries run side by side), kept
// between calls (kernel_abi.h). None if it cannot be had: the kernel then allocates for itself.
std::pair<void*, int64_t> workspace_for(const Kernel& kern) {
  thread_local AlignedBuffer workspace;
  if (kern.workspace_bytes == 0) return {nullptr, 0};
  try {
    return {workspace.get(kern.workspace_bytes), kern.workspace_bytes};
  } catch (const std::bad_alloc&) {
    return {nullptr, 0};
  }
}

template <class T, class Fn>
void run_products(const Kernel& kern, Fn gemm, const Problem& pr, const T* a, const T* b, T* c) {
  const int threads = at::get_num_threads();
  const int64_t fmas = pr.m * pr.n * pr.k;
  const BatchDim inner = pr.batch.empty() ? BatchDim{1, 0, 0, 0} : pr.batch.back();
  auto call = [&](int64_t oa, int64_t ob, int64_t oc, int64_t count, int call_threads) {
    const auto [workspace, workspace_bytes] = workspace_for(kern);
    const int status = gemm(count, pr.m, pr.n, pr.k, a + oa, inner.sa, pr.a_rs, pr.a_cs, b + ob, inner.sb, pr.b_rs,
                            pr.b_cs, c + oc, inner.sc, pr.c_rs, pr.c_cs, call_threads, workspace, workspace_bytes);
    TORCH_CHECK(status == GEMMLAB_OK, "gemmlab: the ", kern.name, " kernel failed: ",
                kern.last_error != nullptr ? kern.last_error()
                : status == GEMMLAB_NO_MEMORY ? "out of memory" : "status " + std::to_string(status));
  };
  // Whole entries per thread when there are enough to share out evenly, or when each is too small
  // to keep the threads busy by itself; otherwise the kernel's own threads, one entry at a time.
  const bool by_entry = pr.count > 1 && threads > 1 && fmas <= kern.serial_fmas &&
                        (fmas < threads * FMAS_PER_THREAD || pr.count % threads == 0 || pr.count >= 4 * threads);
  if (by_entry) {
    const int64_t grain = std::max<int64_t>(1, BATCH_FMAS_PER_TASK / std::max<int64_t>(fmas, 1));
    at::parallel_for(0, pr.count, grain, [&](int64_t begin, int64_t end) {
      for_runs(pr, begin, end, [&](int64_t oa, int64_t ob, int64_t oc, int64_t count) { call(oa, ob, oc, count, 1); });
    });
  } else {
    for_runs(pr, 0, pr.count, [&](int64_t oa, int64_t ob, int64_t oc, int64_t count) { call(oa, ob, oc, count, threads); });
  }
}

void run(const Kernel& kern, const Problem& pr, const at::Tensor& a, const at::Tensor& b, at::Tensor& c) {
  if (a.scalar_type() == at::kFloat) {
    run_products<float>(kern, kern.f32, pr, a.const_data_ptr<float>(), b.const_data_ptr<float>(), c.data_ptr<float>());
  } else {
    run_products<double>(kern, kern.f64, pr, a.const_data_ptr<double>(), b.const_data_ptr<double>(),
                         c.data_ptr<double>());
  }
}

}  // namespace

namespace {

// Puts k in the table (the caller holds `registering`) and returns its id.
int add_kernel(Kernel k) {
  int id = kernel_id(k.name);  // re-registering a name (a module reloaded) keeps its id
  if (id < 0) {
    id = table_size.load();
    TORCH_CHECK(id < MAX_KERNELS, "gemmlab: no room for kernel '", k.name, "' (", MAX_KERNELS, " registered)");
  }
  table[id] = std::move(k);
  if (id == table_size.load()) table_size.store(id + 1);  // published only once complete
  return id;
}

}  // namespace

int register_kernel(const std::string& name, gemmlab_gemm_f32 f32, gemmlab_gemm_f64 f64, int64_t serial_fmas,
                    int64_t workspace_bytes, gemmlab_last_error last_error) {
  TORCH_CHECK_VALUE((f32 == nullptr) == (f64 == nullptr), "gemmlab: kernel '", name,
                    "' needs both a float32 and a float64 function");
  TORCH_CHECK_VALUE(workspace_bytes >= 0, "gemmlab: kernel '", name, "' asked for a workspace of ", workspace_bytes,
                    " bytes");
  std::lock_guard<std::mutex> lock(registering);
  Kernel k;
  k.name = name;
  k.f32 = f32;
  k.f64 = f64;
  k.serial_fmas = serial_fmas;
  k.last_error = last_error;
  k.workspace_bytes = workspace_bytes;
  k.is_torch = f32 == nullptr;
  return add_kernel(std::move(k));
}

int register_auto_kernel() {
  std::lock_guard<std::mutex> lock(registering);
  auto_rule_cpu = kernel_id("cpp");
  auto_rule_other = kernel_id("torch");
  TORCH_CHECK(auto_rule_other >= 0, "gemmlab: the torch kernel must be registered before auto");
  Kernel k;
  k.name = "auto";
  k.is_auto = true;
  return add_kernel(std::move(k));
}

uint64_t Bucket::key() const {
  uint64_t key = static_cast<uint8_t>(dtype);
  key = key << 8 | static_cast<uint8_t>(device);
  for (const int log : {log_m, log_k, log_n, log_batch}) key = key << 6 | (log & 63);
  key = key << 2 | layout_code(layout_a);
  key = key << 2 | layout_code(layout_b);
  return key << 16 | (std::min(threads, 0xffff) & 0xffff);
}

void set_auto_table(const std::vector<std::pair<Bucket, int>>& entries) {
  auto fresh = std::make_unique<AutoTable>();
  for (const auto& [bucket, id] : entries) {
    TORCH_CHECK_VALUE(!kernel(id).is_auto, "gemmlab: auto's table cannot name auto itself");
    (*fresh)[bucket.key()] = id;
  }
  std::lock_guard<std::mutex> lock(registering);
  auto_table.store(fresh->empty() ? nullptr : fresh.get(), std::memory_order_release);
  if (!fresh->empty()) auto_tables.push_back(std::move(fresh));
}

int kernel_id(const std::string& name) {
  const int size = table_size.load();
  for (int i = 0; i < size; ++i) {
    if (table[i].name == name) return i;
  }
  return -1;
}

const Kernel& kernel(int id) {
  const int size = table_size.load();
  TORCH_CHECK_INDEX(id >= 0 && id < size, "gemmlab: no kernel with id ", id, " (", size, " registered)");
  return table[id];
}

void set_tracing(bool on) {
  std::lock_guard<std::mutex> lock(trace_mutex);
  tracing = on;
  trace.clear();
}

py::list take_trace() {
  std::lock_guard<std::mutex> lock(trace_mutex);
  py::list out;
  for (const auto& [name, count, m, k, n, dtype, thread] : trace)
    out.append(py::make_tuple(name, count, m, k, n, dtype, thread));
  trace.clear();
  return out;
}

namespace {

// A planned product (plan, then output strides, then simplify) into *out, or into a fresh output
// when out is null; the result has torch.matmul's shape. With release_gil, a long product lets
// other Python threads run (the caller holds the GIL then).
at::Tensor compute(const Kernel& requested, Problem& pr, const at::Tensor& a, const at::Tensor& b, const at::Tensor* out,
                   bool release_gil) {
  finish_plan(out, a, b, pr);
  const Kernel& kern = requested.is_auto ? resolve_auto(pr, a) : requested;
  const bool work = pr.count > 0 && pr.m > 0 && pr.n > 0 && pr.k > 0;
  if (work) record(kern, pr, a.scalar_type());
  std::optional<py::gil_scoped_release> no_gil;
  if (release_gil && work && pr.m * pr.n * pr.k * pr.count >= RELEASE_GIL_FMAS) no_gil.emplace();
  if (kern.is_torch) {
    if (out == nullptr) return at::matmul(a, b);
    at::Tensor c = *out;
    if (a.dim() == 2 && b.dim() == 2) {
      at::mm_out(c, a, b);
    } else {
      // at::matmul_out fails on some outs (a transposed one, where it folds a batch into rows) and
      // warns about resizing others (1-D @ 2-D): only the 2-D product goes straight into out.
      c.copy_(at::matmul(a, b));
    }
    return c;
  }

  at::Tensor c = out != nullptr ? *out : allocate(pr, a.options());
  // The kernel writes `out` in place behind autograd's back: count the write, as an in-place op does,
  // so that a backward pass which saved `out` fails instead of using the new values.
  if (out != nullptr) c.unsafeGetTensorImpl()->bump_version();
  if (work) {
    run(kern, pr, a, b, c);
  } else if (pr.k == 0) {
    c.zero_();  // an empty sum (and nothing at all to do when the output is empty)
  }
  if (out != nullptr || pr.out_shape.size() == pr.full_shape.size()) return c;
  return c.view(pr.out_shape);
}

// The compiled kernels read memory as it is: a lazily negated real view (z.conj().imag) is
// resolved first (at::matmul takes lazy bits itself; conj is a no-op on real tensors).
at::Tensor readable(const Kernel& kern, const at::Tensor& t) { return !kern.is_torch && t.is_neg() ? t.resolve_neg() : t; }

std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << "shape " << t.sizes() << ", " << c10::getDtypeNames(t.scalar_type()).first << " on " << t.device();
  return s.str();
}

// product()'s checks (bad arguments raise, naming them), then the plan; a and b become what the kernel reads.
void check_and_plan(const Kernel& kern, const at::Tensor& a_in, const at::Tensor& b_in, at::Tensor& a, at::Tensor& b,
                    Problem& pr) {
  auto pair = [&] { return "a: " + describe(a_in) + "; b: " + describe(b_in); };
  TORCH_CHECK_TYPE(a_in.layout() == at::kStrided && b_in.layout() == at::kStrided,
                   "gemmlab: the product needs dense (strided) tensors; got layouts ", a_in.layout(), " and ",
                   b_in.layout());
  TORCH_CHECK_VALUE(a_in.dim() > 0 && b_in.dim() > 0, "gemmlab: the product needs operands with at least 1 dimension; ",
                    pair());
  TORCH_CHECK_TYPE(a_in.scalar_type() == b_in.scalar_type() && dtype_supported(kern, a_in.scalar_type()),
                   "gemmlab: the ", kern.name, " kernel needs two operands of one dtype it supports; ", pair());
  TORCH_CHECK_VALUE(a_in.device() == b_in.device() && device_supported(kern, a_in.device()), "gemmlab: the ",
                    kern.name, " kernel needs both operands on one device it runs on; ", pair());
  a = readable(kern, a_in);
  b = readable(kern, b_in);
  TORCH_CHECK_VALUE(plan(a, b, pr), "gemmlab: the operands' shapes do not fit a product (inner dimensions differ or "
                    "batch dimensions do not broadcast); ", pair());
}

}  // namespace

at::Tensor product(const at::Tensor& a_in, const at::Tensor& b_in, int id) {
  const Kernel& kern = kernel(id);
  at::Tensor a, b;
  Problem pr;
  check_and_plan(kern, a_in, b_in, a, b, pr);
  return compute(kern, pr, a, b, nullptr, false);
}

std::pair<Bucket, const Kernel*> auto_choice(const at::Tensor& a_in, const at::Tensor& b_in) {
  const int id = kernel_id("auto");
  TORCH_CHECK(id >= 0, "gemmlab: the auto kernel is not registered");
  at::Tensor a, b;
  Problem pr;
  check_and_plan(kernel(id), a_in, b_in, a, b, pr);
  finish_plan(nullptr, a, b, pr);
  return {bucket_of(pr, a), &resolve_auto(pr, a)};
}

py::object matmul(py::handle a_obj, py::handle b_obj, int id, py::handle out_obj) {
  const Kernel& kern = kernel(id);
  const at::Tensor* pa = plain_tensor(a_obj);
  const at::Tensor* pb = plain_tensor(b_obj);
  const at::Tensor* pout = out_obj.is_none() ? nullptr : plain_tensor(out_obj);
  if (pa == nullptr || pb == nullptr || (!out_obj.is_none() && pout == nullptr)) return py::none();
  if (c10::impl::TorchDispatchModeTLS::stack_len() > 0) return py::none();
  // An out= that autograd forbids (torch refuses out= where anything requires grad): Python says so.
  if (pout != nullptr && at::GradMode::is_enabled() &&
      (pa->requires_grad() || pb->requires_grad() || pout->requires_grad()))
    return py::none();
  const at::Tensor a = readable(kern, *pa), b = readable(kern, *pb);
  if (a.layout() != at::kStrided || b.layout() != at::kStrided || a.dim() == 0 || b.dim() == 0 ||
      a.scalar_type() != b.scalar_type() || !dtype_supported(kern, a.scalar_type()) || a.device() != b.device() ||
      !device_supported(kern, a.device()))
    return py::none();
  Problem pr;
  if (!plan(a, b, pr)) return py::none();
  if (at::GradMode::is_enabled() && (pa->requires_grad() || pb->requires_grad())) {
    // Through the registered op, whose Autograd kernel records the backward (autograd_op.cpp).
    const bool long_call = pr.m * pr.n * pr.k * std::max<int64_t>(pr.count, 1) >= RELEASE_GIL_FMAS;
    std::optional<py::gil_scoped_release> no_gil;
    if (long_call) no_gil.emplace();
    at::Tensor c = differentiable_product(*pa, *pb, kern.name);
    no_gil.reset();
    return py::cast(std::move(c));
  }
  if (pout != nullptr && !out_acceptable(*pout, a, b, pr)) return py::none();
  at::Tensor c = compute(kern, pr, a, b, pout, true);
  if (pout != nullptr) return py::reinterpret_borrow<py::object>(out_obj);
  return py::cast(std::move(c));
}

}  // namespace gemmlab
