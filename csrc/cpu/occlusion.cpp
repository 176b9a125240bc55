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

}  // namespace cnnviz
