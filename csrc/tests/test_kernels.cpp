// C++ tests of the ReLU-family kernels of cnnviz::kernels: the worked example and random buffers
// against a scalar loop written independently of the kernels' shared math, in every mode, on one
// and several threads.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "cnnviz/relu.hpp"

namespace {

using cnnviz::ReluMode;
using cnnviz::test::throws_invalid_argument;
constexpr ReluMode kModes[] = {ReluMode::gradient, ReluMode::guided, ReluMode::deconvnet};
constexpr int kThreads[] = {1, 2, 3};
// 1 element, odd sizes, and sizes above the per-thread threshold (1 << 16) so that threads split.
constexpr std::int64_t kSizes[] = {1, 7, 1001, 3 * (1 << 16) + 5};

/// Scalar reference: the forward gate `pass`, local slope `slope` when blocked.
float reference(ReluMode mode, bool pass, float g, float slope) {
  switch (mode) {
    case ReluMode::gradient:
      if (pass) return g;
      return slope == 0.f ? 0.f : slope * g;
    case ReluMode::guided:
      if (g <= 0.f) return 0.f;
      if (pass) return g;
      return slope == 0.f ? 0.f : slope * g;
    case ReluMode::deconvnet:
      return g > 0.f ? g : 0.f;
  }
  return std::numeric_limits<float>::quiet_NaN();
}

/// Random values in [-8, 8] with exact zeros and the Clip bounds 0 and 6 mixed in.
std::vector<float> random_buffer(std::int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-8.f, 8.f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    v[i] = i % 11 == 3 ? 0.f : (i % 13 == 5 ? 6.f : dist(rng));
  }
  return v;
}

void test_worked_example() {
  const std::vector<float> x = {1, -1, 5, 2, -5, -7, -3, 2, 4};
  const std::vector<float> g = {-2, 3, -1, 6, -3, 1, 2, -1, 3};
  const std::vector<float> expected[] = {
      {-2, 0, -1, 6, 0, 0, 0, -1, 3},  // gradient
      {0, 0, 0, 6, 0, 0, 0, 0, 3},     // guided
      {0, 3, 0, 6, 0, 1, 2, 0, 3},     // deconvnet
  };
  for (int m = 0; m < 3; ++m) {
    for (int threads : kThreads) {
      std::vector<float> out(9, -99.f);
      cnnviz::relu_backward(x.data(), g.data(), out.data(), 9, kModes[m], 0.f, threads);
      CHECK(out == expected[m]);
    }
  }
}

void test_random_relu() {
  std::mt19937 rng(1234);
  for (std::int64_t n : kSizes) {
    const std::vector<float> x = random_buffer(n, rng);
    const std::vector<float> g = random_buffer(n, rng);
    for (ReluMode mode : kModes) {
      for (float slope : {0.f, 0.01f, -0.5f}) {
        for (int threads : kThreads) {
          std::vector<float> out(static_cast<std::size_t>(n), -99.f);
          cnnviz::relu_backward(x.data(), g.data(), out.data(), n, mode, slope, threads);
          std::int64_t bad = 0;
          for (std::int64_t i = 0; i < n; ++i)
            bad += out[i] != reference(mode, x[i] > 0.f, g[i], slope);
          CHECK(bad == 0);
        }
      }
    }
  }
}

void test_random_clip() {
  std::mt19937 rng(99);
  for (std::int64_t n : kSizes) {
    const std::vector<float> x = random_buffer(n, rng);
    const std::vector<float> g = random_buffer(n, rng);
    for (ReluMode mode : kModes) {
      for (int threads : kThreads) {
        std::vector<float> out(static_cast<std::size_t>(n), -99.f);
        cnnviz::relu_backward_clip(x.data(), g.data(), out.data(), n, mode, 0.f, 6.f, threads);
        std::int64_t bad = 0;
        for (std::int64_t i = 0; i < n; ++i) {
          bad += out[i] != reference(mode, 0.f < x[i] && x[i] < 6.f, g[i], 0.f);
        }
        CHECK(bad == 0);
      }
    }
  }
}

void test_in_place_and_null_x() {
  std::mt19937 rng(7);
  const std::int64_t n = 1001;
  const std::vector<float> x = random_buffer(n, rng);
  const std::vector<float> g = random_buffer(n, rng);
  std::vector<float> expected(n), inplace = g;
  cnnviz::relu_backward(x.data(), g.data(), expected.data(), n, ReluMode::guided);
  cnnviz::relu_backward(x.data(), inplace.data(), inplace.data(), n, ReluMode::guided);
  CHECK(inplace == expected);

  std::vector<float> deconv(n);
  cnnviz::relu_backward(nullptr, g.data(), deconv.data(), n, ReluMode::deconvnet);
  for (std::int64_t i = 0; i < n; ++i) CHECK(deconv[i] == (g[i] > 0.f ? g[i] : 0.f));
}

void test_blocked_is_exact_zero() {
  const float inf = std::numeric_limits<float>::infinity();
  const float x[] = {-1.f, -1.f};
  const float g[] = {inf, std::numeric_limits<float>::quiet_NaN()};
  float out[] = {-99.f, -99.f};
  cnnviz::relu_backward(x, g, out, 2, ReluMode::gradient);
  CHECK(out[0] == 0.f && out[1] == 0.f);
}

void test_errors() {
  float buf[4] = {};
  CHECK(throws_invalid_argument(
      [&] { cnnviz::relu_backward(buf, buf, buf, -1, ReluMode::gradient); }));
  CHECK(throws_invalid_argument(
      [&] { cnnviz::relu_backward(nullptr, buf, buf, 4, ReluMode::gradient); }));
  CHECK(throws_invalid_argument(
      [&] { cnnviz::relu_backward(buf, nullptr, buf, 4, ReluMode::deconvnet); }));
  CHECK(throws_invalid_argument(
      [&] { cnnviz::relu_backward(buf, buf, buf, 4, ReluMode::gradient, 0.f, -1); }));
  CHECK(throws_invalid_argument(
      [&] { cnnviz::relu_backward(buf, buf, buf, 4, static_cast<ReluMode>(7)); }));
  CHECK(throws_invalid_argument(
      [&] { cnnviz::relu_backward_clip(buf, buf, nullptr, 4, ReluMode::guided, 0.f, 6.f); }));
  CHECK(throws_invalid_argument([] { cnnviz::parse_relu_mode("Guided"); }));
  cnnviz::relu_backward(nullptr, nullptr, nullptr, 0, ReluMode::gradient);  // empty is fine
}

void test_mode_names() {
  for (ReluMode mode : kModes) CHECK(cnnviz::parse_relu_mode(cnnviz::relu_mode_name(mode)) == mode);
  CHECK(std::string(cnnviz::relu_mode_name(ReluMode::deconvnet)) == "deconvnet");
  CHECK(cnnviz::default_num_threads() >= 1);
  CHECK(cnnviz::default_compute_threads() >= 1);
  CHECK(cnnviz::default_compute_threads() <= cnnviz::default_num_threads());
}

}  // namespace

int main() {
  test_worked_example();
  test_random_relu();
  test_random_clip();
  test_in_place_and_null_x();
  test_blocked_is_exact_zero();
  test_errors();
  test_mode_names();
  return cnnviz::test::finish("cnnviz ReLU kernel");
}
