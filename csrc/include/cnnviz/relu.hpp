// Backward pass of ReLU-like ops (ReLU, LeakyReLU, Clip/ReLU6) with the three modes used to
// visualize CNNs. All arrays are plain contiguous float32 buffers of `n` elements in host memory;
// the CUDA twins are in cnnviz/cuda.hpp.
#pragma once

#include <cstdint>
#include <string_view>

namespace cnnviz {

/// How a ReLU-like op passes the backward signal `g` (d loss / d output) back to its input `x`.
enum class ReluMode {
  /// The true gradient: g * f'(x).
  gradient,
  /// Guided backpropagation (Springenberg et al., 2015): the true gradient where g > 0, else 0.
  guided,
  /// Deconvnet (Zeiler & Fergus, 2014): the ReLU of g, g * [g > 0]; the forward input is unused.
  deconvnet,
};

/// Parses "gradient", "guided" or "deconvnet".
/// Throws std::invalid_argument naming the valid modes for any other string.
ReluMode parse_relu_mode(std::string_view name);

/// The name of `mode`, as accepted by parse_relu_mode.
/// Throws std::invalid_argument for a value outside the enum.
const char* relu_mode_name(ReluMode mode);

/// Number of threads used when a memory-bound kernel (everything but the Gram products) is
/// called with num_threads = 0: the hardware concurrency, i.e. all logical CPUs (at least 1).
int default_num_threads();

/// Number of threads used when a compute-bound kernel (gram, gram_backward) is called with
/// num_threads = 0: the physical cores this process may run on, from the Linux sysfs CPU
/// topology (SMT siblings share one core's FMA units), or default_num_threads() where the
/// topology cannot be read.
int default_compute_threads();

/// Backward of ReLU / LeakyReLU, y = x > 0 ? x : negative_slope * x, for one flat buffer.
///
/// out[i] =  gradient:  x[i] > 0 ? g[i] : negative_slope * g[i]
///           guided:    the gradient value where g[i] > 0, else 0
///           deconvnet: g[i] > 0 ? g[i] : 0   (x and negative_slope unused; x may be null)
/// A blocked element is exactly 0 (also when g is inf or NaN) when negative_slope is 0.
///
/// Args:
///   x: forward input, n elements (may be null in deconvnet mode).
///   g: gradient w.r.t. the forward output, n elements.
///   out: result, n elements; may be the same buffer as x or g (in place), must not otherwise
///     overlap them.
///   n: element count (>= 0).
///   mode: see ReluMode.
///   negative_slope: LeakyReLU alpha; 0 for ReLU.
///   num_threads: CPU threads to use, 0 = default_num_threads(); small buffers use fewer.
/// Throws std::invalid_argument for n < 0, num_threads < 0, a null buffer or an invalid mode.
void relu_backward(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                   float negative_slope = 0.f, int num_threads = 0);

/// Backward of Clip (ReLU6 is lo = 0, hi = 6): like relu_backward with the forward gate
/// [lo < x < hi] in place of [x > 0] and no negative slope (pass +-infinity for an open side).
/// Same arguments, aliasing rules and errors as relu_backward.
void relu_backward_clip(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                        float lo, float hi, int num_threads = 0);

}  // namespace cnnviz
