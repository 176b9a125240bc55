// Geometry of a 2-D sliding window (pooling, im2col / col2im) over NCHW float32 planes.
#pragma once

#include <cstdint>

namespace cnnviz {

/// A 2-D window: kernel size, stride, padding on each side (ONNX `pads` order: top, left, bottom,
/// right) and dilation. Tap (i, j) of the output position (oh, ow) reads input row
/// oh * stride_h - pad_top + i * dilation_h and column ow * stride_w - pad_left + j * dilation_w.
struct Window2d {
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  std::int64_t dilation_h = 1, dilation_w = 1;
};

/// Height and width of a plane.
struct Extent2d {
  std::int64_t h = 0, w = 0;
};

/// Number of window positions along one axis of `size` elements (PyTorch / ONNX rule):
/// floor (or ceil) of (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) / stride, plus 1;
/// in ceil mode a last window that would start in the end padding is dropped.
/// Throws std::invalid_argument for size < 1, kernel, stride or dilation < 1, negative pads, or a
/// dilated window larger than the padded input.
std::int64_t window_output_size(std::int64_t size, std::int64_t kernel, std::int64_t stride,
                                std::int64_t pad_begin, std::int64_t pad_end, std::int64_t dilation,
                                bool ceil_mode);

/// window_output_size along both axes of an h x w plane (same errors).
Extent2d window_output_extent(std::int64_t h, std::int64_t w, const Window2d& window,
                              bool ceil_mode);

}  // namespace cnnviz
