// CPU im2col / col2im (see cnnviz/im2col.hpp): threads split the (image, channel) planes, which
// own disjoint rows of cols and disjoint planes of x, so col2im accumulates without atomics. The
// valid output columns of each tap row are computed up front, leaving branch-free inner loops.
// col2im with stride_w 1 (the common case) has its own per-ISA routine (col2im_rows.inc): plane
// zeroed and accumulated in L1 with AVX-512 masked adds, cols prefetched far ahead.
#include "cnnviz/im2col.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cnnviz/detail/window_math.hpp"
#include "parallel.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

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

// The stride-1 col2im, compiled for the baseline ISA and, on x86-64 with GCC, for AVX2 and
// AVX-512 too (`#pragma GCC target`); picked at run time (no -march flag: one build runs on any
// x86-64).
namespace base {
#include "col2im_rows.inc"
}  // namespace base
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CNNVIZ_IM2COL_X86 1
namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2")
#include "col2im_rows.inc"
#pragma GCC pop_options
}  // namespace avx2
namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f")
#include "col2im_rows.inc"
#pragma GCC pop_options
}  // namespace avx512
#endif

using Col2imS1 = void (*)(const float*, float*, std::int64_t, std::int64_t, std::int64_t,
                          std::int64_t, const Window2d&, const Extent2d&);

Col2imS1 col2im_s1() {
  static const Col2imS1 fn = [] {
#if CNNVIZ_IM2COL_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return &avx512::col2im_s1;
    if (__builtin_cpu_supports("avx2")) return &avx2::col2im_s1;
#endif
    return &base::col2im_s1;
  }();
  return fn;
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
  const Col2imS1 fast = sw == 1 ? col2im_s1() : nullptr;
  cpu::parallel_for(
      n * c, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        if (fast != nullptr) {
          fast(cols, x, begin, end, h, w, window, out);
          return;
        }
        std::fill(x + begin * h * w, x + end * h * w, 0.f);
        for_each_tap_row(begin, end, h, w, window, out,
                         [&](std::int64_t at, std::int64_t p, std::int64_t ih, detail::Range in,
                             std::int64_t left) {
                           if (ih < 0) return;
                           const float* src = cols + at;
                           float* dst = x + (p * h + ih) * w;
                           for (std::int64_t ow = in.lo; ow < in.hi; ++ow) {
                             dst[ow * sw + left] += src[ow];
                           }
                         });
      },
      planes_per_thread(h * w + window.kernel_h * window.kernel_w * out.h * out.w));
}

}  // namespace cnnviz
