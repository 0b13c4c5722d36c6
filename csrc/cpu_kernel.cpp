// gemmlab's C++ backend: out = a @ b for 2-D CPU tensors of any strides.
//
// The kernel reads each operand through its own strides, so transposed, sliced and expanded
// (stride-0) views need no copy. Loop order i-p-j keeps the innermost loop walking a row of b and
// a row of out. Rows are split across threads with ATen's parallel_for, which honours
// torch.set_num_threads().

#include <torch/extension.h>

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>

#include <sstream>
#include <string>

namespace {

std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes() << " " << t.scalar_type() << " on " << t.device();
  return s.str();
}

// Every check the kernel relies on; a bad call raises a Python exception instead of touching
// memory it does not own.
void check_arguments(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  const std::string all = "a: " + describe(a) + ", b: " + describe(b) + ", out: " + describe(out);
  for (const at::Tensor* t : {&a, &b, &out}) {
    TORCH_CHECK_VALUE(t->layout() == at::kStrided, "gemmlab._cpp.matmul_2d needs strided tensors; got ", all);
    TORCH_CHECK_VALUE(t->device().is_cpu(), "gemmlab._cpp.matmul_2d runs on the CPU; got ", all);
    TORCH_CHECK_VALUE(t->dim() == 2, "gemmlab._cpp.matmul_2d needs 2-D tensors; got ", all);
  }
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type() && a.scalar_type() == out.scalar_type(),
                   "gemmlab._cpp.matmul_2d needs one dtype for a, b and out; got ", all);
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
                   "gemmlab._cpp.matmul_2d supports float32 and float64; got ", all);
  TORCH_CHECK_VALUE(a.size(1) == b.size(0), "gemmlab._cpp.matmul_2d: inner dimensions differ; got ", all);
  TORCH_CHECK_VALUE(out.size(0) == a.size(0) && out.size(1) == b.size(1),
                    "gemmlab._cpp.matmul_2d: out must have shape (a.size(0), b.size(1)); got ", all);
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
                    "gemmlab._cpp.matmul_2d: out has elements that share memory (an expanded view?); got ", all);
  at::assert_no_overlap(out, a);
  at::assert_no_overlap(out, b);
}

template <typename T>
void matmul_rows(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  const int64_t as0 = a.stride(0), as1 = a.stride(1);
  const int64_t bs0 = b.stride(0), bs1 = b.stride(1);
  const int64_t cs0 = out.stride(0), cs1 = out.stride(1);
  const T* pa = a.data_ptr<T>();
  const T* pb = b.data_ptr<T>();
  T* pc = out.data_ptr<T>();
  // Small products are not worth waking threads for: ask for at least ~32k multiply-adds per task.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, k * n));
  at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* row = pc + i * cs0;
      for (int64_t j = 0; j < n; ++j) row[j * cs1] = T(0);
      for (int64_t p = 0; p < k; ++p) {
        const T aip = pa[i * as0 + p * as1];
        const T* brow = pb + p * bs0;
        for (int64_t j = 0; j < n; ++j) row[j * cs1] += aip * brow[j * bs1];
      }
    }
  });
}

void matmul_2d(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  check_arguments(a, b, out);
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gemmlab_cpp_matmul_2d", [&] { matmul_rows<scalar_t>(a, b, out); });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gemmlab's C++ matmul kernels";
  m.def("matmul_2d", &matmul_2d, "out = a @ b for 2-D float32/float64 CPU tensors of any strides",
        py::arg("a"), py::arg("b"), py::arg("out"));
}
