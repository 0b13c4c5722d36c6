// A page-aligned scratch buffer that grows on demand and is kept, so that its pages are touched once:
// allocating (and page-faulting) a few MiB on every call would cost more than the packing it holds.
// One per thread (thread_local) for the packing buffers of the cpp kernel (gemm.cpp) and the workspace
// the dispatch core hands to the other kernels (kernel_abi.h).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace gemmlab {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(ptr_); }

  // At least `bytes` bytes, 4096-byte aligned; throws std::bad_alloc. Keeps nothing of the old contents.
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(ptr_);
      ptr_ = nullptr;
      size_ = 0;
      const size_t rounded = (bytes + 4095) / 4096 * 4096;  // aligned_alloc wants a multiple
      ptr_ = std::aligned_alloc(4096, rounded);
      if (ptr_ == nullptr) throw std::bad_alloc();
      size_ = rounded;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace gemmlab
