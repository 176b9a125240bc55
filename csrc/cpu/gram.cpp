// CPU Gram matrix and its backward (see cnnviz/gram.hpp): a packed, cache-blocked GEMM in the
// style of BLIS / GotoBLAS, written with GCC/Clang vector extensions and compiled three times
// (AVX-512, AVX2+FMA, generic x86-64 or the host ISA elsewhere); the CPU picks one at run time,
// so no -march flag is needed and one wheel runs everywhere.
//
// Blocking: k (the summed axis) in blocks of kKc. Per block, A = rows of the left operand packed
// in micro-panels of MR rows (k-major, MR values per k), B = columns of the right operand packed
// in panels of 16 (k-major, 16 values per k). The micro-kernel keeps an MR x 32 tile of the result
// in registers (2 x MR vectors of 16 floats) and does 2 * MR fused multiply-adds per k from one
// broadcast per row and two vector loads. An A micro-panel stays in L1 while the B panels stream
// from L2.
//
// gram:          G = F F^T, A and B both pack F; only tiles reaching the diagonal or above are
//                computed, threads split the k axis and their partial products are summed.
// gram_backward: dF = S F with S = (dG + dG^T) / norm; threads split the columns of F.
#include "cnnviz/gram.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "cnnviz/detail/gram_math.hpp"
#include "parallel.hpp"

namespace cnnviz {

namespace {

#if defined(__GNUC__)
#define CNNVIZ_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CNNVIZ_ALWAYS_INLINE inline
#endif

constexpr std::int64_t kPanel = 16;  // width of a B panel, one vector
constexpr std::int64_t kKc = 256;    // k block
constexpr std::int64_t kNc = 256;    // column block of gram_backward

typedef float v16 __attribute__((vector_size(64)));

CNNVIZ_ALWAYS_INLINE v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
CNNVIZ_ALWAYS_INLINE void store16(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

/// C[rows x cols] (= or +=) A-panel (kc x MR) times B panels b0, b1 (kc x 16 each; b1 unused when
/// NV = 1). Edge tiles (rows < MR or cols < 16 * NV) go through a local buffer.
template <int MR, int NV>
CNNVIZ_ALWAYS_INLINE void micro(std::int64_t kc, const float* a, const float* b0, const float* b1,
                                float* c, std::int64_t ldc, std::int64_t rows, std::int64_t cols,
                                bool accumulate) {
  v16 acc[NV][MR];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[v][i] = v16{};
  }
  for (std::int64_t k = 0; k < kc; ++k) {
    const v16 x0 = load16(b0 + k * kPanel);
    const float* ak = a + k * MR;
    if constexpr (NV > 1) {
      const v16 x1 = load16(b1 + k * kPanel);
      for (int i = 0; i < MR; ++i) {
        const float s = ak[i];
        acc[0][i] += s * x0;
        acc[1][i] += s * x1;
      }
    } else {
      for (int i = 0; i < MR; ++i) acc[0][i] += ak[i] * x0;
    }
  }
  if (rows == MR && cols == NV * kPanel) {
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) {
        float* at = c + i * ldc + v * kPanel;
        store16(at, accumulate ? load16(at) + acc[v][i] : acc[v][i]);
      }
    }
    return;
  }
  float tile[MR][NV * kPanel];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) store16(&tile[i][v * kPanel], acc[v][i]);
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i][j] : tile[i][j];
    }
  }
}

/// Packs rows [0, rows) x k [k0, k0 + kc) of a row-major matrix (leading dimension ld) into
/// micro-panels of `width` rows, zero-padded: out[(panel * kc + k) * width + r].
CNNVIZ_ALWAYS_INLINE void pack_rows(const float* m, std::int64_t ld, std::int64_t rows,
                                    std::int64_t k0, std::int64_t kc, std::int64_t width,
                                    float* out) {
  const std::int64_t panels = (rows + width - 1) / width;
  for (std::int64_t p = 0; p < panels; ++p) {
    float* dst = out + p * kc * width;
    for (std::int64_t r = 0; r < width; ++r) {
      const std::int64_t row = p * width + r;
      if (row < rows) {
        const float* src = m + row * ld + k0;
        for (std::int64_t k = 0; k < kc; ++k) dst[k * width + r] = src[k];
      } else {
        for (std::int64_t k = 0; k < kc; ++k) dst[k * width + r] = 0.f;
      }
    }
  }
}

/// Packs rows [k0, k0 + kc) x columns [j0, j0 + cols) of a row-major matrix into panels of 16
/// columns, zero-padded: out[(panel * kc + k) * 16 + j].
CNNVIZ_ALWAYS_INLINE void pack_cols(const float* m, std::int64_t ld, std::int64_t k0,
                                    std::int64_t kc, std::int64_t j0, std::int64_t cols,
                                    float* out) {
  const std::int64_t panels = (cols + kPanel - 1) / kPanel;
  for (std::int64_t k = 0; k < kc; ++k) {
    const float* src = m + (k0 + k) * ld + j0;
    for (std::int64_t p = 0; p < panels; ++p) {
      float* dst = out + (p * kc + k) * kPanel;
      const std::int64_t valid = std::min(kPanel, cols - p * kPanel);
      std::memcpy(dst, src + p * kPanel, sizeof(float) * static_cast<std::size_t>(valid));
      for (std::int64_t j = valid; j < kPanel; ++j) dst[j] = 0.f;
    }
  }
}

/// The tiles of one k block for the row panels [0, c) x column panels from `first_panel(i0)`:
/// calls micro on pairs of B panels (a last odd one alone).
template <int MR, class FirstPanel>
CNNVIZ_ALWAYS_INLINE void macro(const float* ap, const float* bp, std::int64_t kc,
                                std::int64_t rows, std::int64_t cols, float* c, std::int64_t ldc,
                                bool accumulate, FirstPanel first_panel) {
  const std::int64_t row_panels = (rows + MR - 1) / MR;
  const std::int64_t col_panels = (cols + kPanel - 1) / kPanel;
  for (std::int64_t ip = 0; ip < row_panels; ++ip) {
    const std::int64_t i0 = ip * MR;
    const std::int64_t r = std::min<std::int64_t>(MR, rows - i0);
    const float* a = ap + ip * kc * MR;
    std::int64_t jp = first_panel(i0);
    for (; jp + 1 < col_panels; jp += 2) {
      const std::int64_t j0 = jp * kPanel;
      micro<MR, 2>(kc, a, bp + jp * kc * kPanel, bp + (jp + 1) * kc * kPanel, c + i0 * ldc + j0,
                   ldc, r, std::min(2 * kPanel, cols - j0), accumulate);
    }
    if (jp < col_panels) {
      const std::int64_t j0 = jp * kPanel;
      micro<MR, 1>(kc, a, bp + jp * kc * kPanel, nullptr, c + i0 * ldc + j0, ldc, r, cols - j0,
                   accumulate);
    }
  }
}

/// acc (c x c, upper part) = F[:, k0:k1] F[:, k0:k1]^T.
template <int MR>
CNNVIZ_ALWAYS_INLINE void gram_partial_impl(const float* f, std::int64_t c, std::int64_t n,
                                            std::int64_t k0, std::int64_t k1, float* acc) {
  const std::int64_t a_rows = (c + MR - 1) / MR * MR;
  const std::int64_t b_cols = (c + kPanel - 1) / kPanel * kPanel;
  std::vector<float> ap(static_cast<std::size_t>(a_rows * kKc));
  std::vector<float> bp(static_cast<std::size_t>(b_cols * kKc));
  for (std::int64_t kb = k0; kb < k1; kb += kKc) {
    const std::int64_t kc = std::min(kKc, k1 - kb);
    pack_rows(f, n, c, kb, kc, MR, ap.data());
    pack_rows(f, n, c, kb, kc, kPanel, bp.data());  // F^T's column panels are F's row panels
    macro<MR>(ap.data(), bp.data(), kc, c, c, acc, c, kb != k0,
              [](std::int64_t i0) { return i0 / kPanel; });
  }
}

/// out[:, j0:j1] = s (c x c) F[:, j0:j1].
template <int MR>
CNNVIZ_ALWAYS_INLINE void gemm_cols_impl(const float* s, const float* f, float* out,
                                         std::int64_t c, std::int64_t n, std::int64_t j0,
                                         std::int64_t j1) {
  const std::int64_t a_rows = (c + MR - 1) / MR * MR;
  const std::int64_t k_blocks = (c + kKc - 1) / kKc;
  // s packed once for every k block: block kb starts at kb * a_rows * kKc.
  std::vector<float> ap(static_cast<std::size_t>(a_rows * kKc * k_blocks));
  for (std::int64_t b = 0; b < k_blocks; ++b) {
    pack_rows(s, c, c, b * kKc, std::min(kKc, c - b * kKc), MR, ap.data() + b * a_rows * kKc);
  }
  std::vector<float> bp(static_cast<std::size_t>(kNc * kKc));
  for (std::int64_t jb = j0; jb < j1; jb += kNc) {
    const std::int64_t cols = std::min(kNc, j1 - jb);
    for (std::int64_t b = 0; b < k_blocks; ++b) {
      const std::int64_t kb = b * kKc, kc = std::min(kKc, c - kb);
      pack_cols(f, n, kb, kc, jb, cols, bp.data());
      macro<MR>(ap.data() + b * a_rows * kKc, bp.data(), kc, c, cols, out + jb, n, b != 0,
                [](std::int64_t) { return std::int64_t{0}; });
    }
  }
}

// One instance per instruction set; MR is chosen so that the 2 * MR accumulators and the two B
// vectors fit the register file (32 zmm, 16 ymm as 2 per vector, 16 xmm as 4 per vector).
#if defined(__x86_64__) && defined(__GNUC__)
#define CNNVIZ_GRAM_X86 1
__attribute__((target("avx512f,avx512vl,fma"))) void gram_partial_avx512(
    const float* f, std::int64_t c, std::int64_t n, std::int64_t k0, std::int64_t k1, float* acc) {
  gram_partial_impl<12>(f, c, n, k0, k1, acc);
}
__attribute__((target("avx512f,avx512vl,fma"))) void gemm_cols_avx512(
    const float* s, const float* f, float* out, std::int64_t c, std::int64_t n, std::int64_t j0,
    std::int64_t j1) {
  gemm_cols_impl<12>(s, f, out, c, n, j0, j1);
}
__attribute__((target("avx2,fma"))) void gram_partial_avx2(const float* f, std::int64_t c,
                                                           std::int64_t n, std::int64_t k0,
                                                           std::int64_t k1, float* acc) {
  gram_partial_impl<3>(f, c, n, k0, k1, acc);
}
__attribute__((target("avx2,fma"))) void gemm_cols_avx2(const float* s, const float* f,
                                                        float* out, std::int64_t c, std::int64_t n,
                                                        std::int64_t j0, std::int64_t j1) {
  gemm_cols_impl<3>(s, f, out, c, n, j0, j1);
}
#endif
void gram_partial_generic(const float* f, std::int64_t c, std::int64_t n, std::int64_t k0,
                          std::int64_t k1, float* acc) {
  gram_partial_impl<2>(f, c, n, k0, k1, acc);
}
void gemm_cols_generic(const float* s, const float* f, float* out, std::int64_t c, std::int64_t n,
                       std::int64_t j0, std::int64_t j1) {
  gemm_cols_impl<2>(s, f, out, c, n, j0, j1);
}

enum class Isa { avx512, avx2, generic };

Isa detect_isa() {
#if CNNVIZ_GRAM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    return Isa::avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

Isa isa() {
  static const Isa value = detect_isa();
  return value;
}

void gram_partial(const float* f, std::int64_t c, std::int64_t n, std::int64_t k0,
                  std::int64_t k1, float* acc) {
  switch (isa()) {
#if CNNVIZ_GRAM_X86
    case Isa::avx512:
      return gram_partial_avx512(f, c, n, k0, k1, acc);
    case Isa::avx2:
      return gram_partial_avx2(f, c, n, k0, k1, acc);
#endif
    default:
      return gram_partial_generic(f, c, n, k0, k1, acc);
  }
}

void gemm_cols(const float* s, const float* f, float* out, std::int64_t c, std::int64_t n,
               std::int64_t j0, std::int64_t j1) {
  switch (isa()) {
#if CNNVIZ_GRAM_X86
    case Isa::avx512:
      return gemm_cols_avx512(s, f, out, c, n, j0, j1);
    case Isa::avx2:
      return gemm_cols_avx2(s, f, out, c, n, j0, j1);
#endif
    default:
      return gemm_cols_generic(s, f, out, c, n, j0, j1);
  }
}

/// Fewest k (or columns) per thread: a thread should get at least ~4M multiply-adds.
std::int64_t min_span(std::int64_t c) {
  return std::max<std::int64_t>(64, (std::int64_t{1} << 23) / std::max<std::int64_t>(1, c * c));
}

}  // namespace

const char* gram_kernel_name() {
  switch (isa()) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    default:
      return "generic";
  }
}

void gram(const float* features, float* out, std::int64_t batch, std::int64_t c, std::int64_t n,
          float norm, int num_threads) {
  detail::check_gram_args("gram", features, nullptr, false, out, batch, c, n, norm);
  const int threads = cpu::resolve_num_threads(num_threads);
  for (std::int64_t b = 0; b < batch; ++b) {
    const float* f = features + b * c * n;
    float* g = out + b * c * c;
    std::mutex lock;
    std::vector<std::vector<float>> partials;
    cpu::parallel_for(
        n, threads,
        [&](std::int64_t k0, std::int64_t k1) {
          std::vector<float> acc(static_cast<std::size_t>(c * c), 0.f);
          gram_partial(f, c, n, k0, k1, acc.data());
          const std::lock_guard<std::mutex> hold(lock);
          partials.push_back(std::move(acc));
        },
        min_span(c));
    // Sum the partials' upper triangles, scale, mirror.
    for (std::int64_t i = 0; i < c; ++i) {
      for (std::int64_t j = i; j < c; ++j) {
        float v = 0.f;
        for (const std::vector<float>& p : partials) v += p[static_cast<std::size_t>(i * c + j)];
        v /= norm;
        g[i * c + j] = v;
        g[j * c + i] = v;
      }
    }
  }
}

void gram_backward(const float* features, const float* grad, float* out, std::int64_t batch,
                   std::int64_t c, std::int64_t n, float norm, int num_threads) {
  detail::check_gram_args("gram_backward", features, grad, true, out, batch, c, n, norm);
  const int threads = cpu::resolve_num_threads(num_threads);
  std::vector<float> s(static_cast<std::size_t>(c * c));
  for (std::int64_t b = 0; b < batch; ++b) {
    const float* dg = grad + b * c * c;
    for (std::int64_t i = 0; i < c; ++i) {
      for (std::int64_t j = 0; j < c; ++j) {
        s[static_cast<std::size_t>(i * c + j)] = (dg[i * c + j] + dg[j * c + i]) / norm;
      }
    }
    const float* f = features + b * c * n;
    float* o = out + b * c * n;
    cpu::parallel_for(
        n, threads, [&](std::int64_t j0, std::int64_t j1) { gemm_cols(s.data(), f, o, c, n, j0, j1); },
        min_span(c));
  }
}

}  // namespace cnnviz
