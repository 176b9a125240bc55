// Argument checks of the Gram kernels, shared by the CPU and CUDA entry points.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace cnnviz::detail {

inline void check_gram_args(const char* fn, const float* features, const float* grad,
                            bool needs_grad, const float* out, std::int64_t batch, std::int64_t c,
                            std::int64_t n, float norm) {
  const std::string where = std::string("cnnviz::") + fn + ": ";
  if (batch < 0 || c < 0 || n < 0) {
    throw std::invalid_argument(where + "sizes must be >= 0, got batch " + std::to_string(batch) +
                                ", c " + std::to_string(c) + ", n " + std::to_string(n));
  }
  if (!(std::isfinite(norm) && norm != 0.f)) {
    throw std::invalid_argument(where + "norm must be finite and nonzero, got " +
                                std::to_string(norm));
  }
  if (batch * c == 0) return;
  if (out == nullptr || (n > 0 && features == nullptr) || (needs_grad && grad == nullptr)) {
    throw std::invalid_argument(where + "null buffer");
  }
}

}  // namespace cnnviz::detail
