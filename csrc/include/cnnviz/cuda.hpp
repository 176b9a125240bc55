// CUDA twins of the CPU kernels (link cnnviz::kernels_cuda). Buffers are device pointers; work is
// enqueued on `stream` (a cudaStream_t passed as void*, null = the default stream) and the calls
// return without synchronizing. Launch errors throw std::runtime_error; errors of the kernel itself
// surface at the next synchronizing CUDA call.
#pragma once

#ifndef CNNVIZ_HAS_CUDA
#error "cnnviz/cuda.hpp needs the CUDA build of cnnviz: link cnnviz::kernels_cuda"
#endif

#include <cstdint>

#include "cnnviz/gram.hpp"
#include "cnnviz/im2col.hpp"
#include "cnnviz/occlusion.hpp"
#include "cnnviz/pool.hpp"
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

/// Device twin of cnnviz::max_pool2d (same math, arguments and errors).
void max_pool2d(const float* x, float* y, std::int64_t* switches, std::int64_t planes,
                std::int64_t h, std::int64_t w, const Window2d& window, bool ceil_mode = false,
                void* stream = nullptr);

/// Device twin of cnnviz::max_unpool2d, except that a switch out of range cannot be reported
/// from the device: it is skipped like -1. Overlapping windows add up with atomics, so the order
/// of the additions (and the last bits of such sums) may vary between runs.
void max_unpool2d(const float* g, const std::int64_t* switches, float* out, std::int64_t planes,
                  std::int64_t pooled_size, std::int64_t h, std::int64_t w, void* stream = nullptr);

/// Device twin of cnnviz::im2col.
void im2col(const float* x, float* cols, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, void* stream = nullptr);

/// Device twin of cnnviz::col2im (one thread per input pixel gathers its taps: no atomics,
/// deterministic).
void col2im(const float* cols, float* x, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, void* stream = nullptr);

/// Device twin of cnnviz::occlusion_batch (positions and fill are device buffers too).
void occlusion_batch(const float* image, std::int64_t c, std::int64_t h, std::int64_t w,
                     const std::int64_t* positions, std::int64_t count, std::int64_t window_h,
                     std::int64_t window_w, const float* fill, OcclusionFill kind, float* out,
                     void* stream = nullptr);

/// Device twin of cnnviz::gram: shared-memory tiles of F, only the tiles on and above the
/// diagonal are computed, each mirrored as it is stored.
void gram(const float* features, float* out, std::int64_t batch, std::int64_t c, std::int64_t n,
          float norm, void* stream = nullptr);

/// Device twin of cnnviz::gram_backward. `workspace` must hold batch * c * c floats (the
/// symmetrized, scaled dG); it may be null, then the call allocates and frees one.
void gram_backward(const float* features, const float* grad, float* out, std::int64_t batch,
                   std::int64_t c, std::int64_t n, float norm, float* workspace = nullptr,
                   void* stream = nullptr);

}  // namespace cnnviz::cuda
