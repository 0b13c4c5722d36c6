// gemmlab's CUDA backend: the torch glue around the kernels of gemm_kernels.cuh (plain C++,
// compiled by the host compiler; the kernels are compiled by nvcc in gemm.cu).
//
// matmul_2d(a, b, out, kernel="warptile") writes a @ b into out for 2-D float32/float64 CUDA
// tensors of any strides, on the current CUDA stream of their device, with the named kernel of the
// ladder. It checks its own arguments, so a bad call raises a Python exception instead of touching
// memory it does not own. Built only when torch is a CUDA build and a matching toolkit is present
// (setup.py, GEMMLAB_CUDA).

#include <torch/extension.h>

#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // the stream alone: ATen/cuda/CUDAContext.h would drag in cuBLAS/cuSPARSE headers

#include <climits>
#include <sstream>
#include <string>
#include <vector>

#include "gemm.h"  // the kernels themselves are compiled by nvcc in gemm.cu

namespace {

namespace gpu = gemmlab::gpu;

std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes() << " " << t.scalar_type() << " on " << t.device();
  return s.str();
}

std::vector<std::string> kernel_names() {
  std::vector<std::string> names;
  for (int i = 0; i < gpu::kNumKernels; ++i) names.emplace_back(gpu::kernel_name(static_cast<gpu::Kernel>(i)));
  return names;
}

gpu::Kernel parse_kernel(const std::string& name) {
  gpu::Kernel kind;
  if (!gpu::parse_kernel(name.c_str(), &kind)) {
    std::string known;
    for (const auto& k : kernel_names()) known += (known.empty() ? "" : ", ") + k;
    TORCH_CHECK_VALUE(false, "gemmlab._cuda.matmul_2d: unknown kernel '", name, "'; the kernels are ", known);
  }
  return kind;
}

void check_arguments(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  const std::string all = "a: " + describe(a) + ", b: " + describe(b) + ", out: " + describe(out);
  for (const at::Tensor* t : {&a, &b, &out}) {
    TORCH_CHECK_VALUE(t->layout() == at::kStrided, "gemmlab._cuda.matmul_2d needs strided tensors; got ", all);
    TORCH_CHECK_VALUE(t->device().is_cuda(), "gemmlab._cuda.matmul_2d runs on CUDA devices; got ", all);
    TORCH_CHECK_VALUE(t->dim() == 2, "gemmlab._cuda.matmul_2d needs 2-D tensors; got ", all);
    // The kernels read and write memory by address: a lazily negated view (x.conj().imag) would
    // silently give the product of the memory, not of the values.
    TORCH_CHECK_VALUE(!t->is_neg(), "gemmlab._cuda.matmul_2d cannot take a tensor with the negative bit set "
                      "(a lazy view such as x.conj().imag); call .resolve_neg() on it first; got ", all);
  }
  TORCH_CHECK_VALUE(a.device() == b.device() && a.device() == out.device(),
                    "gemmlab._cuda.matmul_2d needs a, b and out on the same CUDA device; got ", all);
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type() && a.scalar_type() == out.scalar_type(),
                   "gemmlab._cuda.matmul_2d needs one dtype for a, b and out; got ", all);
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
                   "gemmlab._cuda.matmul_2d supports float32 and float64; got ", all);
  TORCH_CHECK_VALUE(a.size(1) == b.size(0), "gemmlab._cuda.matmul_2d: inner dimensions differ; got ", all);
  TORCH_CHECK_VALUE(out.size(0) == a.size(0) && out.size(1) == b.size(1),
                    "gemmlab._cuda.matmul_2d: out must have shape (a.size(0), b.size(1)); got ", all);
  TORCH_CHECK_VALUE(a.size(0) <= INT_MAX && a.size(1) <= INT_MAX && b.size(1) <= INT_MAX,
                    "gemmlab._cuda.matmul_2d: every dimension must be below 2^31; got ", all);
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
                    "gemmlab._cuda.matmul_2d: out has elements that share memory (an expanded view?); got ", all);
  at::assert_no_overlap(out, a);
  at::assert_no_overlap(out, b);
}

void matmul_2d(const at::Tensor& a, const at::Tensor& b, at::Tensor& out, const std::string& kernel) {
  const gpu::Kernel kind = parse_kernel(kernel);
  check_arguments(a, b, out);
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard device_guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();  // what at::cuda::getCurrentCUDAStream() returns
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gemmlab_cuda_matmul_2d", [&] {
    const gpu::Problem<scalar_t> problem{a.size(0),
                                         b.size(1),
                                         a.size(1),
                                         a.const_data_ptr<scalar_t>(),
                                         a.stride(0),
                                         a.stride(1),
                                         b.const_data_ptr<scalar_t>(),
                                         b.stride(0),
                                         b.stride(1),
                                         out.mutable_data_ptr<scalar_t>(),
                                         out.stride(0),
                                         out.stride(1)};
    C10_CUDA_CHECK(gpu::gemm(kind, problem, stream));
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gemmlab's CUDA matmul kernels (the GPU ladder)";
  m.def("matmul_2d", &matmul_2d,
        "out = a @ b for 2-D float32/float64 CUDA tensors of any strides, on the current stream, with the "
        "named kernel of the ladder",
        py::arg("a"), py::arg("b"), py::arg("out"), py::arg("kernel") = gpu::kernel_name(gpu::kDefaultKernel));
  m.def("kernels", &kernel_names, "the kernels of the ladder, slowest first");
  m.attr("DEFAULT_KERNEL") = gpu::kernel_name(gpu::kDefaultKernel);
}
