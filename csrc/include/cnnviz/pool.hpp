// 2-D max pooling that records its argmax "switches", and max unpooling (the scatter of a signal
// to those switches): the Zeiler-Fergus deconvnet step and the true gradient of max pooling.
// Arrays are contiguous NCHW float32 buffers in host memory, seen as `planes` = N * C planes; the
// CUDA twins are in cnnviz/cuda.hpp.
#pragma once

#include <cstdint>

#include "cnnviz/window.hpp"

namespace cnnviz {

/// Max pooling over each h x w plane of x, y[p, oh, ow] = max of the window at (oh, ow).
///
/// The switch of an output is the flat index ih * w + iw of its maximum inside the input plane
/// (PyTorch's convention; ONNX MaxPool Indices also count earlier planes: subtract p * h * w).
/// Padding is never the maximum; the first maximum in row-major window order wins ties, and a NaN
/// propagates (the first NaN wins, like numpy.argmax; PyTorch keeps the last one). A window with no
/// tap inside the plane (only possible with large pads) gives -inf and switch -1.
///
/// Args:
///   x: input, planes * h * w values.
///   y: output, planes * out.h * out.w values, out = window_output_extent(h, w, window, ceil_mode).
///   switches: output, same count as y; may be null when not needed.
///   planes, h, w: N * C and the plane size.
///   num_threads: CPU threads, 0 = default_num_threads(); small inputs use fewer.
/// Throws std::invalid_argument for negative counts, a null buffer or a bad window (see
/// window_output_size).
void max_pool2d(const float* x, float* y, std::int64_t* switches, std::int64_t planes,
                std::int64_t h, std::int64_t w, const Window2d& window, bool ceil_mode = false,
                int num_threads = 0);

/// Max unpooling: out is zeroed, then out[p, s] += g[p, k] for every pooled position k of every
/// plane p, where s = switches[p, k] (overlapping windows that share a maximum add up). A switch
/// of -1 (an empty window) is skipped.
///
/// Args:
///   g: signal at the pooled positions, planes * pooled_size values.
///   switches: from max_pool2d, planes * pooled_size values in [-1, h * w).
///   out: output, planes * h * w values; must not overlap g or switches.
///   planes, pooled_size, h, w: N * C, out.h * out.w of the pooling, and the input plane size.
///   num_threads: as in max_pool2d.
/// Throws std::invalid_argument for negative counts, a null buffer or a switch out of range (out
/// is then partly written).
void max_unpool2d(const float* g, const std::int64_t* switches, float* out, std::int64_t planes,
                  std::int64_t pooled_size, std::int64_t h, std::int64_t w, int num_threads = 0);

}  // namespace cnnviz
