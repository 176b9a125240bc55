// C++ tests of max pooling / unpooling and im2col / col2im against scalar loops written without
// the kernels' shared window math (every tap bounds-checked), on one and several threads.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "cnnviz/im2col.hpp"
#include "cnnviz/pool.hpp"

namespace {

using cnnviz::Extent2d;
using cnnviz::Window2d;
using cnnviz::test::random_values;
using cnnviz::test::throws_invalid_argument;

struct Case {
  std::int64_t n, c, h, w;
  Window2d win;
  bool ceil_mode;
};

// Odd sizes, batch 1, non-square, strides, asymmetric pads, dilation, ceil mode, a window fully
// in the padding, and one case large enough for the threads to split.
const Case kCases[] = {
    {1, 1, 5, 5, {2, 2, 2, 2, 0, 0, 0, 0, 1, 1}, false},
    {2, 3, 7, 9, {3, 3, 2, 2, 1, 1, 1, 1, 1, 1}, true},
    {1, 4, 13, 8, {3, 2, 2, 1, 1, 0, 2, 1, 1, 1}, false},
    {3, 2, 11, 12, {3, 3, 3, 3, 1, 1, 1, 1, 2, 2}, true},
    {1, 2, 4, 5, {2, 2, 2, 3, 6, 0, 1, 3, 2, 1}, true},
    {2, 16, 40, 37, {3, 3, 1, 1, 1, 1, 1, 1, 1, 1}, false},
};
constexpr int kThreads[] = {1, 2, 3};

/// Input coordinate of tap t at output position o along one axis.
std::int64_t tap_at(std::int64_t o, std::int64_t t, std::int64_t stride, std::int64_t pad,
                    std::int64_t dilation) {
  return o * stride - pad + t * dilation;
}

void reference_max_pool(const Case& k, const Extent2d& out, const std::vector<float>& x,
                        std::vector<float>& y, std::vector<std::int64_t>& s) {
  const Window2d& w = k.win;
  for (std::int64_t p = 0; p < k.n * k.c; ++p) {
    for (std::int64_t oh = 0; oh < out.h; ++oh) {
      for (std::int64_t ow = 0; ow < out.w; ++ow) {
        float best = -std::numeric_limits<float>::infinity();
        std::int64_t arg = -1;
        for (std::int64_t i = 0; i < w.kernel_h; ++i) {
          for (std::int64_t j = 0; j < w.kernel_w; ++j) {
            const std::int64_t ih = tap_at(oh, i, w.stride_h, w.pad_top, w.dilation_h);
            const std::int64_t iw = tap_at(ow, j, w.stride_w, w.pad_left, w.dilation_w);
            if (ih < 0 || ih >= k.h || iw < 0 || iw >= k.w) continue;
            const float v = x[(p * k.h + ih) * k.w + iw];
            if (arg == -1 || v > best) {
              best = v;
              arg = ih * k.w + iw;
            }
          }
        }
        const std::int64_t at = (p * out.h + oh) * out.w + ow;
        y[at] = best;
        s[at] = arg;
      }
    }
  }
}

void reference_im2col(const Case& k, const Extent2d& out, const std::vector<float>& x,
                      std::vector<float>& cols) {
  const Window2d& w = k.win;
  std::int64_t at = 0;
  for (std::int64_t p = 0; p < k.n * k.c; ++p) {
    for (std::int64_t i = 0; i < w.kernel_h; ++i) {
      for (std::int64_t j = 0; j < w.kernel_w; ++j) {
        for (std::int64_t oh = 0; oh < out.h; ++oh) {
          for (std::int64_t ow = 0; ow < out.w; ++ow) {
            const std::int64_t ih = tap_at(oh, i, w.stride_h, w.pad_top, w.dilation_h);
            const std::int64_t iw = tap_at(ow, j, w.stride_w, w.pad_left, w.dilation_w);
            const bool in = ih >= 0 && ih < k.h && iw >= 0 && iw < k.w;
            cols[at++] = in ? x[(p * k.h + ih) * k.w + iw] : 0.f;
          }
        }
      }
    }
  }
}

void test_max_pool_and_unpool() {
  for (const Case& k : kCases) {
    const Extent2d out = cnnviz::window_output_extent(k.h, k.w, k.win, k.ceil_mode);
    const std::int64_t planes = k.n * k.c, pooled = out.h * out.w;
    const std::vector<float> x = random_values(planes * k.h * k.w, 1);
    std::vector<float> y_ref(planes * pooled);
    std::vector<std::int64_t> s_ref(planes * pooled);
    reference_max_pool(k, out, x, y_ref, s_ref);
    const std::vector<float> g = random_values(planes * pooled, 2);
    std::vector<float> unpool_ref(planes * k.h * k.w, 0.f);
    for (std::int64_t q = 0; q < planes * pooled; ++q) {
      if (s_ref[q] >= 0) unpool_ref[(q / pooled) * k.h * k.w + s_ref[q]] += g[q];
    }
    for (int threads : kThreads) {
      std::vector<float> y(y_ref.size(), -99.f);
      std::vector<std::int64_t> s(s_ref.size(), -99);
      cnnviz::max_pool2d(x.data(), y.data(), s.data(), planes, k.h, k.w, k.win, k.ceil_mode,
                         threads);
      CHECK(y == y_ref);
      CHECK(s == s_ref);
      std::vector<float> unpooled(unpool_ref.size(), -99.f);
      cnnviz::max_unpool2d(g.data(), s.data(), unpooled.data(), planes, pooled, k.h, k.w, threads);
      CHECK(unpooled == unpool_ref);
    }
  }
}

void test_pool_switches_only_optional() {
  const float x[] = {1, 5, 2, 3};
  float y = 0;
  cnnviz::max_pool2d(x, &y, nullptr, 1, 2, 2, {2, 2, 2, 2, 0, 0, 0, 0, 1, 1});
  CHECK(y == 5.f);
}

void test_im2col_and_col2im() {
  for (const Case& k : kCases) {
    const Extent2d out = cnnviz::window_output_extent(k.h, k.w, k.win, false);
    const std::int64_t image = k.n * k.c * k.h * k.w;
    const std::int64_t col_count = k.n * k.c * k.win.kernel_h * k.win.kernel_w * out.h * out.w;
    const std::vector<float> x = random_values(image, 3);
    std::vector<float> cols_ref(col_count);
    reference_im2col(k, out, x, cols_ref);
    // col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>.
    const std::vector<float> c = random_values(col_count, 4);
    double lhs = 0;
    for (std::int64_t i = 0; i < col_count; ++i) lhs += double(cols_ref[i]) * c[i];
    for (int threads : kThreads) {
      std::vector<float> cols(col_count, -99.f);
      cnnviz::im2col(x.data(), cols.data(), k.n, k.c, k.h, k.w, k.win, threads);
      CHECK(cols == cols_ref);
      std::vector<float> back(image, -99.f);
      cnnviz::col2im(c.data(), back.data(), k.n, k.c, k.h, k.w, k.win, threads);
      double rhs = 0;
      for (std::int64_t i = 0; i < image; ++i) rhs += double(x[i]) * back[i];
      CHECK(std::abs(lhs - rhs) <= 1e-4 * (1 + std::abs(lhs)));
    }
  }
}

void test_col2im_sums_overlaps() {
  // A 3x3 kernel, stride 1, no padding on a 3x4 image: pixel (r, c) is read by
  // (taps along rows) x (taps along columns) windows; col2im of ones counts them.
  const Window2d win{3, 3, 1, 1, 0, 0, 0, 0, 1, 1};
  std::vector<float> ones(9 * 2, 1.f), img(12);
  cnnviz::col2im(ones.data(), img.data(), 1, 1, 3, 4, win);
  const std::vector<float> expected = {1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 1};
  CHECK(img == expected);
}

void test_output_size() {
  // PyTorch: 7 -> 3 (k3 s2 p0 floor), 4 (ceil); ceil mode drops a window starting in padding.
  CHECK(cnnviz::window_output_size(7, 3, 2, 0, 0, 1, false) == 3);
  CHECK(cnnviz::window_output_size(8, 3, 2, 0, 0, 1, true) == 4);
  CHECK(cnnviz::window_output_size(6, 2, 2, 1, 1, 1, true) == 4);
  CHECK(cnnviz::window_output_size(5, 2, 2, 1, 1, 1, true) == 3);
  CHECK(cnnviz::window_output_size(224, 3, 1, 1, 1, 1, false) == 224);
}

void test_errors() {
  float buf[64] = {};
  std::int64_t idx[16] = {};
  const Window2d ok{2, 2, 2, 2, 0, 0, 0, 0, 1, 1};
  Window2d zero_stride = ok;
  zero_stride.stride_w = 0;
  Window2d negative_pad = ok;
  negative_pad.pad_left = -1;
  Window2d too_big = ok;
  too_big.dilation_h = 5;
  CHECK(throws_invalid_argument([&] { cnnviz::max_pool2d(buf, buf, idx, 1, 4, 4, zero_stride); }));
  CHECK(throws_invalid_argument([&] { cnnviz::max_pool2d(buf, buf, idx, 1, 4, 4, negative_pad); }));
  CHECK(throws_invalid_argument([&] { cnnviz::max_pool2d(buf, buf, idx, 1, 4, 4, too_big); }));
  CHECK(throws_invalid_argument([&] { cnnviz::max_pool2d(buf, buf, idx, -1, 4, 4, ok); }));
  CHECK(throws_invalid_argument([&] { cnnviz::max_pool2d(nullptr, buf, idx, 1, 4, 4, ok); }));
  CHECK(throws_invalid_argument([&] { cnnviz::max_pool2d(buf, buf, idx, 1, 0, 4, ok); }));
  CHECK(
      throws_invalid_argument([&] { cnnviz::max_pool2d(buf, buf, idx, 1, 4, 4, ok, false, -1); }));
  idx[0] = 16;  // outside a 4 x 4 plane
  CHECK(throws_invalid_argument([&] { cnnviz::max_unpool2d(buf, idx, buf + 16, 1, 4, 4, 4); }));
  idx[0] = -2;
  CHECK(throws_invalid_argument([&] { cnnviz::max_unpool2d(buf, idx, buf + 16, 1, 4, 4, 4); }));
  CHECK(throws_invalid_argument([&] { cnnviz::max_unpool2d(buf, nullptr, buf, 1, 4, 4, 4); }));
  CHECK(throws_invalid_argument([&] { cnnviz::im2col(buf, buf, -1, 1, 4, 4, ok); }));
  CHECK(throws_invalid_argument([&] { cnnviz::im2col(buf, nullptr, 1, 1, 4, 4, ok); }));
  CHECK(throws_invalid_argument([&] { cnnviz::col2im(buf, buf, 1, 1, 4, 4, too_big); }));
  // Empty batches are fine.
  cnnviz::max_pool2d(nullptr, nullptr, nullptr, 0, 4, 4, ok);
  cnnviz::im2col(nullptr, nullptr, 0, 3, 4, 4, ok);
  cnnviz::max_unpool2d(nullptr, nullptr, nullptr, 0, 4, 4, 4);
}

}  // namespace

int main() {
  test_max_pool_and_unpool();
  test_pool_switches_only_optional();
  test_im2col_and_col2im();
  test_col2im_sums_overlaps();
  test_output_size();
  test_errors();
  return cnnviz::test::finish("cnnviz window kernel");
}
