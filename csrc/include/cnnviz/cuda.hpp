// CUDA twins of the CPU kernels (link cnnviz::kernels_cuda). Buffers are device pointers; work is
// enqueued on `stream` (a cudaStream_t passed as void*, null = the default stream) and the calls
// return without synchronizing. Launch errors throw std::runtime_error; errors of the kernel itself
// surface at the next synchronizing CUDA call.
#pragma once

#ifndef CNNVIZ_HAS_CUDA
#error "cnnviz/cuda.hpp needs the CUDA build of cnnviz: link cnnviz::kernels_cuda"
#endif

#include <cstdint>

#include "cnnviz/relu.hpp"

namespace cnnviz::cuda {

/// Number of CUDA devices this process can use; 0 when there is no device or no driver.
int device_count();

/// Device twin of cnnviz::relu_backward (same math, arguments and aliasing rules).
void relu_backward(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                   float negative_slope = 0.f, void* stream = nullptr);

/// Device twin of cnnviz::relu_backward_clip.
void relu_backward_clip(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                        float lo, float hi, void* stream = nullptr);

}  // namespace cnnviz::cuda
