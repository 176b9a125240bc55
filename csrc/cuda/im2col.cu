// CUDA twins of im2col / col2im (see cnnviz/cuda.hpp): im2col has one thread per value of cols;
// col2im has one thread per input pixel that sums the taps reading it (no atomics).
#include <cuda_runtime.h>

#include <cstdint>

#include "cnnviz/cuda.hpp"
#include "cnnviz/detail/window_math.hpp"
#include "launch.cuh"

namespace cnnviz::cuda {

namespace {

__global__ void im2col_kernel(const float* x, float* cols, std::int64_t count, std::int64_t h,
                              std::int64_t w, Window2d win, Extent2d out) {
  for (std::int64_t k = impl::first_index(); k < count; k += impl::grid_stride()) {
    const std::int64_t ow = k % out.w, oh = (k / out.w) % out.h, row = k / (out.w * out.h);
    const std::int64_t j = row % win.kernel_w, i = (row / win.kernel_w) % win.kernel_h;
    const std::int64_t p = row / (win.kernel_w * win.kernel_h);
    const std::int64_t ih = oh * win.stride_h - win.pad_top + i * win.dilation_h;
    const std::int64_t iw = ow * win.stride_w - win.pad_left + j * win.dilation_w;
    cols[k] = ih >= 0 && ih < h && iw >= 0 && iw < w ? x[(p * h + ih) * w + iw] : 0.f;
  }
}

/// Output positions o in [0, count) and taps t in [0, kernel) meet at input index `at` when
/// o * stride - pad + t * dilation == at: visit each tap t whose o is whole and in range.
template <class Fn>
__device__ void for_each_tap(std::int64_t at, std::int64_t stride, std::int64_t pad,
                             std::int64_t dilation, std::int64_t kernel, std::int64_t count,
                             Fn&& fn) {
  for (std::int64_t t = 0; t < kernel; ++t) {
    const std::int64_t num = at + pad - t * dilation;
    if (num >= 0 && num % stride == 0 && num / stride < count) fn(t, num / stride);
  }
}

__global__ void col2im_kernel(const float* cols, float* x, std::int64_t count, std::int64_t h,
                              std::int64_t w, Window2d win, Extent2d out) {
  for (std::int64_t k = impl::first_index(); k < count; k += impl::grid_stride()) {
    const std::int64_t iw = k % w, ih = (k / w) % h, p = k / (w * h);
    const float* plane_cols = cols + p * win.kernel_h * win.kernel_w * out.h * out.w;
    float sum = 0.f;
    for_each_tap(ih, win.stride_h, win.pad_top, win.dilation_h, win.kernel_h, out.h,
                 [&](std::int64_t i, std::int64_t oh) {
                   for_each_tap(
                       iw, win.stride_w, win.pad_left, win.dilation_w, win.kernel_w, out.w,
                       [&](std::int64_t j, std::int64_t ow) {
                         sum += plane_cols[((i * win.kernel_w + j) * out.h + oh) * out.w + ow];
                       });
                 });
    x[k] = sum;
  }
}

}  // namespace

void im2col(const float* x, float* cols, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, void* stream) {
  const Extent2d out = detail::check_im2col_args("cuda::im2col", x, cols, n, c, h, w, window);
  const std::int64_t count = n * c * window.kernel_h * window.kernel_w * out.h * out.w;
  if (count == 0) return;
  im2col_kernel<<<impl::grid_for(count), impl::kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      x, cols, count, h, w, window, out);
  impl::check_launch("im2col");
}

void col2im(const float* cols, float* x, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, void* stream) {
  const Extent2d out = detail::check_im2col_args("cuda::col2im", cols, x, n, c, h, w, window);
  const std::int64_t count = n * c * h * w;
  if (count == 0) return;
  col2im_kernel<<<impl::grid_for(count), impl::kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      cols, x, count, h, w, window, out);
  impl::check_launch("col2im");
}

}  // namespace cnnviz::cuda
