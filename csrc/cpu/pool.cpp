// CPU max pooling with switches and max unpooling (see cnnviz/pool.hpp). Pooling: threads split
// the output rows; a row whose windows lie fully inside the plane (no padding, no ceil-mode
// overhang) goes through a row-oriented kernel whose inner loops run over the output columns with
// contiguous (or fixed-stride) loads and no index math beyond one add per tap: fused and unrolled
// for the common 2x2/2 and 3x3/2 (and 3x3/1) windows, one pass per tap over an L1 row buffer for
// any other window. Only the border windows use the general per-window routine. Unpooling: threads
// split the planes (a single writer per plane); each plane is zeroed and scattered while it is in
// cache.
#include "cnnviz/pool.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cnnviz/detail/window_math.hpp"
#include "parallel.hpp"
#include "stream.hpp"

namespace cnnviz {

namespace {

/// Work items (rows, planes) per thread so that each thread gets about kMinElementsPerThread
/// values to touch.
std::int64_t items_per_thread(std::int64_t values_per_item) {
  return std::max<std::int64_t>(
      1, cpu::kMinElementsPerThread / std::max<std::int64_t>(1, values_per_item));
}

/// The "take v over best" rule of max_pool_window without the first-tap case: a larger value, or
/// the first NaN.
inline bool takes(float v, float best) { return (v > best) | ((v != v) & (best == best)); }

/// Largest plane (values) that max_unpool2d builds in a buffer before streaming it out: 256 KiB,
/// well inside a core's L2.
constexpr std::int64_t kMaxBufferedPlane = std::int64_t{1} << 16;

using RowKernel = void (*)(const float*, std::int64_t, std::int64_t, std::int64_t, float*,
                           std::int64_t*);

// The row kernels, compiled for the baseline ISA and, on x86-64 with GCC or Clang, for AVX2 and
// AVX-512 too (GCC only: `#pragma GCC target`); picked at run time (no -march flag: one build runs
// on any x86-64).
namespace base {
#include "pool_rows.inc"
}  // namespace base
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CNNVIZ_POOL_HAS_X86 1
namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "pool_rows.inc"
#pragma GCC pop_options
}  // namespace avx2
namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
#include "pool_rows.inc"
#pragma GCC pop_options
}  // namespace avx512
#endif

enum class PoolIsa { avx512, avx2, base };

PoolIsa pool_isa() {
  static const PoolIsa value = [] {
#if CNNVIZ_POOL_HAS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      return PoolIsa::avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return PoolIsa::avx2;
#endif
    return PoolIsa::base;
  }();
  return value;
}

#if CNNVIZ_POOL_HAS_X86
#define CNNVIZ_POOL_PICK(KH, KW, S)                             \
  (pool_isa() == PoolIsa::avx512 ? avx512::pool_row_##KH##KW##S \
   : pool_isa() == PoolIsa::avx2 ? avx2::pool_row_##KH##KW##S   \
                                 : base::pool_row_##KH##KW##S)
#else
#define CNNVIZ_POOL_PICK(KH, KW, S) base::pool_row_##KH##KW##S
#endif

/// Interior windows of one output row for any window: one pass per tap over row buffers.
void pool_row_any(const float* row0, std::int64_t w, std::int64_t count, std::int64_t offset,
                  const Window2d& win, float* y, std::int64_t* sw, std::int64_t* arg) {
  const std::int64_t s = win.stride_w;
  for (std::int64_t k = 0; k < count; ++k) y[k] = row0[k * s];
  std::fill(arg, arg + count, std::int64_t{0});
  for (std::int64_t i = 0; i < win.kernel_h; ++i) {
    for (std::int64_t j = 0; j < win.kernel_w; ++j) {
      if (i == 0 && j == 0) continue;
      const std::int64_t at = i * win.dilation_h * w + j * win.dilation_w;
      const float* p = row0 + at;
      if (s == 1) {
        for (std::int64_t k = 0; k < count; ++k) {
          const float v = p[k], best = y[k];
          const bool t = takes(v, best);
          y[k] = t ? v : best;
          arg[k] = t ? at : arg[k];
        }
      } else {
        for (std::int64_t k = 0; k < count; ++k) {
          const float v = p[k * s], best = y[k];
          const bool t = takes(v, best);
          y[k] = t ? v : best;
          arg[k] = t ? at : arg[k];
        }
      }
    }
  }
  if (sw != nullptr) {
    for (std::int64_t k = 0; k < count; ++k) sw[k] = offset + k * s + arg[k];
  }
}

/// The fused row kernel for this window, or null. Plane offsets must fit int32 (checked by the
/// caller).
RowKernel fixed_row_kernel(const Window2d& win) {
  if (win.dilation_h != 1 || win.dilation_w != 1) return nullptr;
  const std::int64_t kh = win.kernel_h, kw = win.kernel_w, sw = win.stride_w;
  if (kh == 2 && kw == 2 && sw == 2) return CNNVIZ_POOL_PICK(2, 2, 2);
  if (kh == 3 && kw == 3 && sw == 2) return CNNVIZ_POOL_PICK(3, 3, 2);
  if (kh == 3 && kw == 3 && sw == 1) return CNNVIZ_POOL_PICK(3, 3, 1);
  if (kh == 2 && kw == 2 && sw == 1) return CNNVIZ_POOL_PICK(2, 2, 1);
  return nullptr;
}

}  // namespace

void max_pool2d(const float* x, float* y, std::int64_t* switches, std::int64_t planes,
                std::int64_t h, std::int64_t w, const Window2d& window, bool ceil_mode,
                int num_threads) {
  const Extent2d out =
      detail::check_max_pool_args("max_pool2d", x, y, planes, h, w, window, ceil_mode);
  const std::int64_t rows = planes * out.h;
  const std::int64_t taps = window.kernel_h * window.kernel_w;
  // Output columns whose window lies fully inside the plane width: [full.lo, full.hi).
  const std::int64_t span_w = (window.kernel_w - 1) * window.dilation_w + 1;
  const detail::Range full =
      detail::inside(-window.pad_left, window.stride_w, w - span_w + 1, out.w);
  const std::int64_t span_h = (window.kernel_h - 1) * window.dilation_h + 1;
  const std::int64_t value_bytes =
      static_cast<std::int64_t>(sizeof(float) + (switches != nullptr ? sizeof(std::int64_t) : 0));
  const std::int64_t out_bytes = rows * out.w * value_bytes;
  const bool stream = out_bytes >= cpu::kStreamBytes;
  const RowKernel fixed = h * w < (std::int64_t{1} << 31) - 1 ? fixed_row_kernel(window) : nullptr;
  cpu::parallel_for(
      rows, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        // The taps inside the plane depend on the row or the column only: find them once.
        std::vector<detail::Range> col_taps(out.w);
        for (std::int64_t ow = 0; ow < out.w; ++ow) {
          col_taps[ow] = detail::inside(ow * window.stride_w - window.pad_left, window.dilation_w,
                                        w, window.kernel_w);
        }
        std::vector<std::int64_t> arg(static_cast<std::size_t>(out.w));
        const auto edge = [&](const float* plane, std::int64_t top, detail::Range row_taps,
                              std::int64_t ow, float* yr, std::int64_t* sr) {
          float v;
          std::int64_t s;
          detail::max_pool_window(plane, w, top, row_taps, window.dilation_h,
                                  ow * window.stride_w - window.pad_left, col_taps[ow],
                                  window.dilation_w, &v, &s);
          yr[ow] = v;
          if (sr != nullptr) sr[ow] = s;
        };
        // Large outputs: each group of rows is computed into L1 buffers, then streamed out.
        const std::int64_t group = stream ? std::max<std::int64_t>(1, 1024 / out.w) : end - begin;
        std::vector<float> ybuf(stream ? static_cast<std::size_t>(group * out.w) : 0);
        std::vector<std::int64_t> sbuf(stream && switches != nullptr ? ybuf.size() : 0);
        for (std::int64_t g0 = begin; g0 < end; g0 += group) {
          const std::int64_t g1 = std::min(end, g0 + group);
          float* ybase = stream ? ybuf.data() - g0 * out.w : y;
          std::int64_t* sbase = switches == nullptr ? nullptr
                                : stream            ? sbuf.data() - g0 * out.w
                                                    : switches;
          for (std::int64_t r = g0; r < g1; ++r) {
            const std::int64_t p = r / out.h, oh = r % out.h;
            const std::int64_t top = oh * window.stride_h - window.pad_top;
            const detail::Range row_taps =
                detail::inside(top, window.dilation_h, h, window.kernel_h);
            const float* plane = x + p * h * w;
            float* yr = ybase + r * out.w;
            std::int64_t* sr = sbase != nullptr ? sbase + r * out.w : nullptr;
            const bool rows_inside = top >= 0 && top + span_h <= h;
            std::int64_t lo = 0, hi = 0;  // the interior columns of this row
            if (rows_inside && full.hi > full.lo) {
              lo = full.lo;
              hi = full.hi;
            }
            for (std::int64_t ow = 0; ow < lo; ++ow) edge(plane, top, row_taps, ow, yr, sr);
            if (hi > lo) {
              const std::int64_t left = lo * window.stride_w - window.pad_left;
              const std::int64_t offset = top * w + left;
              if (fixed != nullptr) {
                fixed(plane + offset, w, hi - lo, offset, yr + lo,
                      sr != nullptr ? sr + lo : nullptr);
              } else {
                pool_row_any(plane + offset, w, hi - lo, offset, window, yr + lo,
                             sr != nullptr ? sr + lo : nullptr, arg.data());
              }
            }
            for (std::int64_t ow = std::max(lo, hi); ow < out.w; ++ow) {
              edge(plane, top, row_taps, ow, yr, sr);
            }
          }
          if (stream) {
            const std::size_t count = static_cast<std::size_t>((g1 - g0) * out.w);
            cpu::stream_copy(y + g0 * out.w, ybuf.data(), count * sizeof(float));
            if (switches != nullptr) {
              cpu::stream_copy(switches + g0 * out.w, sbuf.data(), count * sizeof(std::int64_t));
            }
          }
        }
        if (stream) cpu::stream_fence();
      },
      items_per_thread(out.w * taps));
}

void max_unpool2d(const float* g, const std::int64_t* switches, float* out, std::int64_t planes,
                  std::int64_t pooled_size, std::int64_t h, std::int64_t w, int num_threads) {
  detail::check_max_unpool_args("max_unpool2d", g, switches, out, planes, pooled_size, h, w);
  const std::int64_t plane_size = h * w;
  // Large outputs whose planes fit L2: each plane is built in a thread-local buffer and streamed
  // out (no read of the output lines before they are written).
  const bool stream =
      planes * plane_size * static_cast<std::int64_t>(sizeof(float)) >= cpu::kStreamBytes &&
      plane_size <= kMaxBufferedPlane;
  cpu::parallel_for(
      planes, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        std::vector<float> buffer(stream ? static_cast<std::size_t>(plane_size) : 0);
        for (std::int64_t p = begin; p < end; ++p) {
          const float* gp = g + p * pooled_size;
          const std::int64_t* sp = switches + p * pooled_size;
          float* op = stream ? buffer.data() : out + p * plane_size;
          // Zero the plane, then scatter into it while it is still in cache.
          std::memset(op, 0, sizeof(float) * static_cast<std::size_t>(plane_size));
          bool bad = false;
          // The signal and switch streams are prefetched kAhead values ahead: the scatter's
          // loads wait on them otherwise (the hardware prefetcher falls behind).
          constexpr std::int64_t kAhead = 512;
          for (std::int64_t k0 = 0; k0 < pooled_size; k0 += 16) {
            __builtin_prefetch(sp + k0 + kAhead);
            __builtin_prefetch(sp + k0 + kAhead + 8);
            __builtin_prefetch(gp + k0 + kAhead);
            for (std::int64_t k = k0; k < std::min(k0 + 16, pooled_size); ++k) {
              const std::int64_t s = sp[k];
              const bool ok =
                  static_cast<std::uint64_t>(s) < static_cast<std::uint64_t>(plane_size);
              if (ok) op[s] += gp[k];
              bad |= !ok & (s != -1);
            }
          }
          if (bad) {
            for (std::int64_t k = 0; k < pooled_size; ++k) {
              const std::int64_t s = sp[k];
              if (s != -1 &&
                  static_cast<std::uint64_t>(s) >= static_cast<std::uint64_t>(plane_size)) {
                throw std::invalid_argument("cnnviz::max_unpool2d: switch " + std::to_string(s) +
                                            " of plane " + std::to_string(p) + " is outside [-1, " +
                                            std::to_string(plane_size) + ")");
              }
            }
          }
          if (stream) {
            cpu::stream_copy(out + p * plane_size, op,
                             sizeof(float) * static_cast<std::size_t>(plane_size));
          }
        }
        if (stream) cpu::stream_fence();
      },
      items_per_thread(plane_size + 2 * pooled_size));
}

}  // namespace cnnviz
