// CUDA twin of the occlusion batch builder (see cnnviz/cuda.hpp): one thread per output value,
// over the window math shared with the CPU build.
#include <cuda_runtime.h>

#include <cstdint>

#include "cnnviz/cuda.hpp"
#include "cnnviz/detail/occlusion_math.hpp"
#include "launch.cuh"

namespace cnnviz::cuda {

namespace {

__global__ void occlusion_kernel(const float* image, std::int64_t c, std::int64_t h,
                                 std::int64_t w, const std::int64_t* positions, std::int64_t total,
                                 std::int64_t window_h, std::int64_t window_w, const float* fill,
                                 OcclusionFill kind, float* out) {
  const std::int64_t plane = h * w;
  for (std::int64_t k = impl::first_index(); k < total; k += impl::grid_stride()) {
    const std::int64_t at = k % plane, q = k / plane;
    const std::int64_t ch = q % c, p = q / c;
    const std::int64_t y = at / w, x = at % w;
    const detail::Box box = detail::occlusion_box(positions, p, h, w, window_h, window_w);
    const bool inside =
        y >= box.rows.lo && y < box.rows.hi && x >= box.cols.lo && x < box.cols.hi;
    out[k] = inside ? detail::occlusion_fill_value(fill, kind, ch, at, plane)
                    : image[ch * plane + at];
  }
}

}  // namespace

void occlusion_batch(const float* image, std::int64_t c, std::int64_t h, std::int64_t w,
                     const std::int64_t* positions, std::int64_t count, std::int64_t window_h,
                     std::int64_t window_w, const float* fill, OcclusionFill kind, float* out,
                     void* stream) {
  detail::check_occlusion_args("cuda::occlusion_batch", image, c, h, w, positions, count,
                               window_h, window_w, fill, kind, out);
  const std::int64_t total = count * c * h * w;
  if (total == 0) return;
  occlusion_kernel<<<impl::grid_for(total), impl::kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      image, c, h, w, positions, total, window_h, window_w, fill, kind, out);
  impl::check_launch("occlusion_batch");
}

}  // namespace cnnviz::cuda
