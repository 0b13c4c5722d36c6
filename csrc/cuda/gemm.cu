// The kernels of gemm_kernels.cuh, compiled by nvcc for float and double: the only CUDA translation
// unit of gemmlab's CUDA extension (the torch glue, cuda_ext.cpp, is plain C++ and calls these).

#include "gemm_kernels.cuh"

namespace gemmlab {
namespace gpu {

template Plan plan<float>(const Problem<float>&);
template Plan plan<double>(const Problem<double>&);
template cudaError_t gemm<float>(Kernel, const Problem<float>&, cudaStream_t);
template cudaError_t gemm<double>(Kernel, const Problem<double>&, cudaStream_t);

}  // namespace gpu
}  // namespace gemmlab
