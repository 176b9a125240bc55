// Per-element window math shared by the CPU and CUDA builds of pooling and im2col / col2im.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cnnviz/detail/config.hpp"
#include "cnnviz/window.hpp"

namespace cnnviz::detail {

/// A half-open index range [lo, hi), empty when hi <= lo.
struct Range {
  std::int64_t lo, hi;
};

/// Indices t in [0, count) with 0 <= offset + t * step < size (step >= 1): the window taps (or the
/// output positions) that land inside an axis of `size` elements. Computed without a loop so that
/// inner loops carry no bounds test.
CNNVIZ_HD inline Range inside(std::int64_t offset, std::int64_t step, std::int64_t size,
                              std::int64_t count) {
  const std::int64_t lo = offset >= 0 ? 0 : (-offset + step - 1) / step;
  const std::int64_t last = size - 1 - offset;  // t * step <= last
  std::int64_t hi = last < 0 ? 0 : last / step + 1;
  if (hi > count) hi = count;
  return {lo, hi > lo ? hi : lo};
}

/// Max over the taps ri x rj of the window whose top-left tap is at (top, left) of a plane of
/// width w: the value and its switch (see cnnviz::max_pool2d for ties, NaN and empty windows).
CNNVIZ_HD inline void max_pool_window(const float* plane, std::int64_t w, std::int64_t top,
                                      Range ri, std::int64_t dilation_h, std::int64_t left,
                                      Range rj, std::int64_t dilation_w, float* value,
                                      std::int64_t* index) {
  float best = -__builtin_huge_valf();
  std::int64_t arg = -1;
  for (std::int64_t i = ri.lo; i < ri.hi; ++i) {
    const std::int64_t row = (top + i * dilation_h) * w + left;
    for (std::int64_t j = rj.lo; j < rj.hi; ++j) {
      const std::int64_t at = row + j * dilation_w;
      const float v = plane[at];
      // The first tap, a larger value, or the first NaN (best != best once a NaN is held).
      // Bitwise ops and selects, not branches: on random data the branches mispredict.
      const bool take = (arg < 0) | (v > best) | ((v != v) & (best == best));
      best = take ? v : best;
      arg = take ? at : arg;
    }
  }
  *value = best;
  *index = arg;
}

/// Max pooling of one output position (oh, ow) of an h x w plane.
CNNVIZ_HD inline void max_pool_one(const float* plane, std::int64_t h, std::int64_t w,
                                   const Window2d& win, std::int64_t oh, std::int64_t ow,
                                   float* value, std::int64_t* index) {
  const std::int64_t top = oh * win.stride_h - win.pad_top;
  const std::int64_t left = ow * win.stride_w - win.pad_left;
  max_pool_window(plane, w, top, inside(top, win.dilation_h, h, win.kernel_h), win.dilation_h, left,
                  inside(left, win.dilation_w, w, win.kernel_w), win.dilation_w, value, index);
}

/// Host-side argument checks shared by the CPU and CUDA entry points (`fn` names the caller).
/// Each returns the output extent of the window and throws std::invalid_argument on bad input.
inline Extent2d check_max_pool_args(const char* fn, const float* x, const float* y,
                                    std::int64_t planes, std::int64_t h, std::int64_t w,
                                    const Window2d& win, bool ceil_mode) {
  const std::string where = std::string("cnnviz::") + fn + ": ";
  if (planes < 0) throw std::invalid_argument(where + "planes must be >= 0");
  const Extent2d out = window_output_extent(h, w, win, ceil_mode);
  if (planes > 0 && (x == nullptr || y == nullptr)) {
    throw std::invalid_argument(where + "null buffer (only switches may be null)");
  }
  return out;
}

inline void check_max_unpool_args(const char* fn, const float* g, const std::int64_t* switches,
                                  const float* out, std::int64_t planes, std::int64_t pooled_size,
                                  std::int64_t h, std::int64_t w) {
  const std::string where = std::string("cnnviz::") + fn + ": ";
  if (planes < 0 || pooled_size < 0 || h < 0 || w < 0) {
    throw std::invalid_argument(where + "sizes must be >= 0, got planes " + std::to_string(planes) +
                                ", pooled_size " + std::to_string(pooled_size) + ", h " +
                                std::to_string(h) + ", w " + std::to_string(w));
  }
  if (planes * h * w > 0 && out == nullptr) throw std::invalid_argument(where + "null out");
  if (planes * pooled_size > 0 && (g == nullptr || switches == nullptr)) {
    throw std::invalid_argument(where + "null g or switches");
  }
  if (pooled_size > 0 && h * w == 0 && planes > 0) {
    throw std::invalid_argument(where + "an empty plane has no switch positions");
  }
}

inline Extent2d check_im2col_args(const char* fn, const float* a, const float* b, std::int64_t n,
                                  std::int64_t c, std::int64_t h, std::int64_t w,
                                  const Window2d& win) {
  const std::string where = std::string("cnnviz::") + fn + ": ";
  if (n < 0 || c < 0) {
    throw std::invalid_argument(where + "n and c must be >= 0, got " + std::to_string(n) + ", " +
                                std::to_string(c));
  }
  const Extent2d out = window_output_extent(h, w, win, false);
  if (n * c > 0 && (a == nullptr || b == nullptr))
    throw std::invalid_argument(where + "null buffer");
  return out;
}

}  // namespace cnnviz::detail
