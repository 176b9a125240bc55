// CPU im2col / col2im (see cnnviz/im2col.hpp): threads split the (image, channel) planes, which
// own disjoint rows of cols and disjoint planes of x, so col2im accumulates without atomics. The
// valid output columns of each tap row are computed up front, leaving branch-free inner loops.
#include "cnnviz/im2col.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cnnviz/detail/window_math.hpp"
#include "parallel.hpp"

namespace cnnviz {

namespace {

/// Visits every (tap, output row oh) of planes [begin, end): fn(at, plane, ih, in, left) with `at`
/// the offset of that row in cols, ih the input row (-1 in the padding), and `in` the output
/// columns ow whose tap lands inside the plane, at input column ow * stride_w + left.
template <class Fn>
void for_each_tap_row(std::int64_t begin, std::int64_t end, std::int64_t h, std::int64_t w,
                      const Window2d& win, const Extent2d& out, Fn&& fn) {
  const std::int64_t taps = win.kernel_h * win.kernel_w;
  for (std::int64_t p = begin; p < end; ++p) {
    for (std::int64_t i = 0; i < win.kernel_h; ++i) {
      for (std::int64_t j = 0; j < win.kernel_w; ++j) {
        const std::int64_t row = p * taps + i * win.kernel_w + j;
        const std::int64_t left = j * win.dilation_w - win.pad_left;
        const detail::Range cols_in = detail::inside(left, win.stride_w, w, out.w);
        for (std::int64_t oh = 0; oh < out.h; ++oh) {
          const std::int64_t ih = oh * win.stride_h - win.pad_top + i * win.dilation_h;
          fn((row * out.h + oh) * out.w, p, ih >= 0 && ih < h ? ih : -1, cols_in, left);
        }
      }
    }
  }
}

std::int64_t planes_per_thread(std::int64_t values_per_plane) {
  return std::max<std::int64_t>(
      1, cpu::kMinElementsPerThread / std::max<std::int64_t>(1, values_per_plane));
}

}  // namespace

void im2col(const float* x, float* cols, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, int num_threads) {
  const Extent2d out = detail::check_im2col_args("im2col", x, cols, n, c, h, w, window);
  const std::int64_t sw = window.stride_w;
  cpu::parallel_for(
      n * c, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        for_each_tap_row(begin, end, h, w, window, out,
                         [&](std::int64_t at, std::int64_t p, std::int64_t ih, detail::Range in,
                             std::int64_t left) {
                           float* dst = cols + at;
                           if (ih < 0) {
                             std::fill(dst, dst + out.w, 0.f);
                             return;
                           }
                           const float* src = x + (p * h + ih) * w;
                           std::fill(dst, dst + in.lo, 0.f);
                           if (sw == 1) {  // a contiguous run: copy it
                             std::copy(src + in.lo + left, src + in.hi + left, dst + in.lo);
                           } else {
                             for (std::int64_t ow = in.lo; ow < in.hi; ++ow) {
                               dst[ow] = src[ow * sw + left];
                             }
                           }
                           std::fill(dst + in.hi, dst + out.w, 0.f);
                         });
      },
      planes_per_thread(h * w + window.kernel_h * window.kernel_w * out.h * out.w));
}

void col2im(const float* cols, float* x, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, int num_threads) {
  const Extent2d out = detail::check_im2col_args("col2im", cols, x, n, c, h, w, window);
  const std::int64_t sw = window.stride_w;
  cpu::parallel_for(
      n * c, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        std::fill(x + begin * h * w, x + end * h * w, 0.f);
        for_each_tap_row(begin, end, h, w, window, out,
                         [&](std::int64_t at, std::int64_t p, std::int64_t ih, detail::Range in,
                             std::int64_t left) {
                           if (ih < 0) return;
                           const float* src = cols + at;
                           float* dst = x + (p * h + ih) * w;
                           if (sw == 1) {  // contiguous: a loop the compiler vectorizes
                             float* run = dst + in.lo + left;
                             const float* from = src + in.lo;
                             for (std::int64_t k = 0; k < in.hi - in.lo; ++k) run[k] += from[k];
                           } else {
                             for (std::int64_t ow = in.lo; ow < in.hi; ++ow) {
                               dst[ow * sw + left] += src[ow];
                             }
                           }
                         });
      },
      planes_per_thread(h * w + window.kernel_h * window.kernel_w * out.h * out.w));
}

}  // namespace cnnviz
