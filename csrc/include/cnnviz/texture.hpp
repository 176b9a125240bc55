// Neighbourhood search of non-parametric texture synthesis (Efros & Leung, 1999, "Texture
// Synthesis by Non-parametric Sampling"): the masked, Gaussian-weighted sum of squared differences
// (SSD) between a partly known window of the image being grown and every full window of the
// sample, and the seeded random pick among the candidates within (1 + epsilon) of the best match.
// Buffers are contiguous float32 in host memory; the sample is planar (C, H, W).
#pragma once

#include <cstdint>

namespace cnnviz {

/// Normalized weighted SSD of each query window against every full window of the sample:
///
///   distances[b, y, x] = sum_{i, j} weights[b, i, j] * sum_ch (sample[ch, y + i, x + j]
///                        - queries[b, ch, i, j])^2 / sum_{i, j} weights[b, i, j]
///
/// for y in [0, h - window_h], x in [0, w - window_w] (the windows wholly inside the sample).
/// Taps of weight 0 (the unknown pixels of the window) are skipped, so their query values may be
/// anything (even NaN); the work is proportional to the number of known taps. Threads split the
/// candidate positions of all queries together (contiguous runs of a candidate row, vectorized:
/// AVX-512, AVX2+FMA or generic, picked at run time for this CPU).
///
/// Args:
///   sample: c * h * w values (CHW).
///   c, h, w: sample shape (c >= 1, h >= window_h, w >= window_w).
///   queries: batch * c * window_h * window_w values (per query, CHW).
///   weights: batch * window_h * window_w values, finite and >= 0 (e.g. a Gaussian times the
///     known-pixel mask), with a positive sum for every query.
///   batch: number of queries (>= 0; 0 does nothing).
///   window_h, window_w: window size (>= 1).
///   distances: batch * (h - window_h + 1) * (w - window_w + 1) values; must not overlap inputs.
///   num_threads: CPU threads, 0 = default_compute_threads(); small searches use fewer.
/// Throws std::invalid_argument for bad sizes, a null buffer, or a negative / non-finite weight
/// or an all-zero weight window (naming the query).
void texture_distances(const float* sample, std::int64_t c, std::int64_t h, std::int64_t w,
                       const float* queries, const float* weights, std::int64_t batch,
                       std::int64_t window_h, std::int64_t window_w, float* distances,
                       int num_threads = 0);

/// One pick of texture_select / texture_match.
struct TextureMatch {
  /// Flat candidate index y * (w - window_w + 1) + x of the chosen window: its centre pixel is
  /// sample[:, y + window_h / 2, x + window_w / 2].
  std::int64_t index = -1;
  /// Smallest distance over all candidates.
  float best = 0.f;
  /// Distance of the chosen candidate (<= (1 + epsilon) * best).
  float distance = 0.f;
  /// Number of candidates within (1 + epsilon) * best (>= 1).
  std::int64_t candidates = 0;
};

/// Picks uniformly among the candidates d[i] <= (1 + epsilon) * min(d) (the threshold taken in
/// double precision): the k-th of them in index order, k = min(floor(u * count), count - 1). With
/// epsilon = 0 only exact ties with the best are candidates.
///
/// Args:
///   distances: count values (>= 1), none NaN.
///   epsilon: >= 0 and finite.
///   u: a uniform random number in [0, 1) (1 is accepted and picks the last candidate).
/// Throws std::invalid_argument for count < 1, a null buffer, a bad epsilon or u, or a NaN
/// distance.
TextureMatch texture_select(const float* distances, std::int64_t count, float epsilon, double u);

/// texture_distances then texture_select for every query: out[b] is the pick for query b with the
/// random number uniforms[b]. The distances live in an internal scratch buffer.
///
/// Args:
///   sample ... window_w, num_threads: as in texture_distances.
///   epsilon: as in texture_select.
///   uniforms: batch values in [0, 1].
///   out: batch picks.
/// Throws std::invalid_argument as texture_distances and texture_select do.
void texture_match(const float* sample, std::int64_t c, std::int64_t h, std::int64_t w,
                   const float* queries, const float* weights, std::int64_t batch,
                   std::int64_t window_h, std::int64_t window_w, float epsilon,
                   const double* uniforms, TextureMatch* out, int num_threads = 0);

/// Name of the inner kernel texture_distances uses on this CPU: "avx512", "avx2" or "generic".
const char* texture_kernel_name();

}  // namespace cnnviz
