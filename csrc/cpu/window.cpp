// Output size of a sliding window (see cnnviz/window.hpp) and the argument checks of the window
// kernels, shared by the CPU and CUDA entry points.
#include "cnnviz/window.hpp"

#include <stdexcept>
#include <string>

namespace cnnviz {

std::int64_t window_output_size(std::int64_t size, std::int64_t kernel, std::int64_t stride,
                                std::int64_t pad_begin, std::int64_t pad_end, std::int64_t dilation,
                                bool ceil_mode) {
  const auto fail = [](const std::string& what) {
    throw std::invalid_argument("cnnviz: bad window: " + what);
  };
  if (size < 1) fail("input size must be >= 1, got " + std::to_string(size));
  if (kernel < 1 || stride < 1 || dilation < 1) {
    fail("kernel, stride and dilation must be >= 1, got " + std::to_string(kernel) + ", " +
         std::to_string(stride) + ", " + std::to_string(dilation));
  }
  if (pad_begin < 0 || pad_end < 0) {
    fail("pads must be >= 0, got " + std::to_string(pad_begin) + ", " + std::to_string(pad_end));
  }
  const std::int64_t span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1;
  if (span < 0) {
    fail("dilated kernel " + std::to_string(dilation * (kernel - 1) + 1) +
         " is larger than the padded input " + std::to_string(size + pad_begin + pad_end));
  }
  std::int64_t out = (ceil_mode ? span + stride - 1 : span) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= size + pad_begin) --out;
  return out;
}

Extent2d window_output_extent(std::int64_t h, std::int64_t w, const Window2d& window,
                              bool ceil_mode) {
  return {window_output_size(h, window.kernel_h, window.stride_h, window.pad_top, window.pad_bottom,
                             window.dilation_h, ceil_mode),
          window_output_size(w, window.kernel_w, window.stride_w, window.pad_left, window.pad_right,
                             window.dilation_w, ceil_mode)};
}

}  // namespace cnnviz
