// CPU kernels of the ReLU-family backward (see cnnviz/relu.hpp): a branch-free elementwise loop
// per mode, which GCC and Clang auto-vectorize at -O3, split across threads for large buffers.
#include "cnnviz/relu.hpp"

#include <stdexcept>
#include <string>

#include "cnnviz/detail/relu_math.hpp"
#include "parallel.hpp"

namespace cnnviz {

namespace {

constexpr const char* kModeNames[] = {"gradient", "guided", "deconvnet"};

template <ReluMode M>
void relu_chunk(const float* x, const float* g, float* out, std::int64_t begin, std::int64_t end,
                float slope) {
  for (std::int64_t i = begin; i < end; ++i) {
    // Deconvnet never reads x (it may be null): the condition is a compile-time constant.
    const float xi = M == ReluMode::deconvnet ? 0.f : x[i];
    out[i] = detail::relu_backward_one<M>(xi, g[i], slope);
  }
}

template <ReluMode M>
void clip_chunk(const float* x, const float* g, float* out, std::int64_t begin, std::int64_t end,
                float lo, float hi) {
  for (std::int64_t i = begin; i < end; ++i) {
    const float xi = M == ReluMode::deconvnet ? 0.f : x[i];
    out[i] = detail::clip_backward_one<M>(xi, g[i], lo, hi);
  }
}

}  // namespace

ReluMode parse_relu_mode(std::string_view name) {
  for (int i = 0; i < 3; ++i) {
    if (name == kModeNames[i]) return static_cast<ReluMode>(i);
  }
  throw std::invalid_argument("unknown ReLU mode '" + std::string(name) +
                              "'; expected one of: gradient, guided, deconvnet");
}

const char* relu_mode_name(ReluMode mode) {
  const int i = static_cast<int>(mode);
  if (i < 0 || i >= 3) {
    throw std::invalid_argument("cnnviz: invalid ReluMode value " + std::to_string(i));
  }
  return kModeNames[i];
}

int default_num_threads() { return cpu::default_threads(cpu::Work::memory); }

int default_compute_threads() { return cpu::default_threads(cpu::Work::compute); }

void relu_backward(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                   float negative_slope, int num_threads) {
  detail::check_relu_args("relu_backward", x, g, out, n, mode);
  detail::visit_relu_mode(mode, [&](auto m) {
    cpu::parallel_for(n, num_threads, [&](std::int64_t begin, std::int64_t end) {
      relu_chunk<decltype(m)::value>(x, g, out, begin, end, negative_slope);
    });
  });
}

void relu_backward_clip(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                        float lo, float hi, int num_threads) {
  detail::check_relu_args("relu_backward_clip", x, g, out, n, mode);
  detail::visit_relu_mode(mode, [&](auto m) {
    cpu::parallel_for(n, num_threads, [&](std::int64_t begin, std::int64_t end) {
      clip_chunk<decltype(m)::value>(x, g, out, begin, end, lo, hi);
    });
  });
}

}  // namespace cnnviz
