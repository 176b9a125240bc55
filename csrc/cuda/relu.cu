// CUDA twins of the ReLU-family backward kernels (see cnnviz/cuda.hpp): grid-stride loops over the
// per-element math shared with the CPU build.
#include <cuda_runtime.h>

#include <cstdint>

#include "cnnviz/cuda.hpp"
#include "cnnviz/detail/relu_math.hpp"
#include "launch.cuh"

namespace cnnviz::cuda {

namespace {

using impl::check_launch;
using impl::grid_for;
using impl::kBlock;

template <ReluMode M>
__global__ void relu_kernel(const float* x, const float* g, float* out, std::int64_t n,
                            float slope) {
  const std::int64_t stride = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float xi = M == ReluMode::deconvnet ? 0.f : x[i];
    out[i] = detail::relu_backward_one<M>(xi, g[i], slope);
  }
}

template <ReluMode M>
__global__ void clip_kernel(const float* x, const float* g, float* out, std::int64_t n, float lo,
                            float hi) {
  const std::int64_t stride = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float xi = M == ReluMode::deconvnet ? 0.f : x[i];
    out[i] = detail::clip_backward_one<M>(xi, g[i], lo, hi);
  }
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky error, report none
    return 0;
  }
  return count;
}

void relu_backward(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                   float negative_slope, void* stream) {
  detail::check_relu_args("cuda::relu_backward", x, g, out, n, mode);
  if (n == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  detail::visit_relu_mode(mode, [&](auto m) {
    relu_kernel<decltype(m)::value><<<grid_for(n), kBlock, 0, s>>>(x, g, out, n, negative_slope);
  });
  check_launch("relu_backward");
}

void relu_backward_clip(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                        float lo, float hi, void* stream) {
  detail::check_relu_args("cuda::relu_backward_clip", x, g, out, n, mode);
  if (n == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  detail::visit_relu_mode(mode, [&](auto m) {
    clip_kernel<decltype(m)::value><<<grid_for(n), kBlock, 0, s>>>(x, g, out, n, lo, hi);
  });
  check_launch("relu_backward_clip");
}

}  // namespace cnnviz::cuda
