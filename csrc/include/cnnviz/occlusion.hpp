// Occlusion batch builder: the batch of copies of one image, each with one window filled, that
// occlusion sensitivity (Zeiler & Fergus, 2014) feeds to the model; and the crop batch builder of
// incremental occlusion. Buffers are contiguous float32
// in host memory; the CUDA twin is in cnnviz/cuda.hpp.
#pragma once

#include <cstdint>

namespace cnnviz {

/// What fills the occluded window.
enum class OcclusionFill {
  /// One value everywhere: `fill` points to 1 float.
  constant,
  /// One value per channel (e.g. the channel mean): `fill` points to c floats.
  per_channel,
  /// The same window of a fill image (e.g. a blurred copy): `fill` points to c * h * w floats.
  image,
};

/// Writes out (count, c, h, w): out[p] = image with the window of p filled.
///
/// The window of p covers rows [top, top + window_h) and columns [left, left + window_w) with
/// (top, left) = (positions[2p], positions[2p + 1]); it is clipped to the image, so a position may
/// lie partly (or wholly: out[p] is then the image) outside it.
///
/// Args:
///   image: c * h * w values (CHW).
///   c, h, w: image shape (>= 0).
///   positions: count * 2 int64 (top, left) pairs.
///   count: number of windows, the batch size of out (>= 0).
///   window_h, window_w: window size (>= 0).
///   fill, kind: the fill values (see OcclusionFill).
///   out: count * c * h * w values; must not overlap the inputs. Large outputs are written with
///     non-temporal stores (they would evict the cache anyway).
///   num_threads: CPU threads, 0 = default_num_threads(); small outputs use fewer.
/// Throws std::invalid_argument for negative sizes, a null buffer or an invalid kind.
void occlusion_batch(const float* image, std::int64_t c, std::int64_t h, std::int64_t w,
                     const std::int64_t* positions, std::int64_t count, std::int64_t window_h,
                     std::int64_t window_w, const float* fill, OcclusionFill kind, float* out,
                     int num_threads = 0);

/// Writes out (count, c, crop_h, crop_w): out[b] = the crop_h x crop_w crop of `source` at
/// (corners[2b], corners[2b + 1]), with patch[b] written over it at (offsets[2b], offsets[2b + 1])
/// relative to the crop, clipped to the crop. Incremental occlusion's gather step: a cached
/// feature map (or its padded copy) cut around each window's changed region, with the region's
/// recomputed values in place.
///
/// Args:
///   source: c * h * w values (CHW).
///   corners: count * 2 int64 (row, column) of each crop's first element; every crop must lie
///     inside the source.
///   patch: count * c * patch_h * patch_w values, or null for plain crops (offsets unused).
///   offsets: count * 2 int64 (row, column) of patch[b] in crop b; any value (clipped).
///   out: count * c * crop_h * crop_w values; must not overlap the inputs.
///   num_threads: CPU threads, 0 = default_num_threads(); small outputs use fewer.
/// Throws std::invalid_argument for negative sizes, a null buffer or a crop outside the source.
void crop_batch(const float* source, std::int64_t c, std::int64_t h, std::int64_t w,
                const std::int64_t* corners, std::int64_t count, std::int64_t crop_h,
                std::int64_t crop_w, const float* patch, std::int64_t patch_h,
                std::int64_t patch_w, const std::int64_t* offsets, float* out,
                int num_threads = 0);

}  // namespace cnnviz
