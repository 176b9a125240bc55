// C++ tests of the occlusion and crop batch builders and the Gram kernels against plain scalar loops (double
// accumulation for Gram), on one and several threads, with odd sizes, batch 1 and bad arguments.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "../cpu/parallel.hpp"  // the scheduler the Gram kernels run on (private header)
#include "check.hpp"
#include "cnnviz/gram.hpp"
#include "cnnviz/occlusion.hpp"

namespace {

using cnnviz::OcclusionFill;
using cnnviz::test::random_values;
using cnnviz::test::throws_invalid_argument;

void test_occlusion() {
  const std::int64_t c = 3, h = 37, w = 29, wh = 9, ww = 7;
  // Inside, clipped on every side, wholly outside, and covering the whole image.
  const std::vector<std::int64_t> pos = {0,   0, 5,  11, -4, -3, 33, 25,
                                         -20, 4, 40, 40, 30, -6, -1, -1};
  const std::int64_t count = static_cast<std::int64_t>(pos.size()) / 2;
  const std::vector<float> image = random_values(c * h * w, 1);
  const std::vector<float> fill_image = random_values(c * h * w, 2);
  const std::vector<float> per_channel = {0.5f, -1.f, 2.f};
  const float constant = 0.25f;
  for (OcclusionFill kind :
       {OcclusionFill::constant, OcclusionFill::per_channel, OcclusionFill::image}) {
    const float* fill = kind == OcclusionFill::constant      ? &constant
                        : kind == OcclusionFill::per_channel ? per_channel.data()
                                                             : fill_image.data();
    for (int threads : {1, 2, 3}) {
      std::vector<float> out(static_cast<std::size_t>(count * c * h * w), -99.f);
      cnnviz::occlusion_batch(image.data(), c, h, w, pos.data(), count, wh, ww, fill, kind,
                              out.data(), threads);
      int bad = 0;
      for (std::int64_t p = 0; p < count; ++p) {
        for (std::int64_t ch = 0; ch < c; ++ch) {
          for (std::int64_t y = 0; y < h; ++y) {
            for (std::int64_t x = 0; x < w; ++x) {
              const std::int64_t at = (ch * h + y) * w + x;
              const bool in = y >= pos[2 * p] && y < pos[2 * p] + wh && x >= pos[2 * p + 1] &&
                              x < pos[2 * p + 1] + ww;
              const float want = !in                                  ? image[at]
                                 : kind == OcclusionFill::constant    ? constant
                                 : kind == OcclusionFill::per_channel ? per_channel[ch]
                                                                      : fill_image[at];
              bad += out[p * c * h * w + at] != want;
            }
          }
        }
      }
      CHECK(bad == 0);
    }
  }
  // A batch large enough for the streaming-store path (16 MiB) with odd, unaligned planes.
  const std::int64_t big_c = 3, big_h = 101, big_w = 103, big_count = 140;
  const std::vector<float> big = random_values(big_c * big_h * big_w, 3);
  std::vector<std::int64_t> big_pos;
  for (std::int64_t p = 0; p < big_count; ++p) {
    big_pos.push_back(p % 17 * 7 - 5);
    big_pos.push_back(p * 13 % 101 - 3);
  }
  std::vector<float> out(static_cast<std::size_t>(big_count * big_c * big_h * big_w));
  cnnviz::occlusion_batch(big.data(), big_c, big_h, big_w, big_pos.data(), big_count, 15, 16,
                          per_channel.data(), OcclusionFill::per_channel, out.data(), 2);
  int bad = 0;
  for (std::int64_t p = 0; p < big_count; ++p) {
    for (std::int64_t ch = 0; ch < big_c; ++ch) {
      for (std::int64_t y = 0; y < big_h; ++y) {
        for (std::int64_t x = 0; x < big_w; ++x) {
          const std::int64_t at = (ch * big_h + y) * big_w + x;
          const bool in = y >= big_pos[2 * p] && y < big_pos[2 * p] + 15 &&
                          x >= big_pos[2 * p + 1] && x < big_pos[2 * p + 1] + 16;
          bad += out[p * big_c * big_h * big_w + at] != (in ? per_channel[ch] : big[at]);
        }
      }
    }
  }
  CHECK(bad == 0);

  float dummy = 0.f;
  std::int64_t dummy_pos[2] = {0, 0};
  CHECK(throws_invalid_argument([&] {
    cnnviz::occlusion_batch(&dummy, 1, 1, 1, dummy_pos, 1, -1, 1, &dummy, OcclusionFill::constant,
                            &dummy);
  }));
  CHECK(throws_invalid_argument([&] {
    cnnviz::occlusion_batch(&dummy, 1, 1, 1, dummy_pos, 1, 1, 1, nullptr, OcclusionFill::constant,
                            &dummy);
  }));
  CHECK(throws_invalid_argument([&] {
    cnnviz::occlusion_batch(&dummy, 1, 1, 1, dummy_pos, 1, 1, 1, &dummy,
                            static_cast<OcclusionFill>(7), &dummy);
  }));
}

bool close(double got, double want, double scale) {
  return std::fabs(got - want) <= 1e-4 * scale + 1e-6;
}

/// crop_batch against a scalar loop: crops at every corner of the source, patches inside,
/// clipped on every side and wholly outside, no patch; then bad arguments.
void test_crop_batch() {
  const std::int64_t c = 3, h = 13, w = 11, ch = 5, cw = 4, ph = 3, pw = 6;
  const std::vector<std::int64_t> corners = {0, 0, 8, 7, 4, 3, 0, 7, 8, 0};
  const std::vector<std::int64_t> offsets = {1, -1, -2, 2, 4, -5, 9, 0, 0, 0};
  const std::int64_t count = static_cast<std::int64_t>(corners.size()) / 2;
  const std::vector<float> source = random_values(c * h * w, 3);
  const std::vector<float> patch = random_values(count * c * ph * pw, 4);
  for (bool with_patch : {true, false}) {
    for (int threads : {1, 2, 3}) {
      std::vector<float> out(static_cast<std::size_t>(count * c * ch * cw), -99.f);
      cnnviz::crop_batch(source.data(), c, h, w, corners.data(), count, ch, cw,
                         with_patch ? patch.data() : nullptr, ph, pw,
                         with_patch ? offsets.data() : nullptr, out.data(), threads);
      int bad = 0;
      for (std::int64_t b = 0; b < count; ++b) {
        for (std::int64_t k = 0; k < c; ++k) {
          for (std::int64_t i = 0; i < ch; ++i) {
            for (std::int64_t j = 0; j < cw; ++j) {
              const std::int64_t pi = i - offsets[2 * b], pj = j - offsets[2 * b + 1];
              const bool patched = with_patch && pi >= 0 && pi < ph && pj >= 0 && pj < pw;
              const float want =
                  patched ? patch[((b * c + k) * ph + pi) * pw + pj]
                          : source[(k * h + corners[2 * b] + i) * w + corners[2 * b + 1] + j];
              bad += out[((b * c + k) * ch + i) * cw + j] != want;
            }
          }
        }
      }
      CHECK(bad == 0);
    }
  }
  float dummy = 0.f;
  const std::int64_t outside[2] = {9, 0};
  const std::int64_t zero[2] = {0, 0};
  CHECK(throws_invalid_argument([&] {
    cnnviz::crop_batch(source.data(), c, h, w, outside, 1, ch, cw, nullptr, 0, 0, nullptr, &dummy);
  }));
  CHECK(throws_invalid_argument([&] {
    cnnviz::crop_batch(source.data(), c, h, w, zero, 1, -1, cw, nullptr, 0, 0, nullptr, &dummy);
  }));
  CHECK(throws_invalid_argument([&] {
    cnnviz::crop_batch(source.data(), c, h, w, zero, 1, ch, cw, patch.data(), ph, pw, nullptr,
                       &dummy);
  }));
}

void test_gram() {
  struct Case {
    std::int64_t batch, c, n;
  };
  // Batch 1, odd c and n, c below and above the tile sizes, n across k blocks and threads.
  const Case cases[] = {{1, 1, 1},    {1, 3, 5},     {2, 13, 77},  {1, 17, 300},
                        {3, 33, 513}, {1, 70, 1000}, {2, 129, 600}};
  for (const Case& k : cases) {
    const std::vector<float> f = random_values(k.batch * k.c * k.n, 11);
    const std::vector<float> dg = random_values(k.batch * k.c * k.c, 12);
    const float norm = static_cast<float>(k.c * k.n);
    for (int threads : {1, 2, 3}) {
      std::vector<float> g(static_cast<std::size_t>(k.batch * k.c * k.c), -1.f);
      cnnviz::gram(f.data(), g.data(), k.batch, k.c, k.n, norm, threads);
      std::vector<float> df(static_cast<std::size_t>(k.batch * k.c * k.n), -1.f);
      cnnviz::gram_backward(f.data(), dg.data(), df.data(), k.batch, k.c, k.n, norm, threads);
      int bad = 0;
      for (std::int64_t b = 0; b < k.batch; ++b) {
        const float* fb = f.data() + b * k.c * k.n;
        const float* dgb = dg.data() + b * k.c * k.c;
        for (std::int64_t i = 0; i < k.c; ++i) {
          for (std::int64_t j = 0; j < k.c; ++j) {
            double sum = 0, scale = 0;
            for (std::int64_t t = 0; t < k.n; ++t) {
              sum += double(fb[i * k.n + t]) * fb[j * k.n + t];
              scale += std::fabs(double(fb[i * k.n + t]) * fb[j * k.n + t]);
            }
            const float got = g[static_cast<std::size_t>((b * k.c + i) * k.c + j)];
            bad += !close(got, sum / norm, scale / norm);
            bad += got != g[static_cast<std::size_t>((b * k.c + j) * k.c + i)];  // symmetric
          }
          for (std::int64_t t = 0; t < k.n; ++t) {
            double sum = 0, scale = 0;
            for (std::int64_t j = 0; j < k.c; ++j) {
              const double s = double(dgb[i * k.c + j]) + dgb[j * k.c + i];
              sum += s * fb[j * k.n + t];
              scale += std::fabs(s * fb[j * k.n + t]);
            }
            bad += !close(df[static_cast<std::size_t>((b * k.c + i) * k.n + t)], sum / norm,
                          scale / norm);
          }
        }
      }
      if (bad)
        std::fprintf(stderr, "gram case %lld %lld %lld threads %d: %d bad\n", (long long)k.batch,
                     (long long)k.c, (long long)k.n, threads, bad);
      CHECK(bad == 0);
    }
  }
  float x = 1.f;
  CHECK(throws_invalid_argument([&] { cnnviz::gram(&x, &x, 1, 1, 1, 0.f); }));
  CHECK(throws_invalid_argument([&] { cnnviz::gram(&x, &x, -1, 1, 1, 1.f); }));
  CHECK(throws_invalid_argument([&] { cnnviz::gram(nullptr, &x, 1, 1, 1, 1.f); }));
  CHECK(throws_invalid_argument([&] { cnnviz::gram_backward(&x, nullptr, &x, 1, 1, 1, 1.f); }));
  std::printf("gram kernel: %s\n", cnnviz::gram_kernel_name());
}

/// parallel_dynamic returns without waiting for helper threads that take no item: every item runs
/// exactly once, per-worker state is made once per worker that runs items, an exception reaches
/// the caller after every item is done (the rest skipped), and a late helper finding no items
/// left touches nothing of a call that has returned. Repeated, more workers than cores, so that
/// helpers start late and calls overlap them.
void test_parallel_dynamic() {
  for (int round = 0; round < 300; ++round) {
    const std::int64_t count = 1 + round % 37;
    std::vector<std::atomic<int>> runs(static_cast<std::size_t>(count));
    std::vector<std::atomic<int>> states(4);
    cnnviz::cpu::parallel_dynamic(
        count, 4,
        [&](int w) {
          states[static_cast<std::size_t>(w)].fetch_add(1);
          return w;
        },
        [&](std::int64_t item, int w, int& state) {
          CHECK(state == w);
          runs[static_cast<std::size_t>(item)].fetch_add(1);
        });
    for (auto& r : runs) CHECK(r.load() == 1);
    for (auto& st : states) CHECK(st.load() <= 1);
    std::atomic<int> ran{0};
    bool thrown = false;
    try {
      cnnviz::cpu::parallel_dynamic(
          count, 3, [](int) { return 0; },
          [&](std::int64_t item, int, int&) {
            ran.fetch_add(1);
            if (item == count / 2) throw std::runtime_error("item failed");
          });
    } catch (const std::runtime_error&) {
      thrown = true;
    }
    CHECK(thrown);
    CHECK(ran.load() >= 1 && ran.load() <= count);
  }
}

}  // namespace

int main() {
  test_occlusion();
  test_crop_batch();
  test_gram();
  test_parallel_dynamic();
  return cnnviz::test::finish("cnnviz occlusion and Gram");
}
