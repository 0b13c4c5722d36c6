// gemmlab's dispatch core: gemmlab.matmul for the compiled backends (and `torch`) in one C++ call.
//
// It takes the operands as Python objects and either returns the product or returns None, which
// tells gemmlab.matmul to take its Python path. That path holds the reference semantics and every
// error message, so this file needs only the conditions: anything unusual (a bad argument, a
// tensor subclass, an active torch function or dispatch mode, out= with inputs that need autograd)
// goes there, and the kernels only ever see arguments that were checked here. Inputs that need
// autograd go through the registered op gemmlab::native_product (autograd_op.cpp) from C++.
#pragma once

#include <torch/extension.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernel_abi.h"

namespace gemmlab {

struct Kernel {
  std::string name;
  gemmlab_gemm_f32 f32 = nullptr;
  gemmlab_gemm_f64 f64 = nullptr;
  // Products of at most this many multiply-adds run serial code when called with threads == 1, so
  // the core may run several at once (the entries of a batch). Above it, one entry at a time.
  int64_t serial_fmas = 0;
  gemmlab_last_error last_error = nullptr;  // optional: what went wrong when the kernel returned an error
  int64_t workspace_bytes = 0;  // scratch memory the core hands the kernel on every call (kernel_abi.h)
  bool is_torch = false;  // the `torch` backend: at::matmul after the checks (any dtype, CPU or CUDA)
  bool is_auto = false;   // `auto`: each product runs on the kernel chosen for its bucket (below)
};

// For tests that check which kernel ran on what: while tracing, every product the core runs is
// recorded as (kernel name, batch count, m, k, n, dtype, thread id), after batch dimensions
// were folded into rows (only products with something to compute).
void set_tracing(bool on);
py::list take_trace();

// Adds a kernel to the table and returns its id (the `cpp` and `torch` kernels are registered at
// module load; see kernel_id).
// A kernel with no functions is the `torch` kernel.
int register_kernel(const std::string& name, gemmlab_gemm_f32 f32, gemmlab_gemm_f64 f64, int64_t serial_fmas,
                    int64_t workspace_bytes = 0, gemmlab_last_error last_error = nullptr);
int kernel_id(const std::string& name);  // -1 if none is registered under that name
const Kernel& kernel(int id);

// The product a @ b with torch.matmul's semantics on the kernel `id`, into `out` if it is not None;
// None where the Python path must take the call (see above).
py::object matmul(py::handle a, py::handle b, int id, py::handle out);

// a @ b with torch.matmul's semantics on the kernel `id`, into a fresh output, ignoring autograd
// (the op's CPU and CUDA implementation). Checks its arguments: bad ones raise, naming them.
// Needs no GIL (and releases none).
at::Tensor product(const at::Tensor& a, const at::Tensor& b, int id);

// a @ b through the op gemmlab::native_product on the kernel named `kernel`, so that autograd
// records it (defined in autograd_op.cpp). Needs no GIL.
at::Tensor differentiable_product(const at::Tensor& a, const at::Tensor& b, const std::string& kernel);

// --- `auto`: a kernel per product, chosen by the product's bucket -----------------------------------
// The bucket of a product is what the choice depends on, taken after the core has planned it (batch
// dimensions that fold into rows are folded, so a batch sharing one B is one tall product):
// dtype, device type, ceil(log2) of m, k, n and of the batch count, each operand's layout ('R': unit
// stride along its rows' elements, i.e. row-major; 'C': column-major, e.g. a transposed view; 'S':
// neither) and the thread count. This is the one definition: Python asks auto_choice() for it.
struct Bucket {
  at::ScalarType dtype;
  c10::DeviceType device;
  int log_m, log_k, log_n, log_batch;
  char layout_a, layout_b;
  int threads;
  uint64_t key() const;  // all of the above packed into one integer, the table's key
};

// Adds the `auto` kernel (after `cpp` and `torch`, which its built-in rule names) and returns its id.
int register_auto_kernel();
// Replaces auto's table whole: bucket -> kernel id (ids of registered kernels, not auto's own).
// Buckets without an entry, and entries whose kernel cannot take the product, follow the built-in
// rule: `cpp` for float32 and float64 on the CPU, `torch` for everything else.
void set_auto_table(const std::vector<std::pair<Bucket, int>>& entries);
// The bucket of a @ b and the kernel auto runs it on now (a and b checked as product() checks them).
std::pair<Bucket, const Kernel*> auto_choice(const at::Tensor& a, const at::Tensor& b);

// Outputs of at least this many bytes that the core allocates are advised to the kernel as huge
// pages before their first touch (GEMMLAB_HUGE_PAGES=0 turns that off). 32 MiB is glibc's largest
// mmap threshold: such an output is a fresh mapping every time, and 4 KiB pages fault it in anew on
// every call (50000x50 @ 50x784, 157 MB: 38,000 faults, 50 ms a call against 22 ms advised; Xeon
// KVM guest, 2 threads). Smaller ones come back from the heap already mapped, where the advice
// only cost (50000x1 @ 1x50, 10 MB: 0.47 -> 15 ms a call; 1024^3: 6.6 -> 9.1 ms).
constexpr int64_t HUGE_PAGE_MIN_BYTES = int64_t(32) << 20;

}  // namespace gemmlab
