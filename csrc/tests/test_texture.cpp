// C++ tests of the Efros-Leung neighbourhood search against plain scalar loops (double
// accumulation), on one and several threads, with odd sizes, 1 / 2 / 3 channels, rows longer than
// the kernel's segment, batch 1 and batch > 1, the (1 + epsilon) pick, and bad arguments.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "cnnviz/texture.hpp"

namespace {

using cnnviz::TextureMatch;
using cnnviz::test::random_values;
using cnnviz::test::throws_invalid_argument;

/// The definition of texture_distances, in double.
std::vector<double> reference_distances(const std::vector<float>& sample, std::int64_t c,
                                        std::int64_t h, std::int64_t w,
                                        const std::vector<float>& queries,
                                        const std::vector<float>& weights, std::int64_t batch,
                                        std::int64_t kh, std::int64_t kw) {
  const std::int64_t ph = h - kh + 1, pw = w - kw + 1, taps = kh * kw;
  std::vector<double> out(static_cast<std::size_t>(batch * ph * pw));
  for (std::int64_t b = 0; b < batch; ++b) {
    double total = 0.0;
    for (std::int64_t t = 0; t < taps; ++t) total += weights[b * taps + t];
    for (std::int64_t y = 0; y < ph; ++y) {
      for (std::int64_t x = 0; x < pw; ++x) {
        double sum = 0.0;
        for (std::int64_t i = 0; i < kh; ++i) {
          for (std::int64_t j = 0; j < kw; ++j) {
            const double wt = weights[b * taps + i * kw + j];
            if (wt == 0.0) continue;
            for (std::int64_t ch = 0; ch < c; ++ch) {
              const double d = static_cast<double>(sample[(ch * h + y + i) * w + x + j]) -
                               queries[(b * c + ch) * taps + i * kw + j];
              sum += wt * d * d;
            }
          }
        }
        out[(b * ph + y) * pw + x] = sum / total;
      }
    }
  }
  return out;
}

/// Gaussian weights times a random known-pixel mask (about half known, the centre unknown, at
/// least one tap known), the way the synthesis loop builds them.
std::vector<float> masked_weights(std::int64_t batch, std::int64_t kh, std::int64_t kw,
                                  unsigned seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution known(0.5);
  const double sigma = static_cast<double>(std::max(kh, kw)) / 6.4;
  std::vector<float> out(static_cast<std::size_t>(batch * kh * kw));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t i = 0; i < kh; ++i) {
      for (std::int64_t j = 0; j < kw; ++j) {
        const double dy = static_cast<double>(i - kh / 2), dx = static_cast<double>(j - kw / 2);
        const double g = std::exp(-(dy * dy + dx * dx) / (2 * sigma * sigma));
        const bool centre = i == kh / 2 && j == kw / 2;
        out[(b * kh + i) * kw + j] = !centre && known(rng) ? static_cast<float>(g) : 0.f;
      }
    }
    out[b * kh * kw] = 0.25f;  // tap (0, 0) always known
  }
  return out;
}

void check_distances(std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t kh,
                     std::int64_t kw, std::int64_t batch, unsigned seed) {
  const std::vector<float> sample = random_values(c * h * w, seed);
  std::vector<float> queries = random_values(batch * c * kh * kw, seed + 1);
  const std::vector<float> weights = masked_weights(batch, kh, kw, seed + 2);
  // Unknown taps may hold anything: NaN there must not leak into the distances.
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t t = 0; t < kh * kw; ++t) {
      if (weights[b * kh * kw + t] == 0.f) {
        queries[(b * c) * kh * kw + t] = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
  const std::vector<double> want =
      reference_distances(sample, c, h, w, queries, weights, batch, kh, kw);
  for (int threads : {1, 2, 3}) {
    std::vector<float> got(want.size(), -1.f);
    cnnviz::texture_distances(sample.data(), c, h, w, queries.data(), weights.data(), batch, kh, kw,
                              got.data(), threads);
    int bad = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      bad += !(std::abs(got[i] - want[i]) <= 1e-5 * (1.0 + std::abs(want[i])));
    }
    CHECK(bad == 0);
  }
}

void test_distances() {
  check_distances(3, 13, 17, 5, 3, 3, 10);    // colour, odd non-square window, batch 3
  check_distances(1, 9, 11, 3, 5, 1, 20);     // grey, batch 1
  check_distances(2, 8, 8, 1, 1, 2, 30);      // generic channel count, 1 x 1 window
  check_distances(3, 7, 300, 3, 3, 2, 40);    // rows longer than one accumulator segment
  check_distances(3, 21, 21, 11, 11, 1, 50);  // the synthesis window size, one candidate row each
  check_distances(3, 11, 11, 11, 11, 2, 60);  // window as large as the sample: one candidate
}

void test_select() {
  const std::vector<float> d = {3.f, 1.f, 1.05f, 1.f, 2.f};
  TextureMatch m = cnnviz::texture_select(d.data(), 5, 0.f, 0.0);
  CHECK(m.index == 1 && m.candidates == 2 && m.best == 1.f && m.distance == 1.f);
  m = cnnviz::texture_select(d.data(), 5, 0.f, 0.99);
  CHECK(m.index == 3 && m.candidates == 2);
  m = cnnviz::texture_select(d.data(), 5, 0.1f, 0.5);  // candidates 1, 2, 3: k = 1
  CHECK(m.index == 2 && m.candidates == 3 && m.distance == 1.05f && m.best == 1.f);
  m = cnnviz::texture_select(d.data(), 5, 0.1f, 1.0);  // u = 1 picks the last candidate
  CHECK(m.index == 3);
  m = cnnviz::texture_select(d.data(), 5, 5.f, 0.999);  // everything within 6x: the last one
  CHECK(m.index == 4 && m.candidates == 5);
  const std::vector<float> zeros = {0.f, 0.5f, 0.f};
  m = cnnviz::texture_select(zeros.data(), 3, 10.f, 0.7);  // best 0: only exact zeros
  CHECK(m.index == 2 && m.candidates == 2 && m.distance == 0.f);
}

void test_match_finds_exact_copy() {
  const std::int64_t c = 3, h = 19, w = 23, k = 5, pw = w - k + 1;
  const std::vector<float> sample = random_values(c * h * w, 70);
  const std::vector<std::int64_t> ys = {0, 7, 14}, xs = {18, 3, 0};
  const std::int64_t batch = static_cast<std::int64_t>(ys.size());
  std::vector<float> queries(static_cast<std::size_t>(batch * c * k * k));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t ch = 0; ch < c; ++ch) {
      for (std::int64_t i = 0; i < k; ++i) {
        for (std::int64_t j = 0; j < k; ++j) {
          queries[((b * c + ch) * k + i) * k + j] = sample[(ch * h + ys[b] + i) * w + xs[b] + j];
        }
      }
    }
  }
  const std::vector<float> weights = masked_weights(batch, k, k, 71);
  const std::vector<double> uniforms = {0.3, 0.9, 0.0};
  for (int threads : {1, 2}) {
    std::vector<TextureMatch> out(static_cast<std::size_t>(batch));
    cnnviz::texture_match(sample.data(), c, h, w, queries.data(), weights.data(), batch, k, k, 0.f,
                          uniforms.data(), out.data(), threads);
    for (std::int64_t b = 0; b < batch; ++b) {
      CHECK(out[b].index == ys[b] * pw + xs[b]);
      CHECK(out[b].best == 0.f && out[b].distance == 0.f && out[b].candidates == 1);
    }
  }
  // batch 0 is a no-op, even with null buffers
  cnnviz::texture_match(sample.data(), c, h, w, nullptr, nullptr, 0, k, k, 0.f, nullptr, nullptr);
}

void test_bad_arguments() {
  const std::vector<float> sample = random_values(3 * 8 * 8, 80);
  const std::vector<float> query = random_values(3 * 3 * 3, 81);
  std::vector<float> weights(9, 1.f), dist(36);
  auto run = [&](std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw,
                 const std::vector<float>& wt, int threads) {
    cnnviz::texture_distances(sample.data(), c, h, w, query.data(), wt.data(), 1, kh, kw,
                              dist.data(), threads);
  };
  CHECK(!throws_invalid_argument([&] { run(3, 8, 8, 3, 3, weights, 0); }));
  CHECK(throws_invalid_argument([&] { run(0, 8, 8, 3, 3, weights, 0); }));
  CHECK(throws_invalid_argument([&] { run(3, 8, 8, 0, 3, weights, 0); }));
  CHECK(throws_invalid_argument([&] { run(3, 2, 8, 3, 3, weights, 0); }));  // window > sample
  CHECK(throws_invalid_argument([&] { run(3, 8, 8, 3, 3, weights, -1); }));
  std::vector<float> zero(9, 0.f), negative(9, 1.f), nan(9, 1.f);
  negative[4] = -0.5f;
  nan[2] = std::numeric_limits<float>::quiet_NaN();
  CHECK(throws_invalid_argument([&] { run(3, 8, 8, 3, 3, zero, 0); }));
  CHECK(throws_invalid_argument([&] { run(3, 8, 8, 3, 3, negative, 0); }));
  CHECK(throws_invalid_argument([&] { run(3, 8, 8, 3, 3, nan, 0); }));
  CHECK(throws_invalid_argument([&] {
    cnnviz::texture_distances(nullptr, 3, 8, 8, query.data(), weights.data(), 1, 3, 3, dist.data());
  }));
  const std::vector<float> d = {1.f, 2.f}, with_nan = {1.f, std::nanf("")};
  CHECK(throws_invalid_argument([&] { cnnviz::texture_select(d.data(), 0, 0.f, 0.5); }));
  CHECK(throws_invalid_argument([&] { cnnviz::texture_select(d.data(), 2, -0.1f, 0.5); }));
  CHECK(throws_invalid_argument([&] { cnnviz::texture_select(d.data(), 2, 0.f, 1.5); }));
  CHECK(throws_invalid_argument([&] { cnnviz::texture_select(d.data(), 2, 0.f, -0.1); }));
  CHECK(throws_invalid_argument([&] { cnnviz::texture_select(with_nan.data(), 2, 0.f, 0.5); }));
}

}  // namespace

int main() {
  test_distances();
  test_select();
  test_match_finds_exact_copy();
  test_bad_arguments();
  std::printf("texture kernel: %s\n", cnnviz::texture_kernel_name());
  return cnnviz::test::finish("texture");
}
