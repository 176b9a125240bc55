// CPU kernels of the ReLU-family backward (see cnnviz/relu.hpp): a branch-free elementwise loop
// per mode, which GCC and Clang auto-vectorize at -O3, split across threads for large buffers;
// outputs >= 16 MiB are written through L1 blocks with streaming stores (stream.hpp).
#include "cnnviz/relu.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cnnviz/detail/relu_math.hpp"
#include "parallel.hpp"
#include "stream.hpp"

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

/// Runs chunk(out, begin, end) over [begin, end); for large outputs each block of kBlock values
/// goes to an L1 buffer first and is then streamed out (no read of the output lines before they
/// are written: 3 instead of 4 bytes of memory traffic per byte written, for 2 reads + 1 write).
template <class Chunk>
void run_chunks(float* out, std::int64_t begin, std::int64_t end, bool stream, Chunk&& chunk) {
  if (!stream) {
    chunk(out, begin, end);
    return;
  }
  constexpr std::int64_t kBlock = 2048;
  alignas(64) float buffer[kBlock];
  for (std::int64_t b = begin; b < end; b += kBlock) {
    const std::int64_t e = std::min(end, b + kBlock);
    chunk(buffer - b, b, e);  // writes buffer[0, e - b)
    cpu::stream_copy(out + b, buffer, sizeof(float) * static_cast<std::size_t>(e - b));
  }
  cpu::stream_fence();
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
  const bool stream = n * static_cast<std::int64_t>(sizeof(float)) >= cpu::kStreamBytes;
  detail::visit_relu_mode(mode, [&](auto m) {
    cpu::parallel_for(n, num_threads, [&](std::int64_t begin, std::int64_t end) {
      run_chunks(out, begin, end, stream, [&](float* o, std::int64_t b, std::int64_t e) {
        relu_chunk<decltype(m)::value>(x, g, o, b, e, negative_slope);
      });
    });
  });
}

void relu_backward_clip(const float* x, const float* g, float* out, std::int64_t n, ReluMode mode,
                        float lo, float hi, int num_threads) {
  detail::check_relu_args("relu_backward_clip", x, g, out, n, mode);
  const bool stream = n * static_cast<std::int64_t>(sizeof(float)) >= cpu::kStreamBytes;
  detail::visit_relu_mode(mode, [&](auto m) {
    cpu::parallel_for(n, num_threads, [&](std::int64_t begin, std::int64_t end) {
      run_chunks(out, begin, end, stream, [&](float* o, std::int64_t b, std::int64_t e) {
        clip_chunk<decltype(m)::value>(x, g, o, b, e, lo, hi);
      });
    });
  });
}

}  // namespace cnnviz
