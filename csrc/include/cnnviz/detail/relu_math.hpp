// Per-element math of the ReLU-family backward kernels, shared by the CPU and CUDA builds.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cnnviz/detail/config.hpp"
#include "cnnviz/relu.hpp"

namespace cnnviz::detail {

/// Backward of one element given the forward gate. `pass` says the forward op let x through (local
/// slope 1); otherwise the local slope is `slope` (0 for ReLU and Clip, alpha for LeakyReLU).
/// Written as selects rather than branches so that CPU loops auto-vectorize; a blocked element is
/// an exact 0 when slope is 0, even if g is inf or NaN.
template <ReluMode M>
CNNVIZ_HD inline float gated_backward(bool pass, float g, float slope) {
  if constexpr (M == ReluMode::deconvnet) {
    return g > 0.f ? g : 0.f;
  } else {
    const float local = pass ? g : (slope != 0.f ? slope * g : 0.f);
    if constexpr (M == ReluMode::guided) {
      return g > 0.f ? local : 0.f;
    } else {
      return local;
    }
  }
}

/// ReLU / LeakyReLU: the forward gate is x > 0.
template <ReluMode M>
CNNVIZ_HD inline float relu_backward_one(float x, float g, float slope) {
  return gated_backward<M>(x > 0.f, g, slope);
}

/// Clip: the forward gate is lo < x < hi (the gradient is 0 at the bounds, as in PyTorch).
template <ReluMode M>
CNNVIZ_HD inline float clip_backward_one(float x, float g, float lo, float hi) {
  return gated_backward<M>(lo < x && x < hi, g, 0.f);
}

/// Calls fn(std::integral_constant<ReluMode, M>{}) for the runtime `mode`, so that each kernel is
/// instantiated once per mode and its inner loop carries no mode test.
template <class Fn>
void visit_relu_mode(ReluMode mode, Fn&& fn) {
  using M = ReluMode;
  switch (mode) {
    case M::gradient:
      return fn(std::integral_constant<M, M::gradient>{});
    case M::guided:
      return fn(std::integral_constant<M, M::guided>{});
    case M::deconvnet:
      return fn(std::integral_constant<M, M::deconvnet>{});
  }
  throw std::invalid_argument("cnnviz: invalid ReluMode value " +
                              std::to_string(static_cast<int>(mode)));
}

/// Host-side argument checks shared by the CPU and CUDA entry points; `fn` names the caller in the
/// message. Also rejects an invalid mode value.
inline void check_relu_args(const char* fn, const float* x, const float* g, const float* out,
                            std::int64_t n, ReluMode mode) {
  const std::string where = std::string("cnnviz::") + fn + ": ";
  if (n < 0) throw std::invalid_argument(where + "n must be >= 0, got " + std::to_string(n));
  static_cast<void>(relu_mode_name(mode));  // throws for a value outside the enum
  if (n > 0 && (g == nullptr || out == nullptr || (mode != ReluMode::deconvnet && x == nullptr))) {
    throw std::invalid_argument(where + "null buffer (x may be null only in deconvnet mode)");
  }
}

}  // namespace cnnviz::detail
