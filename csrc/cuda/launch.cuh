// Launch helpers shared by the CUDA kernels: grid sizing for grid-stride loops and launch checks.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace cnnviz::cuda::impl {

constexpr int kBlock = 256;
// Enough blocks to fill any current GPU; larger buffers loop in the grid-stride kernels.
constexpr std::int64_t kMaxBlocks = 65536;

inline int grid_for(std::int64_t n) {
  return static_cast<int>(std::min<std::int64_t>((n + kBlock - 1) / kBlock, kMaxBlocks));
}

inline void check_launch(const char* fn) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("cnnviz::cuda::") + fn +
                             ": kernel launch failed: " + cudaGetErrorString(err));
  }
}

inline void check_call(cudaError_t err, const char* fn) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("cnnviz::cuda::") + fn + ": " + cudaGetErrorString(err));
  }
}

/// First index and stride of a grid-stride loop.
__device__ inline std::int64_t first_index() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline std::int64_t grid_stride() {
  return static_cast<std::int64_t>(blockDim.x) * gridDim.x;
}

}  // namespace cnnviz::cuda::impl
