// gemmlab's C++ backend: out = a @ b for 2-D CPU tensors of any strides.
//
// This file is the Python-facing layer: argument checks and bindings. The product itself is the
// BLIS-structured GEMM in csrc/gemm/ (packing, AVX-512/AVX2/portable micro-kernels chosen at run
// time, cache blocking, the five loops, threads via ATen's parallel_for following
// torch.set_num_threads()). It reads each operand through its own strides, so transposed, sliced
// and expanded (stride-0) views need no copy.

#include <torch/extension.h>

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dispatch.h"
#include "gemm/cpu_caches.h"
#include "gemm/five_loops.h"
#include "gemm/gemm.h"
#include "gemm/peak.h"
#include "kernel_abi.h"

namespace {

std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes() << " " << c10::getDtypeNames(t.scalar_type()).first << " on " << t.device();
  return s.str();
}

std::string describe_all(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  return "a: " + describe(a) + ", b: " + describe(b) + ", out: " + describe(out);
}

std::string strides_of(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  std::ostringstream s;
  s << "strides a: " << a.strides() << ", b: " << b.strides() << ", out: " << out.strides();
  return s.str();
}

// Whether the bytes x's elements span meet those y's span (both non-empty, 2-D): a few integer
// operations, and conservative, like the Numba and Cython kernels' check (views that interleave
// without sharing an element are refused too). Cheaper than ATen's overlap test, which also
// misses overlaps between non-dense views.
bool spans_meet(const at::Tensor& x, const at::Tensor& y) {
  auto span = [](const at::Tensor& t) {
    const auto lo = reinterpret_cast<intptr_t>(t.data_ptr());
    intptr_t first = lo, last = lo;
    for (int d = 0; d < 2; ++d) {
      const intptr_t reach = (t.size(d) - 1) * t.stride(d) * static_cast<intptr_t>(t.element_size());
      (reach < 0 ? first : last) += reach;
    }
    return std::pair<intptr_t, intptr_t>{first, last + static_cast<intptr_t>(t.element_size()) - 1};
  };
  const auto [x_lo, x_hi] = span(x);
  const auto [y_lo, y_hi] = span(y);
  return !(x_hi < y_lo || y_hi < x_lo);
}

// Every check the kernel relies on; a bad call raises a Python exception, naming the shapes,
// dtypes and devices involved, instead of touching memory it does not own or misreading it. The
// message is built only when a check fails (TORCH_CHECK evaluates its message arguments lazily):
// formatting three descriptions on every call cost about a microsecond, a third of the whole
// (5, 784) @ (784, 10) product.
void check_arguments(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  for (const at::Tensor* t : {&a, &b, &out}) {
    TORCH_CHECK_VALUE(t->layout() == at::kStrided, "gemmlab._cpp.matmul_2d needs strided tensors; got ", describe_all(a, b, out));
    TORCH_CHECK_VALUE(t->device().is_cpu(), "gemmlab._cpp.matmul_2d runs on the CPU; got ", describe_all(a, b, out));
    TORCH_CHECK_VALUE(t->dim() == 2, "gemmlab._cpp.matmul_2d needs 2-D tensors; got ", describe_all(a, b, out));
    // The kernel reads memory: a lazily negated view (torch._neg_view, z.conj().imag) holds -x.
    TORCH_CHECK_VALUE(!t->is_neg(), "gemmlab._cpp.matmul_2d cannot read lazily negated tensors (call .resolve_neg() "
                      "first); got ", describe_all(a, b, out));
  }
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type() && a.scalar_type() == out.scalar_type(),
                   "gemmlab._cpp.matmul_2d needs one dtype for a, b and out; got ", describe_all(a, b, out));
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
                   "gemmlab._cpp.matmul_2d supports float32 and float64; got ", describe_all(a, b, out));
  TORCH_CHECK_VALUE(a.size(1) == b.size(0), "gemmlab._cpp.matmul_2d: inner dimensions differ; got ", describe_all(a, b, out));
  TORCH_CHECK_VALUE(out.size(0) == a.size(0) && out.size(1) == b.size(1),
                    "gemmlab._cpp.matmul_2d: out must have shape (a.size(0), b.size(1)); got ", describe_all(a, b, out));
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
                    "gemmlab._cpp.matmul_2d: out has elements that share memory (an expanded view?); got ",
                    describe_all(a, b, out), "; ", strides_of(a, b, out));
  if (out.numel() == 0 || a.size(1) == 0) return;  // nothing is read
  TORCH_CHECK_VALUE(!spans_meet(out, a), "gemmlab._cpp.matmul_2d: out shares memory with a; pass a separate output "
                    "tensor; got ", describe_all(a, b, out), "; ", strides_of(a, b, out));
  TORCH_CHECK_VALUE(!spans_meet(out, b), "gemmlab._cpp.matmul_2d: out shares memory with b; pass a separate output "
                    "tensor; got ", describe_all(a, b, out), "; ", strides_of(a, b, out));
}

template <typename T>
void run_gemm(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const gemmlab::Operands<T> op{a.data_ptr<T>(), a.stride(0), a.stride(1),
                                b.data_ptr<T>(), b.stride(0), b.stride(1),
                                out.data_ptr<T>(), out.stride(0), out.stride(1)};
  gemmlab::gemm<T>(a.size(0), b.size(1), a.size(1), op, at::get_num_threads());
}

void matmul_2d(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  check_arguments(a, b, out);
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gemmlab_cpp_matmul_2d", [&] { run_gemm<scalar_t>(a, b, out); });
}

// The kernel through the C ABI (kernel_abi.h), for the dispatch core: arguments already checked.
thread_local std::string last_error;

template <class T>
int gemm_abi(int64_t batch, int64_t m, int64_t n, int64_t k, const T* a, int64_t a_bs, int64_t a_rs, int64_t a_cs,
             const T* b, int64_t b_bs, int64_t b_rs, int64_t b_cs, T* c, int64_t c_bs, int64_t c_rs, int64_t c_cs,
             int32_t threads, void* /*workspace*/, int64_t /*workspace_bytes*/) {
  // (registered with no workspace: the cpp kernel keeps its own per-thread packing buffers, gemm.cpp)
  try {
    const gemmlab::CpuPath path = gemmlab::selected_path();
    for (int64_t i = 0; i < batch; ++i) {
      const gemmlab::Operands<T> op{a + i * a_bs, a_rs, a_cs, b + i * b_bs, b_rs, b_cs, c + i * c_bs, c_rs, c_cs};
      gemmlab::gemm_on_path<T>(path, m, n, k, op, threads);
    }
    return GEMMLAB_OK;
  } catch (const std::bad_alloc&) {
    return GEMMLAB_NO_MEMORY;
  } catch (const c10::Error& e) {  // e.g. GEMMLAB_CPU names a path this CPU cannot run
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  }
  return GEMMLAB_BAD_ARGUMENTS;
}

const char* gemm_last_error() { return last_error.c_str(); }

// auto's buckets in Python: a tuple (dtype, device type, log2_m, log2_k, log2_n, log2_batch, layout,
// threads), e.g. (torch.float32, "cpu", 16, 10, 6, 0, "RC", 2); see gemmlab::Bucket.
using BucketTuple = std::tuple<at::ScalarType, std::string, int, int, int, int, std::string, int>;

BucketTuple to_python(const gemmlab::Bucket& b) {
  return {b.dtype, c10::DeviceTypeName(b.device, /*lower_case=*/true), b.log_m, b.log_k, b.log_n, b.log_batch,
          std::string{b.layout_a, b.layout_b}, b.threads};
}

gemmlab::Bucket from_python(const BucketTuple& t) {
  const auto& [dtype, device, log_m, log_k, log_n, log_batch, layout, threads] = t;
  for (const int log : {log_m, log_k, log_n, log_batch})
    TORCH_CHECK_VALUE(log >= 0 && log < 64, "gemmlab: a bucket's log2 sizes are 0..63; got ", log);
  auto known = [](char c) { return c == 'R' || c == 'C' || c == 'S'; };
  TORCH_CHECK_VALUE(layout.size() == 2 && known(layout[0]) && known(layout[1]),
                    "gemmlab: a bucket's layout is two of R, C, S (a's, then b's); got '", layout, "'");
  TORCH_CHECK_VALUE(threads >= 1, "gemmlab: a bucket's thread count is at least 1; got ", threads);
  return {dtype, c10::Device(device).type(), log_m, log_k, log_n, log_batch, layout[0], layout[1], threads};
}

// A function pointer handed over in a PyCapsule by another extension (see kernel_abi.h); anything
// else is refused, saying which argument and what it needed (the name guards against a pointer of
// the wrong dtype or ABI version).
template <class Fn>
Fn from_capsule(py::handle capsule, const char* arg, const char* name) {
  PyObject* p = capsule.ptr();
  TORCH_CHECK_TYPE(PyCapsule_CheckExact(p), "gemmlab._cpp.register_kernel: ", arg, " must be a PyCapsule named '",
                   name, "' (see kernel_abi.h); got ", Py_TYPE(p)->tp_name);
  if (!PyCapsule_IsValid(p, name)) {
    const char* got = PyCapsule_GetName(p);
    PyErr_Clear();
    TORCH_CHECK_VALUE(false, "gemmlab._cpp.register_kernel: ", arg, " must be a PyCapsule named '", name,
                      "' (see kernel_abi.h); got one named '", got != nullptr ? got : "", "'");
  }
  return reinterpret_cast<Fn>(PyCapsule_GetPointer(p, name));
}

bool is_double_dtype(const std::string& dtype, const char* function) {
  TORCH_CHECK_VALUE(dtype == "float32" || dtype == "float64", function, "() takes 'float32' or 'float64', got '", dtype,
                    "'");
  return dtype == "float64";
}

py::dict to_python(const gemmlab::CacheSizes& c) {
  py::dict d;
  d["L1d"] = c.l1d;
  d["L2"] = c.l2;
  d["L3"] = c.l3;
  d["source"] = c.source;
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gemmlab's C++ matmul kernels and the dispatch core";
  // The kernels the core knows from the start; the cpp kernel makes no parallel region when given one
  // thread, so entries of any size may run side by side.
  gemmlab::register_kernel("cpp", &gemm_abi<float>, &gemm_abi<double>, std::numeric_limits<int64_t>::max(), 0,
                           &gemm_last_error);
  gemmlab::register_kernel("torch", nullptr, nullptr, 0);
  gemmlab::register_auto_kernel();
  m.def("matmul", &gemmlab::matmul, py::arg("a"), py::arg("b"), py::arg("kernel"), py::arg("out") = py::none(),
        "a @ b (torch.matmul's semantics) on a registered kernel, into out if given; None where gemmlab.matmul's "
        "Python path must take the call (anything it would reject, autograd, tensor subclasses and modes)");
  m.def(
      "register_kernel",
      [](const std::string& name, py::handle f32, py::handle f64, int64_t serial_fmas, int64_t workspace_bytes) {
        const auto f32_fn = from_capsule<gemmlab_gemm_f32>(f32, "f32", GEMMLAB_CAPSULE_F32);  // f32 checked first
        const auto f64_fn = from_capsule<gemmlab_gemm_f64>(f64, "f64", GEMMLAB_CAPSULE_F64);
        return gemmlab::register_kernel(name, f32_fn, f64_fn, serial_fmas, workspace_bytes);
      },
      py::arg("name"), py::arg("f32"), py::arg("f64"), py::arg("serial_fmas"), py::arg("workspace_bytes") = 0,
      "Add a kernel given as PyCapsules of its C ABI functions (kernel_abi.h) that asks for workspace_bytes of "
      "scratch memory on every call; returns its id");
  m.attr("AUTO_BUCKET_FIELDS") =
      py::make_tuple("dtype", "device", "log2_m", "log2_k", "log2_n", "log2_batch", "layout", "threads");
  m.def(
      "auto_choice",
      [](const at::Tensor& a, const at::Tensor& b) {
        const auto [bucket, kernel] = gemmlab::auto_choice(a, b);
        return std::make_pair(to_python(bucket), kernel->name);
      },
      py::arg("a"), py::arg("b"),
      "(bucket, kernel name): the bucket of a @ b (AUTO_BUCKET_FIELDS) and the kernel `auto` runs it on now");
  m.def(
      "auto_bucket_key", [](const BucketTuple& bucket) { return from_python(bucket).key(); }, py::arg("bucket"),
      "The key auto's table files a bucket under; ValueError or TypeError for a bucket the core cannot use");
  m.def(
      "set_auto_table",
      [](const std::vector<std::pair<BucketTuple, std::string>>& entries) {
        std::vector<std::pair<gemmlab::Bucket, int>> table;
        for (const auto& [bucket, name] : entries) {
          const int id = gemmlab::kernel_id(name);
          TORCH_CHECK_VALUE(id >= 0, "gemmlab: auto's table: no kernel is registered as '", name, "'");
          table.emplace_back(from_python(bucket), id);
        }
        gemmlab::set_auto_table(table);
      },
      py::arg("entries"),
      "Replace auto's table: a list of (bucket, kernel name); buckets left out follow the built-in rule");
  m.def("kernel_id", &gemmlab::kernel_id, py::arg("name"), "The id of the kernel registered as name, or -1");
  m.def(
      "kernel_name", [](int id) { return gemmlab::kernel(id).name; }, py::arg("kernel"), "The name of kernel `id`");
  m.def("set_tracing", &gemmlab::set_tracing, py::arg("on"),
        "Testing hook: record (kernel, batch, m, k, n) of every product the core runs (clears the record)");
  m.def("take_trace", &gemmlab::take_trace, "The products recorded since the last call (see set_tracing)");
  m.attr("ABI_VERSION") = GEMMLAB_ABI_VERSION;
  m.attr("CAPSULE_F32") = GEMMLAB_CAPSULE_F32;
  m.attr("CAPSULE_F64") = GEMMLAB_CAPSULE_F64;
  m.attr("HUGE_PAGE_MIN_BYTES") = gemmlab::HUGE_PAGE_MIN_BYTES;
  m.def("matmul_2d", &matmul_2d, "out = a @ b for 2-D float32/float64 CPU tensors of any strides",
        py::arg("a"), py::arg("b"), py::arg("out"));
  m.def("cpu_path", [] { return std::string(gemmlab::path_name(gemmlab::selected_path())); },
        "The CPU path the next product will use: 'avx512', 'avx2' or 'generic' (GEMMLAB_CPU forces one)");
  m.def("supported_paths", &gemmlab::supported_paths, "The CPU paths this machine can run, fastest first");
  m.def(
      "blocking",
      [](const std::string& dtype) {
        const bool is_double = is_double_dtype(dtype, "blocking");
        const gemmlab::CpuPath path = gemmlab::selected_path();
        const gemmlab::BlockingInfo b = gemmlab::blocking_info(path, is_double);
        py::dict d;
        d["path"] = gemmlab::path_name(path);
        d["MR"] = b.mr;
        d["NR"] = b.nr;
        d["KC"] = b.kc;
        d["MC"] = b.mc;
        d["NC"] = b.nc;
        d["reference"] = py::make_tuple(b.ref_kc, b.ref_mc, b.ref_nc);
        d["caches"] = to_python(gemmlab::cache_sizes());
        return d;
      },
      py::arg("dtype"),
      "Register and cache blocking (MR, NR, KC, MC, NC) of the path cpu_path() names, the reference (KC, MC, NC) "
      "measured on the development machine, and the caches (sizes and source) KC, MC, NC were derived from");
  m.def(
      "cache_sizes",
      [](const std::optional<std::string>& root) {
        if (!root) return to_python(gemmlab::cache_sizes());
        gemmlab::CacheSizes found;
        if (!gemmlab::read_sysfs_caches(*root, &found)) return py::dict();
        return to_python(found);
      },
      py::arg("root") = py::none(),
      "This CPU's data caches: {'L1d', 'L2' (bytes per core), 'L3' (bytes per logical CPU sharing it, 0: none), "
      "'source': 'sysfs'|'cpuid'|'default'|'testing override'}; given a sysfs cache directory (like "
      "/sys/devices/system/cpu/cpu0/cache), what it holds, or {} if it holds no L1d and L2");
  m.def(
      "default_cache_sizes", [] { return to_python(gemmlab::default_caches()); },
      "The cache sizes used when neither sysfs nor cpuid answers");
  m.def("_set_cache_sizes", &gemmlab::set_cache_sizes_override, py::arg("l1d"), py::arg("l2"), py::arg("l3"),
        "Testing hook: derive the blocking from these cache sizes (bytes) instead of this CPU's (all 0 lifts it)");
  m.def(
      "peak_gflops",
      [](const std::string& dtype, int threads, const std::optional<std::string>& path, bool refresh) {
        const bool is_double = is_double_dtype(dtype, "peak_gflops");
        gemmlab::CpuPath chosen = gemmlab::selected_path();
        if (path) {
          bool known = false;
          for (gemmlab::CpuPath p : {gemmlab::CpuPath::avx512, gemmlab::CpuPath::avx2, gemmlab::CpuPath::generic}) {
            if (*path == gemmlab::path_name(p)) {
              chosen = p;
              known = true;
            }
          }
          TORCH_CHECK_VALUE(known, "peak_gflops(): unknown CPU path '", *path, "'; use avx512, avx2 or generic");
        }
        py::gil_scoped_release no_gil;
        return gemmlab::peak_gflops(chosen, is_double, threads, refresh);
      },
      py::arg("dtype"), py::arg("threads"), py::arg("path") = py::none(), py::arg("refresh") = false,
      "Measured peak GFLOP/s of `threads` threads doing register-only multiply-adds on a CPU path (default: the one "
      "cpu_path() names), for 'float32' or 'float64'; measured once per process (tens of ms), or with refresh=True "
      "measured again, keeping the higher figure");
  m.def(
      "loop_for",
      [](int64_t m, int64_t k, int64_t n, const std::string& dtype, bool b_transposed) {
        TORCH_CHECK_VALUE(dtype == "float32" || dtype == "float64", "loop_for() takes 'float32' or 'float64', got '",
                          dtype, "'");
        TORCH_CHECK_VALUE(m >= 0 && k >= 0 && n >= 0, "loop_for(): negative size in ", m, " x ", k, " x ", n);
        const gemmlab::CpuPath path = gemmlab::selected_path();
        // Row-major A and C, B row-major or transposed; no memory is touched.
        auto decide = [&](auto zero) {
          using T = decltype(zero);
          const gemmlab::Operands<T> op{nullptr, k, 1, nullptr, b_transposed ? 1 : n, b_transposed ? k : 1, nullptr, n, 1};
          return std::string(gemmlab::loop_for<T>(path, m, n, k, op));
        };
        return dtype == "float64" ? decide(0.0) : decide(0.0f);
      },
      py::arg("m"), py::arg("k"), py::arg("n"), py::arg("dtype"), py::arg("b_transposed") = false,
      "The loop an m x k @ k x n product of row-major A and C takes on the current CPU path: 'in place', "
      "'in place, B packed', 'dot products' or 'packed'");
  m.attr("SMALL_PRODUCT_FMAS") = gemmlab::SMALL_PRODUCT_FMAS;
  m.attr("FMAS_PER_THREAD") = gemmlab::FMAS_PER_THREAD;
  m.attr("B_RESIDENT_BYTES") = gemmlab::B_RESIDENT_BYTES;
  m.def("_set_task_sharing_test", &gemmlab::set_task_sharing_test, py::arg("owner_delay_us"),
        "Testing hook: the thread owning a product's first task sleeps this long before each item it takes, "
        "and waits for another thread to run one first; helpers wait for owners to begin (0: none of it)");
  m.def("_items_run_by_helpers", &gemmlab::items_run_by_helpers,
        "How many row blocks threads have run from other threads' tasks in this process");
  m.def(
      "_time_macro_kernel",
      [](const std::string& dtype, int64_t kc, int64_t mc, int64_t nc, int repeats) {
        const bool is_double = is_double_dtype(dtype, "_time_macro_kernel");
        return gemmlab::time_macro_kernel(gemmlab::selected_path(), is_double, kc, mc, nc, repeats);
      },
      py::arg("dtype"), py::arg("kc"), py::arg("mc"), py::arg("nc"), py::arg("repeats") = 3,
      "Diagnostic: seconds of each of `repeats` passes of the macro-kernel alone over packed kc x mc and kc x nc "
      "blocks of synthetic data, one thread, on the path cpu_path() names (scripts/macro_kernel_blocks.py)");
  m.def("_set_path_ceiling", &gemmlab::set_path_ceiling, py::arg("ceiling"),
        "Testing hook: pretend this CPU supports no path above `ceiling` ('' lifts it)");
}
