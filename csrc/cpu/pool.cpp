// CPU max pooling with switches and max unpooling (see cnnviz/pool.hpp): threads split the output
// rows (pooling) or the planes (unpooling, so that the scatter of one plane has a single writer).
#include "cnnviz/pool.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cnnviz/detail/window_math.hpp"
#include "parallel.hpp"

namespace cnnviz {

namespace {

/// Work items (rows, planes) per thread so that each thread gets about kMinElementsPerThread
/// values to touch.
std::int64_t items_per_thread(std::int64_t values_per_item) {
  return std::max<std::int64_t>(
      1, cpu::kMinElementsPerThread / std::max<std::int64_t>(1, values_per_item));
}

}  // namespace

void max_pool2d(const float* x, float* y, std::int64_t* switches, std::int64_t planes,
                std::int64_t h, std::int64_t w, const Window2d& window, bool ceil_mode,
                int num_threads) {
  const Extent2d out =
      detail::check_max_pool_args("max_pool2d", x, y, planes, h, w, window, ceil_mode);
  const std::int64_t rows = planes * out.h;
  const std::int64_t taps = window.kernel_h * window.kernel_w;
  cpu::parallel_for(
      rows, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        // The taps inside the plane depend on the row or the column only: find them once.
        std::vector<detail::Range> col_taps(out.w);
        for (std::int64_t ow = 0; ow < out.w; ++ow) {
          col_taps[ow] = detail::inside(ow * window.stride_w - window.pad_left, window.dilation_w,
                                        w, window.kernel_w);
        }
        for (std::int64_t r = begin; r < end; ++r) {
          const std::int64_t p = r / out.h, oh = r % out.h;
          const std::int64_t top = oh * window.stride_h - window.pad_top;
          const detail::Range row_taps = detail::inside(top, window.dilation_h, h, window.kernel_h);
          const float* plane = x + p * h * w;
          for (std::int64_t ow = 0; ow < out.w; ++ow) {
            float v;
            std::int64_t s;
            detail::max_pool_window(plane, w, top, row_taps, window.dilation_h,
                                    ow * window.stride_w - window.pad_left, col_taps[ow],
                                    window.dilation_w, &v, &s);
            y[r * out.w + ow] = v;
            if (switches != nullptr) switches[r * out.w + ow] = s;
          }
        }
      },
      items_per_thread(out.w * taps));
}

void max_unpool2d(const float* g, const std::int64_t* switches, float* out, std::int64_t planes,
                  std::int64_t pooled_size, std::int64_t h, std::int64_t w, int num_threads) {
  detail::check_max_unpool_args("max_unpool2d", g, switches, out, planes, pooled_size, h, w);
  const std::int64_t plane_size = h * w;
  cpu::parallel_for(
      planes, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        std::fill(out + begin * plane_size, out + end * plane_size, 0.f);
        for (std::int64_t p = begin; p < end; ++p) {
          const float* gp = g + p * pooled_size;
          const std::int64_t* sp = switches + p * pooled_size;
          float* op = out + p * plane_size;
          for (std::int64_t k = 0; k < pooled_size; ++k) {
            const std::int64_t s = sp[k];
            if (static_cast<std::uint64_t>(s) < static_cast<std::uint64_t>(plane_size)) {
              op[s] += gp[k];
            } else if (s != -1) {
              throw std::invalid_argument("cnnviz::max_unpool2d: switch " + std::to_string(s) +
                                          " of plane " + std::to_string(p) + " is outside [-1, " +
                                          std::to_string(plane_size) + ")");
            }
          }
        }
      },
      items_per_thread(plane_size + 2 * pooled_size));
}

}  // namespace cnnviz
