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
// gram:          G = F F^T. Per k block, F is packed once (16 x 16 in-register transposes) into
//                k-major panels of 16 rows that serve as both operands; an 8 x 48 micro-kernel
//                (24 zmm accumulators, broadcasts fused into the FMAs) covers only the tiles on
//                and above the diagonal. Threads split the rows of the triangle, balanced by
//                tile count (no partial products to add); scaling and mirroring are fused into
//                the end of each thread's rows.
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

// --- Gram forward: F packed once per k block, outer-product micro-kernel on the upper triangle.

/// Index of element c of the first (lo) or second (hi) output of the stage of a 16 x 16
/// transpose that swaps bit J of the row index with bit J of the column index (rows a and
/// a | 2^J, see transpose16).
template <int J>
constexpr int tr_lo(int c) {
  return ((c >> J) & 1) ? 16 + c - (1 << J) : c;
}
template <int J>
constexpr int tr_hi(int c) {
  return ((c >> J) & 1) ? 16 + c : c + (1 << J);
}

#define CNNVIZ_IDX16(F, J)                                                                  \
  F<J>(0), F<J>(1), F<J>(2), F<J>(3), F<J>(4), F<J>(5), F<J>(6), F<J>(7), F<J>(8), F<J>(9), \
      F<J>(10), F<J>(11), F<J>(12), F<J>(13), F<J>(14), F<J>(15)

template <int J>
CNNVIZ_ALWAYS_INLINE void transpose_stage(v16* r) {
  for (int a = 0; a < 16; ++a) {
    if ((a >> J) & 1) continue;
    const v16 x = r[a], y = r[a | (1 << J)];
    r[a] = __builtin_shufflevector(x, y, CNNVIZ_IDX16(tr_lo, J));
    r[a | (1 << J)] = __builtin_shufflevector(x, y, CNNVIZ_IDX16(tr_hi, J));
  }
}

/// In-register transpose of a 16 x 16 block (4 butterfly stages of two-source shuffles).
CNNVIZ_ALWAYS_INLINE void transpose16(v16* r) {
  transpose_stage<0>(r);
  transpose_stage<1>(r);
  transpose_stage<2>(r);
  transpose_stage<3>(r);
}

/// Packs F[:, k0:k0 + kc] (c rows, leading dimension n) into panels of 16 rows, k-major:
/// out[(panel * kc + k) * 16 + r] = F[panel * 16 + r, k0 + k], rows past c zero.
CNNVIZ_ALWAYS_INLINE void pack_panels(const float* f, std::int64_t n, std::int64_t c,
                                      std::int64_t k0, std::int64_t kc, float* out) {
  const std::int64_t panels = (c + kPanel - 1) / kPanel;
  for (std::int64_t p = 0; p < panels; ++p) {
    const std::int64_t valid = std::min(kPanel, c - p * kPanel);
    const float* src = f + p * kPanel * n + k0;
    float* dst = out + p * kc * kPanel;
    std::int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
      v16 r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < valid ? load16(src + i * n + k) : v16{};
      transpose16(r);
      for (int i = 0; i < 16; ++i) store16(dst + (k + i) * kPanel, r[i]);
    }
    for (; k < kc; ++k) {
      for (std::int64_t i = 0; i < kPanel; ++i)
        dst[k * kPanel + i] = i < valid ? src[i * n + k] : 0.f;
    }
  }
}

/// acc[0:MR, 0:16 * NV] (leading dimension ld) += A B over kc, A = MR rows of a packed panel
/// (a points at its first row: a[k * 16 + i]), B = NV consecutive packed panels from b.
template <int MR, int NV>
CNNVIZ_ALWAYS_INLINE void gram_micro(std::int64_t kc, const float* a, const float* b, float* acc,
                                     std::int64_t ld) {
  v16 c[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) c[i][v] = v16{};
  }
  const std::int64_t bs = kc * kPanel;
  for (std::int64_t k = 0; k < kc; ++k) {
    v16 x[NV];
    for (int v = 0; v < NV; ++v) x[v] = load16(b + v * bs + k * kPanel);
    const float* ak = a + k * kPanel;
    for (int i = 0; i < MR; ++i) {
      const float s = ak[i];
      for (int v = 0; v < NV; ++v) c[i][v] += s * x[v];
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) {
      float* at = acc + i * ld + v * kPanel;
      store16(at, load16(at) + c[i][v]);
    }
  }
}

/// acc (cp x cp, cp = c rounded up to 16; tiles on and above the diagonal) += F[:, k0:k1]
/// F[:, k0:k1]^T. `pack` holds cp * kKcGram floats.
template <int MR, int NV>
CNNVIZ_ALWAYS_INLINE void gram_upper_impl(const float* f, std::int64_t c, std::int64_t n,
                                          std::int64_t k0, std::int64_t k1, std::int64_t r0,
                                          std::int64_t r1, std::int64_t kcb, float* pack,
                                          float* acc) {
  const std::int64_t panels = (c + kPanel - 1) / kPanel, cp = panels * kPanel;
  // Rows [r0, r1) of the result need the panels from r0's on, and no others.
  const std::int64_t p0 = r0 / kPanel;
  const float* fp = f + p0 * kPanel * n;
  float* accp = acc + p0 * kPanel * (cp + 1);  // acc shifted by p0 panels in both directions
  const std::int64_t cs = c - p0 * kPanel, ps = panels - p0;
  r0 -= p0 * kPanel;
  r1 = std::min(r1, c) - p0 * kPanel;
  for (std::int64_t kb = k0; kb < k1; kb += kcb) {
    const std::int64_t kc = std::min(kcb, k1 - kb);
    pack_panels(fp, n, cs, kb, kc, pack);
    for (std::int64_t i0 = r0; i0 < r1; i0 += MR) {
      const std::int64_t pi = i0 / kPanel;
      const float* a = pack + pi * kc * kPanel + (i0 - pi * kPanel);
      float* row = accp + i0 * cp;
      std::int64_t pj = pi;
      for (; pj + NV <= ps; pj += NV) {
        gram_micro<MR, NV>(kc, a, pack + pj * kc * kPanel, row + pj * kPanel, cp);
      }
      if constexpr (NV > 2) {
        if (pj + 2 <= ps) {
          gram_micro<MR, 2>(kc, a, pack + pj * kc * kPanel, row + pj * kPanel, cp);
          pj += 2;
        }
      }
      if (pj < ps) gram_micro<MR, 1>(kc, a, pack + pj * kc * kPanel, row + pj * kPanel, cp);
    }
  }
}

/// out[:, j0:j1] = s (c x c) F[:, j0:j1].
template <int MR>
CNNVIZ_ALWAYS_INLINE void gemm_cols_impl(const float* s, const float* f, float* out, std::int64_t c,
                                         std::int64_t n, std::int64_t j0, std::int64_t j1) {
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
__attribute__((target("avx512f,avx512vl,fma"))) void gram_upper_avx512(
    const float* f, std::int64_t c, std::int64_t n, std::int64_t k0, std::int64_t k1,
    std::int64_t r0, std::int64_t r1, std::int64_t kcb, float* pack, float* acc) {
  gram_upper_impl<8, 3>(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
}
__attribute__((target("avx2,fma"))) void gram_upper_avx2(const float* f, std::int64_t c,
                                                         std::int64_t n, std::int64_t k0,
                                                         std::int64_t k1, std::int64_t r0,
                                                         std::int64_t r1, std::int64_t kcb,
                                                         float* pack, float* acc) {
  gram_upper_impl<4, 1>(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
}
__attribute__((target("avx512f,avx512vl,fma"))) void gemm_cols_avx512(
    const float* s, const float* f, float* out, std::int64_t c, std::int64_t n, std::int64_t j0,
    std::int64_t j1) {
  gemm_cols_impl<12>(s, f, out, c, n, j0, j1);
}
__attribute__((target("avx2,fma"))) void gemm_cols_avx2(const float* s, const float* f, float* out,
                                                        std::int64_t c, std::int64_t n,
                                                        std::int64_t j0, std::int64_t j1) {
  gemm_cols_impl<3>(s, f, out, c, n, j0, j1);
}
#endif
void gram_upper_generic(const float* f, std::int64_t c, std::int64_t n, std::int64_t k0,
                        std::int64_t k1, std::int64_t r0, std::int64_t r1, std::int64_t kcb,
                        float* pack, float* acc) {
  gram_upper_impl<2, 1>(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
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

/// acc rows [r0, r1) (multiples of 8; tiles on and above the diagonal) += the same rows of
/// F[:, k0:k1] F[:, k0:k1]^T; acc is cp x cp (c rounded up to 16), pack holds cp * kcb floats.
void gram_upper(const float* f, std::int64_t c, std::int64_t n, std::int64_t k0, std::int64_t k1,
                std::int64_t r0, std::int64_t r1, std::int64_t kcb, float* pack, float* acc) {
  switch (isa()) {
#if CNNVIZ_GRAM_X86
    case Isa::avx512:
      return gram_upper_avx512(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
    case Isa::avx2:
      return gram_upper_avx2(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
#endif
    default:
      return gram_upper_generic(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
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
  if (batch * c == 0) return;
  const int threads = cpu::resolve_num_threads(num_threads);
  const std::int64_t panels = (c + kPanel - 1) / kPanel, cp = panels * kPanel;
  // k block: the packed block (cp x kc floats) stays in L2 (~256 KiB) while the tiles reuse it.
  const std::int64_t kcb =
      std::clamp<std::int64_t>((std::int64_t{1} << 16) / cp / 16 * 16, 64, 2048);
  // Threads split the rows of the upper triangle (blocks of 8 rows), balanced by the tiles each
  // row block has: no partial products to add. Each packs only the panels its rows need.
  constexpr std::int64_t kRowBlock = 8;
  const std::int64_t row_blocks = (c + kRowBlock - 1) / kRowBlock;
  const auto work = [&](std::int64_t rb) { return panels - rb * kRowBlock / kPanel; };
  std::int64_t total = 0;
  for (std::int64_t rb = 0; rb < row_blocks; ++rb) total += work(rb);
  const std::int64_t by_size =
      std::max<std::int64_t>(1, c * c * n / (std::int64_t{1} << 22));  // ~4M FMAs a thread
  const std::int64_t spans = std::min<std::int64_t>({threads, row_blocks, by_size});
  std::vector<std::int64_t> bounds{0};
  for (std::int64_t rb = 0, done = 0; rb < row_blocks; ++rb) {
    done += work(rb);
    if (done * spans >= total * static_cast<std::int64_t>(bounds.size()) &&
        static_cast<std::int64_t>(bounds.size()) < spans) {
      bounds.push_back((rb + 1) * kRowBlock);
    }
  }
  bounds.push_back(row_blocks * kRowBlock);
  const std::int64_t parts = static_cast<std::int64_t>(bounds.size()) - 1;
  std::vector<float> acc(static_cast<std::size_t>(cp * cp));
  for (std::int64_t b = 0; b < batch; ++b) {
    const float* f = features + b * c * n;
    float* g = out + b * c * c;
    cpu::parallel_for(
        parts, static_cast<int>(parts),
        [&](std::int64_t t0, std::int64_t t1) {
          std::vector<float> pack(static_cast<std::size_t>(cp * kcb));
          for (std::int64_t t = t0; t < t1; ++t) {
            const std::int64_t r0 = bounds[t], r1 = bounds[t + 1];
            std::fill(acc.begin() + r0 * cp, acc.begin() + std::min(r1, cp) * cp, 0.f);
            if (n > 0) gram_upper(f, c, n, 0, n, r0, r1, kcb, pack.data(), acc.data());
            // Scale and mirror these rows: 16 x 16 blocks, so that the column writes stay in
            // a few cache lines.
            for (std::int64_t i0 = r0; i0 < std::min(r1, c); i0 += 16) {
              const std::int64_t i1 = std::min({i0 + 16, r1, c});
              for (std::int64_t j0 = i0 / 16 * 16; j0 < c; j0 += 16) {
                const std::int64_t j1 = std::min(j0 + 16, c);
                for (std::int64_t i = i0; i < i1; ++i) {
                  for (std::int64_t j = std::max(i, j0); j < j1; ++j) {
                    const float v = acc[static_cast<std::size_t>(i * cp + j)] / norm;
                    g[i * c + j] = v;
                    g[j * c + i] = v;
                  }
                }
              }
            }
          }
        },
        1);
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
        n, threads,
        [&](std::int64_t j0, std::int64_t j1) { gemm_cols(s.data(), f, o, c, n, j0, j1); },
        min_span(c));
  }
}

}  // namespace cnnviz
