// Window2d from the Python-side arguments shared by the CPU and CUDA bindings.
#pragma once

#include <array>
#include <cstdint>

#include "cnnviz/window.hpp"

namespace cnnviz::python {

using Pair = std::array<std::int64_t, 2>;
/// ONNX pads order: top, left, bottom, right.
using Pads = std::array<std::int64_t, 4>;

inline Window2d make_window(const Pair& kernel, const Pair& stride, const Pads& pads,
                            const Pair& dilation) {
  return {kernel[0], kernel[1], stride[0], stride[1],   pads[0],
          pads[1],   pads[2],   pads[3],   dilation[0], dilation[1]};
}

}  // namespace cnnviz::python
