// CUDA twins of max pooling with switches and max unpooling (see cnnviz/cuda.hpp): one thread per
// pooled value, over the per-window math shared with the CPU build.
#include <cuda_runtime.h>

#include <cstdint>

#include "cnnviz/cuda.hpp"
#include "cnnviz/detail/window_math.hpp"
#include "launch.cuh"

namespace cnnviz::cuda {

namespace {

__global__ void max_pool_kernel(const float* x, float* y, std::int64_t* switches,
                                std::int64_t count, std::int64_t h, std::int64_t w, Window2d win,
                                Extent2d out) {
  for (std::int64_t k = impl::first_index(); k < count; k += impl::grid_stride()) {
    const std::int64_t ow = k % out.w, row = k / out.w;
    const std::int64_t oh = row % out.h, p = row / out.h;
    float v;
    std::int64_t s;
    detail::max_pool_one(x + p * h * w, h, w, win, oh, ow, &v, &s);
    y[k] = v;
    if (switches != nullptr) switches[k] = s;
  }
}

__global__ void max_unpool_kernel(const float* g, const std::int64_t* switches, float* out,
                                  std::int64_t count, std::int64_t pooled_size,
                                  std::int64_t plane_size) {
  for (std::int64_t k = impl::first_index(); k < count; k += impl::grid_stride()) {
    const std::int64_t s = switches[k];
    if (s >= 0 && s < plane_size) atomicAdd(out + (k / pooled_size) * plane_size + s, g[k]);
  }
}

}  // namespace

void max_pool2d(const float* x, float* y, std::int64_t* switches, std::int64_t planes,
                std::int64_t h, std::int64_t w, const Window2d& window, bool ceil_mode,
                void* stream) {
  const Extent2d out =
      detail::check_max_pool_args("cuda::max_pool2d", x, y, planes, h, w, window, ceil_mode);
  const std::int64_t count = planes * out.h * out.w;
  if (count == 0) return;
  max_pool_kernel<<<impl::grid_for(count), impl::kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      x, y, switches, count, h, w, window, out);
  impl::check_launch("max_pool2d");
}

void max_unpool2d(const float* g, const std::int64_t* switches, float* out, std::int64_t planes,
                  std::int64_t pooled_size, std::int64_t h, std::int64_t w, void* stream) {
  detail::check_max_unpool_args("cuda::max_unpool2d", g, switches, out, planes, pooled_size, h, w);
  const auto s = static_cast<cudaStream_t>(stream);
  if (planes * h * w == 0) return;
  impl::check_call(cudaMemsetAsync(out, 0, sizeof(float) * planes * h * w, s), "max_unpool2d");
  const std::int64_t count = planes * pooled_size;
  if (count == 0) return;
  max_unpool_kernel<<<impl::grid_for(count), impl::kBlock, 0, s>>>(g, switches, out, count,
                                                                   pooled_size, h * w);
  impl::check_launch("max_unpool2d");
}

}  // namespace cnnviz::cuda
