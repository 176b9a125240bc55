// Efros-Leung neighbourhood search: see cnnviz/texture.hpp.
//
// Per query, the known taps (weight > 0) are gathered once into (plane offset, weight) pairs and
// their target values. Candidates are then taken in "flat" order p = y * w + x over a padded copy
// of the sample (x runs over the whole row, the w - pw columns past the last full window are
// computed and dropped: ~(w / pw - 1) extra work, for long contiguous vector loads). A block of
// R vectors of candidates keeps its accumulators in registers while the loop runs over the known
// taps and channels: sum_k w_k sum_ch (s - t)^2 with s = sample[ch, p + offset_k].
#include "cnnviz/texture.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "isa.hpp"
#include "parallel.hpp"

#if defined(__GNUC__)
#define CNNVIZ_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CNNVIZ_ALWAYS_INLINE inline
#endif

namespace cnnviz {
namespace {

/// The known taps of one query: plane offsets i * w + j, weights, and the query values per tap
/// and channel (targets[k * c + ch]); 1 / sum of weights.
struct QueryTaps {
  std::vector<std::int64_t> offsets;
  std::vector<float> weights;
  std::vector<float> targets;
  float inv_total = 0.f;
};

/// Candidates per block: the widest kernel's 4 vectors of 16 floats (every kernel's block divides
/// it, so the padded layout below is the same for all).
constexpr std::int64_t kBlock = 64;

/// The sample in flat candidate order: c planes of `stride` floats, each the h * w sample plane
/// followed by zeros, long enough for a whole last block plus the farthest tap offset.
struct PaddedSample {
  std::vector<float> data;
  std::int64_t stride = 0;
};

#if defined(__GNUC__)
/// GCC / Clang vectors of 4, 8 and 16 floats: one register of SSE, AVX2 and AVX-512.
typedef float Vec4 __attribute__((vector_size(16)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec16 __attribute__((vector_size(64)));
template <int L>
struct VecOf;
template <>
struct VecOf<4> {
  using type = Vec4;
};
template <>
struct VecOf<8> {
  using type = Vec8;
};
template <>
struct VecOf<16> {
  using type = Vec16;
};

template <class V>
CNNVIZ_ALWAYS_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);  // an unaligned vector load
  return v;
}

/// out[j] = weighted SSD of candidates p0 + j, j < L * R (not yet divided by the weight sum).
/// C > 0 fixes the channel count at compile time.
template <int L, int R, int C>
CNNVIZ_ALWAYS_INLINE void block_impl(const float* sample, std::int64_t stride, std::int64_t c,
                                     const QueryTaps& q, std::int64_t p0, float* out) {
  using V = typename VecOf<L>::type;
  static_assert(sizeof(V) == 4 * L, "one vector holds L floats");
  const std::int64_t channels = C > 0 ? C : c;
  V acc[R];
  for (int r = 0; r < R; ++r) acc[r] = V{};
  const std::int64_t taps = static_cast<std::int64_t>(q.offsets.size());
  const std::int64_t* offsets = q.offsets.data();
  const float* weights = q.weights.data();
  const float* targets = q.targets.data();
  for (std::int64_t k = 0; k < taps; ++k) {
    const float* s = sample + p0 + offsets[k];
    const float* t = targets + k * channels;
    const float wk = weights[k];
    if constexpr (C == 3) {
      const float t0 = t[0], t1 = t[1], t2 = t[2];
      for (int r = 0; r < R; ++r) {
        const V d0 = load<V>(s + L * r) - t0;
        const V d1 = load<V>(s + stride + L * r) - t1;
        const V d2 = load<V>(s + 2 * stride + L * r) - t2;
        acc[r] += wk * (d0 * d0 + d1 * d1 + d2 * d2);
      }
    } else {
      V e[R];
      for (int r = 0; r < R; ++r) e[r] = V{};
      for (std::int64_t ch = 0; ch < channels; ++ch) {
        const float tc = t[ch];
        for (int r = 0; r < R; ++r) {
          const V d = load<V>(s + ch * stride + L * r) - tc;
          e[r] += d * d;
        }
      }
      for (int r = 0; r < R; ++r) acc[r] += wk * e[r];
    }
  }
  std::memcpy(out, acc, sizeof acc);
}

/// All kBlock candidates from p0: kBlock / (L * R) register blocks.
template <int L, int R>
CNNVIZ_ALWAYS_INLINE void block_dispatch(const float* sample, std::int64_t stride, std::int64_t c,
                                         const QueryTaps& q, std::int64_t p0, float* out) {
  static_assert(kBlock % (L * R) == 0, "a block is a whole number of register blocks");
  for (std::int64_t j = 0; j < kBlock; j += L * R) {
    switch (c) {
      case 1:
        block_impl<L, R, 1>(sample, stride, c, q, p0 + j, out + j);
        break;
      case 3:
        block_impl<L, R, 3>(sample, stride, c, q, p0 + j, out + j);
        break;
      default:
        block_impl<L, R, 0>(sample, stride, c, q, p0 + j, out + j);
    }
  }
}
#else
/// Portable scalar version (compilers without GCC vector extensions).
template <int L, int R>
void block_dispatch(const float* sample, std::int64_t stride, std::int64_t c, const QueryTaps& q,
                    std::int64_t p0, float* out) {
  for (std::int64_t j = 0; j < kBlock; ++j) out[j] = 0.f;
  const std::int64_t taps = static_cast<std::int64_t>(q.offsets.size());
  for (std::int64_t k = 0; k < taps; ++k) {
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const float* s = sample + ch * stride + p0 + q.offsets[k];
      const float t = q.targets[k * c + ch], wk = q.weights[k];
      for (std::int64_t j = 0; j < kBlock; ++j) out[j] += wk * ((s[j] - t) * (s[j] - t));
    }
  }
}
#endif

// One instance per instruction set: 4 accumulator registers (16 zmm, 16 ymm, 16 xmm in all).
#if defined(__x86_64__) && defined(__GNUC__)
#define CNNVIZ_TEXTURE_X86 1
__attribute__((target("avx512f,avx512vl,fma"))) void block_avx512(const float* sample,
                                                                  std::int64_t stride,
                                                                  std::int64_t c,
                                                                  const QueryTaps& q,
                                                                  std::int64_t p0, float* out) {
  block_dispatch<16, 4>(sample, stride, c, q, p0, out);
}
__attribute__((target("avx2,fma"))) void block_avx2(const float* sample, std::int64_t stride,
                                                    std::int64_t c, const QueryTaps& q,
                                                    std::int64_t p0, float* out) {
  block_dispatch<8, 4>(sample, stride, c, q, p0, out);
}
#endif
void block_generic(const float* sample, std::int64_t stride, std::int64_t c, const QueryTaps& q,
                   std::int64_t p0, float* out) {
  block_dispatch<4, 4>(sample, stride, c, q, p0, out);
}

using detail::Isa;

using BlockFn = void (*)(const float*, std::int64_t, std::int64_t, const QueryTaps&, std::int64_t,
                         float*);

BlockFn block_kernel() {
  switch (detail::fma_isa()) {
#if CNNVIZ_TEXTURE_X86
    case Isa::avx512:
      return block_avx512;
    case Isa::avx2:
      return block_avx2;
#endif
    default:
      return block_generic;
  }
}

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("cnnviz: texture_distances: " + what);
}

void check_args(const float* sample, std::int64_t c, std::int64_t h, std::int64_t w,
                const float* queries, const float* weights, std::int64_t batch,
                std::int64_t window_h, std::int64_t window_w, const float* distances) {
  if (c < 1 || h < 1 || w < 1) {
    fail("the sample must have c, h, w >= 1, got (" + std::to_string(c) + ", " + std::to_string(h) +
         ", " + std::to_string(w) + ")");
  }
  if (window_h < 1 || window_w < 1) {
    fail("the window must be >= 1, got " + std::to_string(window_h) + " x " +
         std::to_string(window_w));
  }
  if (window_h > h || window_w > w) {
    fail("the window (" + std::to_string(window_h) + " x " + std::to_string(window_w) +
         ") must fit in the sample (" + std::to_string(h) + " x " + std::to_string(w) + ")");
  }
  if (batch < 0) fail("batch must be >= 0, got " + std::to_string(batch));
  if (batch > 0 &&
      (sample == nullptr || queries == nullptr || weights == nullptr || distances == nullptr)) {
    fail("null buffer");
  }
}

/// Gathers the known taps of every query; throws for bad weights.
std::vector<QueryTaps> gather_taps(const float* queries, const float* weights, std::int64_t batch,
                                   std::int64_t c, std::int64_t w, std::int64_t window_h,
                                   std::int64_t window_w) {
  const std::int64_t taps = window_h * window_w;
  std::vector<QueryTaps> all(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    QueryTaps& q = all[b];
    const float* wb = weights + b * taps;
    const float* qb = queries + b * c * taps;
    double total = 0.0;
    for (std::int64_t i = 0; i < window_h; ++i) {
      for (std::int64_t j = 0; j < window_w; ++j) {
        const float wt = wb[i * window_w + j];
        if (!(wt >= 0.f) || !std::isfinite(wt)) {
          fail("weights must be finite and >= 0, got " + std::to_string(wt) + " at query " +
               std::to_string(b) + ", tap (" + std::to_string(i) + ", " + std::to_string(j) + ")");
        }
        if (wt == 0.f) continue;
        total += wt;
        q.offsets.push_back(i * w + j);
        q.weights.push_back(wt);
        for (std::int64_t ch = 0; ch < c; ++ch)
          q.targets.push_back(qb[ch * taps + i * window_w + j]);
      }
    }
    if (total <= 0.0) {
      fail("query " + std::to_string(b) +
           " has no known tap (all weights are 0): at least one neighbour must be known");
    }
    q.inv_total = static_cast<float>(1.0 / total);
  }
  return all;
}

/// Fewest multiply-adds worth a thread of their own: starting and joining one costs tens of
/// microseconds, as much as a whole 64 x 64 search (~0.8 M multiply-adds) takes on one core.
constexpr std::int64_t kMinWorkPerThread = std::int64_t{1} << 21;

void distances_impl(const float* sample, std::int64_t c, std::int64_t h, std::int64_t w,
                    const std::vector<QueryTaps>& taps, std::int64_t window_h,
                    std::int64_t window_w, float* distances, int num_threads) {
  const std::int64_t batch = static_cast<std::int64_t>(taps.size());
  const std::int64_t ph = h - window_h + 1, pw = w - window_w + 1;
  const std::int64_t flat = ph * w;  // candidates in flat order, per query
  const std::int64_t blocks = (flat + kBlock - 1) / kBlock;
  // The padded copy: reused across calls on this thread (the synthesis loop calls once a pixel).
  thread_local PaddedSample padded;
  const std::int64_t stride = (blocks * kBlock + (window_h - 1) * w + window_w + 15) / 16 * 16;
  padded.stride = stride;
  padded.data.assign(static_cast<std::size_t>(c * stride), 0.f);
  for (std::int64_t ch = 0; ch < c; ++ch) {
    std::copy(sample + ch * h * w, sample + (ch + 1) * h * w, padded.data.data() + ch * stride);
  }
  std::int64_t known = 0;
  for (const QueryTaps& q : taps) known += static_cast<std::int64_t>(q.offsets.size());
  const std::int64_t work_per_block = std::max<std::int64_t>(1, known * c * kBlock / batch);
  const std::int64_t min_blocks = std::max<std::int64_t>(1, kMinWorkPerThread / work_per_block);
  const int threads = cpu::resolve_num_threads(num_threads, cpu::Work::compute);
  const BlockFn block = block_kernel();
  const float* base = padded.data.data();
  cpu::parallel_for(
      batch * blocks, threads,
      [&](std::int64_t begin, std::int64_t end) {
        alignas(64) float out[kBlock];
        for (std::int64_t item = begin; item < end; ++item) {
          const std::int64_t b = item / blocks, p0 = (item % blocks) * kBlock;
          const QueryTaps& q = taps[b];
          block(base, stride, c, q, p0, out);
          // keep the full windows (x < pw) of the block's rows
          float* dst = distances + b * ph * pw;
          const std::int64_t p1 = std::min(p0 + kBlock, flat);
          for (std::int64_t p = p0; p < p1;) {
            const std::int64_t y = p / w, x = p % w, row_end = std::min(p1, y * w + w);
            for (std::int64_t xx = x; xx < std::min(pw, x + row_end - p); ++xx) {
              dst[y * pw + xx] = out[p - p0 + xx - x] * q.inv_total;
            }
            p = row_end;
          }
        }
      },
      min_blocks);
}

}  // namespace

void texture_distances(const float* sample, std::int64_t c, std::int64_t h, std::int64_t w,
                       const float* queries, const float* weights, std::int64_t batch,
                       std::int64_t window_h, std::int64_t window_w, float* distances,
                       int num_threads) {
  check_args(sample, c, h, w, queries, weights, batch, window_h, window_w, distances);
  cpu::resolve_num_threads(num_threads, cpu::Work::compute);  // validates num_threads
  if (batch == 0) return;
  const std::vector<QueryTaps> taps =
      gather_taps(queries, weights, batch, c, w, window_h, window_w);
  distances_impl(sample, c, h, w, taps, window_h, window_w, distances, num_threads);
}

TextureMatch texture_select(const float* distances, std::int64_t count, float epsilon, double u) {
  if (count < 1 || distances == nullptr) {
    throw std::invalid_argument("cnnviz: texture_select: needs at least one distance, got " +
                                std::to_string(count));
  }
  if (!(epsilon >= 0.f) || !std::isfinite(epsilon)) {
    throw std::invalid_argument("cnnviz: texture_select: epsilon must be finite and >= 0, got " +
                                std::to_string(epsilon));
  }
  if (!(u >= 0.0 && u <= 1.0)) {
    throw std::invalid_argument("cnnviz: texture_select: u must be in [0, 1], got " +
                                std::to_string(u));
  }
  float best = std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < count; ++i) {
    if (std::isnan(distances[i])) {
      throw std::invalid_argument("cnnviz: texture_select: distance " + std::to_string(i) +
                                  " is NaN (a NaN in the sample or the known query values?)");
    }
    best = std::min(best, distances[i]);
  }
  const double threshold = static_cast<double>(best) * (1.0 + static_cast<double>(epsilon));
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < count; ++i) n += static_cast<double>(distances[i]) <= threshold;
  const std::int64_t k =
      std::min<std::int64_t>(static_cast<std::int64_t>(u * static_cast<double>(n)), n - 1);
  TextureMatch m;
  m.best = best;
  m.candidates = n;
  for (std::int64_t i = 0, seen = 0; i < count; ++i) {
    if (static_cast<double>(distances[i]) <= threshold && seen++ == k) {
      m.index = i;
      m.distance = distances[i];
      break;
    }
  }
  return m;
}

void texture_match(const float* sample, std::int64_t c, std::int64_t h, std::int64_t w,
                   const float* queries, const float* weights, std::int64_t batch,
                   std::int64_t window_h, std::int64_t window_w, float epsilon,
                   const double* uniforms, TextureMatch* out, int num_threads) {
  // a dummy non-null distances pointer: the scratch buffer below is ours
  check_args(sample, c, h, w, queries, weights, batch, window_h, window_w, sample);
  cpu::resolve_num_threads(num_threads, cpu::Work::compute);
  if (batch == 0) return;
  if (uniforms == nullptr || out == nullptr) fail("null buffer");
  const std::vector<QueryTaps> taps =
      gather_taps(queries, weights, batch, c, w, window_h, window_w);
  const std::int64_t per_query = (h - window_h + 1) * (w - window_w + 1);
  // Reused across calls on this thread: the synthesis loop calls this once per pixel.
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<std::size_t>(batch * per_query));
  distances_impl(sample, c, h, w, taps, window_h, window_w, scratch.data(), num_threads);
  for (std::int64_t b = 0; b < batch; ++b) {
    out[b] = texture_select(scratch.data() + b * per_query, per_query, epsilon, uniforms[b]);
  }
}

const char* texture_kernel_name() { return detail::isa_name(detail::fma_isa()); }

}  // namespace cnnviz
