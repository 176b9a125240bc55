// CPU occlusion batch builder (see cnnviz/occlusion.hpp). Each output plane is one contiguous run
// of spans, alternating "copy from the image" and "fill" (one fill span per clipped window row),
// so the plane is written once, front to back. Threads split the (window, channel) planes. Large
// outputs are written with non-temporal stores: the batch is far larger than the cache, and
// streaming stores skip reading every destination line before writing it (which halves the
// memory traffic of a plain store loop).
#include "cnnviz/occlusion.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cnnviz/detail/occlusion_math.hpp"
#include "parallel.hpp"

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define CNNVIZ_STREAM_STORES 1
#endif

namespace cnnviz {

namespace {

/// Output size from which the stores bypass the cache.
constexpr std::int64_t kStreamBytes = std::int64_t{16} << 20;

/// dst[0, n) = src[0, n) (src_step 1) or the value *src (src_step 0).
template <bool Stream>
inline void put_span(float* dst, const float* src, int src_step, std::int64_t n) {
#if CNNVIZ_STREAM_STORES
  if constexpr (Stream) {
    std::int64_t i = 0;
    // Head up to a 16-byte boundary, then aligned streaming stores, then the tail.
    for (; i < n && (reinterpret_cast<std::uintptr_t>(dst + i) & 15) != 0; ++i)
      dst[i] = src[i * src_step];
    if (src_step == 0) {
      const __m128 v = _mm_set1_ps(*src);
      for (; i + 16 <= n; i += 16) {
        _mm_stream_ps(dst + i, v);
        _mm_stream_ps(dst + i + 4, v);
        _mm_stream_ps(dst + i + 8, v);
        _mm_stream_ps(dst + i + 12, v);
      }
      for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, v);
    } else {
      for (; i + 16 <= n; i += 16) {
        _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
        _mm_stream_ps(dst + i + 4, _mm_loadu_ps(src + i + 4));
        _mm_stream_ps(dst + i + 8, _mm_loadu_ps(src + i + 8));
        _mm_stream_ps(dst + i + 12, _mm_loadu_ps(src + i + 12));
      }
      for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
    }
    for (; i < n; ++i) dst[i] = src[i * src_step];
    return;
  }
#endif
  if (src_step == 0) {
    std::fill(dst, dst + n, *src);
  } else if (n > 0) {
    std::memcpy(dst, src, sizeof(float) * static_cast<std::size_t>(n));
  }
}

template <bool Stream>
void build_planes(const float* image, std::int64_t c, std::int64_t h, std::int64_t w,
                  const std::int64_t* positions, std::int64_t window_h, std::int64_t window_w,
                  const float* fill, OcclusionFill kind, float* out, std::int64_t begin,
                  std::int64_t end) {
  const std::int64_t plane = h * w;
  for (std::int64_t q = begin; q < end; ++q) {
    const std::int64_t p = q / c, ch = q % c;
    const float* src = image + ch * plane;
    float* dst = out + q * plane;
    const detail::Box box = detail::occlusion_box(positions, p, h, w, window_h, window_w);
    std::int64_t at = 0;  // next offset of the plane to write
    if (box.cols.hi > box.cols.lo) {
      const std::int64_t width = box.cols.hi - box.cols.lo;
      for (std::int64_t y = box.rows.lo; y < box.rows.hi; ++y) {
        const std::int64_t start = y * w + box.cols.lo;
        put_span<Stream>(dst + at, src + at, 1, start - at);
        if (kind == OcclusionFill::image) {
          put_span<Stream>(dst + start, fill + ch * plane + start, 1, width);
        } else {
          put_span<Stream>(dst + start, fill + (kind == OcclusionFill::per_channel ? ch : 0), 0,
                           width);
        }
        at = start + width;
      }
    }
    put_span<Stream>(dst + at, src + at, 1, plane - at);
  }
#if CNNVIZ_STREAM_STORES
  if constexpr (Stream) _mm_sfence();  // order the streaming stores before the join
#endif
}

/// dst[0, n) = src[0, n) for the short rows of crops (a few to a few dozen values), as
/// fixed-size (inlined) moves, the last one overlapping: a memcpy call per row costs more than
/// the copy at these lengths.
inline void copy_row(float* dst, const float* src, std::int64_t n) {
  if (n >= 8) {
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) std::memcpy(dst + i, src + i, 32);
    if (i < n) std::memcpy(dst + n - 8, src + n - 8, 32);
  } else if (n >= 4) {
    std::memcpy(dst, src, 16);
    std::memcpy(dst + n - 4, src + n - 4, 16);
  } else if (n >= 2) {
    std::memcpy(dst, src, 8);
    std::memcpy(dst + n - 2, src + n - 2, 8);
  } else if (n == 1) {
    dst[0] = src[0];
  }
}

}  // namespace

void occlusion_batch(const float* image, std::int64_t c, std::int64_t h, std::int64_t w,
                     const std::int64_t* positions, std::int64_t count, std::int64_t window_h,
                     std::int64_t window_w, const float* fill, OcclusionFill kind, float* out,
                     int num_threads) {
  detail::check_occlusion_args("occlusion_batch", image, c, h, w, positions, count, window_h,
                               window_w, fill, kind, out);
  const std::int64_t plane = h * w, planes = count * c;
  if (planes * plane == 0) return;
  const bool stream = planes * plane * static_cast<std::int64_t>(sizeof(float)) >= kStreamBytes;
  const std::int64_t min_planes =
      std::max<std::int64_t>(1, cpu::kMinElementsPerThread / std::max<std::int64_t>(1, plane));
  cpu::parallel_for(
      planes, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        if (stream) {
          build_planes<true>(image, c, h, w, positions, window_h, window_w, fill, kind, out, begin,
                             end);
        } else {
          build_planes<false>(image, c, h, w, positions, window_h, window_w, fill, kind, out,
                              begin, end);
        }
      },
      min_planes);
}

void crop_batch(const float* source, std::int64_t c, std::int64_t h, std::int64_t w,
                const std::int64_t* corners, std::int64_t count, std::int64_t crop_h,
                std::int64_t crop_w, const float* patch, std::int64_t patch_h,
                std::int64_t patch_w, const std::int64_t* offsets, float* out, int num_threads) {
  const std::string fn = "cnnviz::crop_batch: ";
  if (c < 0 || h < 0 || w < 0 || count < 0 || crop_h < 0 || crop_w < 0 || patch_h < 0 ||
      patch_w < 0) {
    throw std::invalid_argument(fn + "sizes must be >= 0");
  }
  const std::int64_t crop = crop_h * crop_w, planes = count * c;
  if (planes * crop == 0) return;
  if (source == nullptr || corners == nullptr || out == nullptr ||
      (patch != nullptr && offsets == nullptr)) {
    throw std::invalid_argument(fn + "null buffer");
  }
  for (std::int64_t b = 0; b < count; ++b) {
    const std::int64_t y = corners[2 * b], x = corners[2 * b + 1];
    if (y < 0 || x < 0 || y + crop_h > h || x + crop_w > w) {
      throw std::invalid_argument(fn + "crop " + std::to_string(b) + " at (" + std::to_string(y) +
                                  ", " + std::to_string(x) + ") of size (" +
                                  std::to_string(crop_h) + ", " + std::to_string(crop_w) +
                                  ") is outside the (" + std::to_string(h) + ", " +
                                  std::to_string(w) + ") source");
    }
  }
  // The crops are short rows mostly in cache: a second thread pays for its start only from
  // about 2 MiB of output (measured: slower below that on a 2-core machine).
  constexpr std::int64_t kMinCropValuesPerThread = std::int64_t{1} << 19;
  const std::int64_t min_planes =
      std::max<std::int64_t>(1, kMinCropValuesPerThread / std::max<std::int64_t>(1, crop));
  cpu::parallel_for(
      planes, num_threads,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t q = begin; q < end; ++q) {
          const std::int64_t b = q / c, ch = q % c;
          const float* src = source + (ch * h + corners[2 * b]) * w + corners[2 * b + 1];
          float* dst = out + q * crop;
          // The patch's rows and columns inside the crop (empty when it lies outside).
          std::int64_t r0 = 0, r1 = 0, c0 = 0, c1 = 0, py = 0, px = 0;
          if (patch != nullptr) {
            py = offsets[2 * b];
            px = offsets[2 * b + 1];
            r0 = std::clamp<std::int64_t>(py, 0, crop_h);
            r1 = std::clamp<std::int64_t>(py + patch_h, r0, crop_h);
            c0 = std::clamp<std::int64_t>(px, 0, crop_w);
            c1 = std::clamp<std::int64_t>(px + patch_w, c0, crop_w);
          }
          const float* pp = patch != nullptr ? patch + q * patch_h * patch_w : nullptr;
          // Each output row once: source columns around the patch's, the patch's in between.
          for (std::int64_t i = 0; i < crop_h; ++i) {
            const float* s_row = src + i * w;
            float* d_row = dst + i * crop_w;
            if (i < r0 || i >= r1 || c0 == c1) {
              copy_row(d_row, s_row, crop_w);
              continue;
            }
            copy_row(d_row, s_row, c0);
            copy_row(d_row + c0, pp + (i - py) * patch_w + (c0 - px), c1 - c0);
            copy_row(d_row + c1, s_row + c1, crop_w - c1);
          }
        }
      },
      min_planes);
}

}  // namespace cnnviz
