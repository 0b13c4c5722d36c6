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

#include <sstream>
#include <string>

#include "gemm/five_loops.h"
#include "gemm/gemm.h"

namespace {

std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes() << " " << t.scalar_type() << " on " << t.device();
  return s.str();
}

std::string describe_all(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  return "a: " + describe(a) + ", b: " + describe(b) + ", out: " + describe(out);
}

// Every check the kernel relies on; a bad call raises a Python exception instead of touching
// memory it does not own. The message is built only when a check fails (TORCH_CHECK evaluates its
// message arguments lazily): formatting three descriptions on every call cost about a microsecond,
// a third of the whole (5, 784) @ (784, 10) product.
void check_arguments(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  for (const at::Tensor* t : {&a, &b, &out}) {
    TORCH_CHECK_VALUE(t->layout() == at::kStrided, "gemmlab._cpp.matmul_2d needs strided tensors; got ", describe_all(a, b, out));
    TORCH_CHECK_VALUE(t->device().is_cpu(), "gemmlab._cpp.matmul_2d runs on the CPU; got ", describe_all(a, b, out));
    TORCH_CHECK_VALUE(t->dim() == 2, "gemmlab._cpp.matmul_2d needs 2-D tensors; got ", describe_all(a, b, out));
    // The kernel reads and writes memory by address: a lazily negated view (x.conj().imag) would
    // silently give the product of the memory, not of the values.
    TORCH_CHECK_VALUE(!t->is_neg(), "gemmlab._cpp.matmul_2d cannot take a tensor with the negative bit set "
                      "(a lazy view such as x.conj().imag); call .resolve_neg() on it first; got ", describe_all(a, b, out));
  }
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type() && a.scalar_type() == out.scalar_type(),
                   "gemmlab._cpp.matmul_2d needs one dtype for a, b and out; got ", describe_all(a, b, out));
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
                   "gemmlab._cpp.matmul_2d supports float32 and float64; got ", describe_all(a, b, out));
  TORCH_CHECK_VALUE(a.size(1) == b.size(0), "gemmlab._cpp.matmul_2d: inner dimensions differ; got ", describe_all(a, b, out));
  TORCH_CHECK_VALUE(out.size(0) == a.size(0) && out.size(1) == b.size(1),
                    "gemmlab._cpp.matmul_2d: out must have shape (a.size(0), b.size(1)); got ", describe_all(a, b, out));
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
                    "gemmlab._cpp.matmul_2d: out has elements that share memory (an expanded view?); got ", describe_all(a, b, out));
  at::assert_no_overlap(out, a);
  at::assert_no_overlap(out, b);
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gemmlab's C++ matmul kernels";
  m.def("matmul_2d", &matmul_2d, "out = a @ b for 2-D float32/float64 CPU tensors of any strides",
        py::arg("a"), py::arg("b"), py::arg("out"));
  m.def("cpu_path", [] { return std::string(gemmlab::path_name(gemmlab::selected_path())); },
        "The CPU path the next product will use: 'avx512', 'avx2' or 'generic' (GEMMLAB_CPU forces one)");
  m.def("supported_paths", &gemmlab::supported_paths, "The CPU paths this machine can run, fastest first");
  m.def(
      "blocking",
      [](const std::string& dtype) {
        TORCH_CHECK_VALUE(dtype == "float32" || dtype == "float64", "blocking() takes 'float32' or 'float64', got '",
                          dtype, "'");
        const gemmlab::CpuPath path = gemmlab::selected_path();
        const gemmlab::BlockingInfo b = gemmlab::blocking_info(path, dtype == "float64");
        py::dict d;
        d["path"] = gemmlab::path_name(path);
        d["MR"] = b.mr;
        d["NR"] = b.nr;
        d["KC"] = b.kc;
        d["MC"] = b.mc;
        d["NC"] = b.nc;
        return d;
      },
      py::arg("dtype"), "Register and cache blocking (MR, NR, KC, MC, NC) of the path cpu_path() names");
  m.attr("SMALL_PRODUCT_FMAS") = gemmlab::SMALL_PRODUCT_FMAS;
  m.attr("FMAS_PER_THREAD") = gemmlab::FMAS_PER_THREAD;
  m.attr("B_RESIDENT_BYTES") = gemmlab::B_RESIDENT_BYTES;
  m.def("_set_path_ceiling", &gemmlab::set_path_ceiling, py::arg("ceiling"),
        "Testing hook: pretend this CPU supports no path above `ceiling` ('' lifts it)");
}
