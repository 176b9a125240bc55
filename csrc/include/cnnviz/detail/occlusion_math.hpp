// Occlusion window math shared by the CPU and CUDA builds of occlusion_batch.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cnnviz/detail/config.hpp"
#include "cnnviz/detail/window_math.hpp"
#include "cnnviz/occlusion.hpp"

namespace cnnviz::detail {

/// Rows and columns of the window at (top, left), clipped to an h x w image (empty ranges when
/// the window misses the image).
struct Box {
  Range rows, cols;
};

CNNVIZ_HD inline Range clip_range(std::int64_t start, std::int64_t size, std::int64_t limit) {
  std::int64_t lo = start < 0 ? 0 : start;
  std::int64_t hi = start + size > limit ? limit : start + size;
  if (lo > limit) lo = limit;
  return {lo, hi > lo ? hi : lo};
}

CNNVIZ_HD inline Box occlusion_box(const std::int64_t* positions, std::int64_t p, std::int64_t h,
                                   std::int64_t w, std::int64_t window_h, std::int64_t window_w) {
  return {clip_range(positions[2 * p], window_h, h), clip_range(positions[2 * p + 1], window_w, w)};
}

/// The fill value of channel ch at pixel offset `at` (= y * w + x) of a plane of `plane` values.
CNNVIZ_HD inline float occlusion_fill_value(const float* fill, OcclusionFill kind,
                                            std::int64_t ch, std::int64_t at, std::int64_t plane) {
  switch (kind) {
    case OcclusionFill::constant:
      return fill[0];
    case OcclusionFill::per_channel:
      return fill[ch];
    default:
      return fill[ch * plane + at];
  }
}

/// Host-side argument checks shared by the CPU and CUDA entry points.
inline void check_occlusion_args(const char* fn, const float* image, std::int64_t c,
                                 std::int64_t h, std::int64_t w, const std::int64_t* positions,
                                 std::int64_t count, std::int64_t window_h, std::int64_t window_w,
                                 const float* fill, OcclusionFill kind, const float* out) {
  const std::string where = std::string("cnnviz::") + fn + ": ";
  if (c < 0 || h < 0 || w < 0 || count < 0 || window_h < 0 || window_w < 0) {
    throw std::invalid_argument(where + "sizes must be >= 0, got c " + std::to_string(c) + ", h " +
                                std::to_string(h) + ", w " + std::to_string(w) + ", count " +
                                std::to_string(count) + ", window " + std::to_string(window_h) +
                                "x" + std::to_string(window_w));
  }
  const int k = static_cast<int>(kind);
  if (k < 0 || k > 2) {
    throw std::invalid_argument(where + "invalid OcclusionFill value " + std::to_string(k));
  }
  if (count > 0 && positions == nullptr) throw std::invalid_argument(where + "null positions");
  if (count * c * h * w > 0 && (image == nullptr || fill == nullptr || out == nullptr)) {
    throw std::invalid_argument(where + "null buffer");
  }
}

}  // namespace cnnviz::detail
