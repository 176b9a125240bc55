// CPU Gram matrix and its backward (see cnnviz/gram.hpp): a packed, cache-blocked GEMM in the
// style of BLIS / GotoBLAS, written with GCC/Clang vector extensions and compiled three times
// (AVX-512, AVX2+FMA, generic x86-64 or the host ISA elsewhere); the CPU picks one at run time,
// so no -march flag is needed and one wheel runs everywhere.
//
// Both products share one layout: operands packed in panels of 16 (k-major, 16 values per k)
// and an MR x (16 * NV) micro-kernel (8 x 48 on AVX-512: 24 zmm accumulators, one broadcast per
// row fused into the FMAs, NV vector loads per k). An A micro-panel stays in L1 while the packed
// B block streams from L2.
//
// gram:          G = F F^T. Per k block, F is packed once (16 x 16 in-register transposes) into
//                k-major panels of 16 rows that serve as both operands; an 8 x 48 micro-kernel
//                (24 zmm accumulators, broadcasts fused into the FMAs) covers only the tiles on
//                and above the diagonal. Threads share one product by shape: for long n (the
//                VGG shapes) they take parts of n from a shared counter, each into a private
//                partial triangle, summed, scaled and mirrored at the end (F packed once, whole
//                triangles per thread); for short n the rows of the triangle are cut into 3
//                parts per thread, balanced by tile count (no partial products to add), with
//                scaling and mirroring fused into the end of each part.
// gram_backward: dF = S F with S = (dG + dG^T) / norm, symmetric, so its packed A panels (panels
//                of 16 rows, k-major) are plain row copies of S; packed once per batch item
//                and shared by the threads, which take column blocks of F from a shared
//                counter (parallel_dynamic: robust to a descheduled or late thread). Each
//                thread packs column blocks of F (L2-sized) and runs the same 8 x 48 micro-kernel
//                as the forward with plain stores (k blocks of up to 512, so one pass for C <=
//                512). For C <= 128 the micro-kernel reads F in place instead (a C x 48 tile stays
//                in L1 while the row blocks of S sweep it): no packing pass over F.
#include "cnnviz/gram.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "cnnviz/detail/gram_math.hpp"
#include "isa.hpp"
#include "parallel.hpp"

namespace cnnviz {

namespace {

#if defined(__GNUC__)
#define CNNVIZ_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CNNVIZ_ALWAYS_INLINE inline
#endif

constexpr std::int64_t kPanel = 16;  // width of a B panel, one vector

typedef float v16 __attribute__((vector_size(64)));

CNNVIZ_ALWAYS_INLINE v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
CNNVIZ_ALWAYS_INLINE void store16(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

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

/// acc[0:MR, 0:16 * NV] (leading dimension ld) += A B (= A B when not Accumulate) over kc, A = MR
/// rows of a packed panel (a points at its first row: a[k * 16 + i]), B = NV consecutive packed
/// panels from b.
template <int MR, int NV, bool Accumulate = true>
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
      store16(at, Accumulate ? load16(at) + c[i][v] : c[i][v]);
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
    constexpr bool kTall = 2 * MR == kPanel;
    std::int64_t tall_panel = -1;  // the one-panel tile of this panel's rows, done as a tall tile
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
      if (pj < ps) {
        if constexpr (kTall) {
          // A one-panel tile runs as one 16-row tile for both row blocks of a panel: 16
          // independent accumulators instead of 8 (8 chains leave the FMA pipes waiting).
          if (pj == tall_panel) {
            tall_panel = -1;
            continue;
          }
          if (i0 % kPanel == 0 && i0 + kPanel <= r1) {
            gram_micro<2 * MR, 1>(kc, a, pack + pj * kc * kPanel, row + pj * kPanel, cp);
            tall_panel = pj;
            continue;
          }
        }
        gram_micro<MR, 1>(kc, a, pack + pj * kc * kPanel, row + pj * kPanel, cp);
      }
    }
  }
}

/// gram_micro with B read in place: row k of the NV panels at b + k * ldb (v-th panel at
/// + 16 v), as in the row-major F itself, so that a short-k product needs no packing pass.
template <int MR, int NV>
CNNVIZ_ALWAYS_INLINE void gram_micro_direct(std::int64_t kc, const float* a, const float* b,
                                            std::int64_t ldb, float* out, std::int64_t ld) {
  v16 c[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) c[i][v] = v16{};
  }
  for (std::int64_t k = 0; k < kc; ++k) {
    v16 x[NV];
    for (int v = 0; v < NV; ++v) x[v] = load16(b + k * ldb + v * kPanel);
    const float* ak = a + k * kPanel;
    for (int i = 0; i < MR; ++i) {
      const float s = ak[i];
      for (int v = 0; v < NV; ++v) c[i][v] += s * x[v];
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) store16(out + i * ld + v * kPanel, c[i][v]);
  }
}

// --- Gram backward: out = S F with S = (dG + dG^T) / norm symmetric, so that the packed A
// panels are rows of S (pack_cols of S), packed once per batch item and shared by the threads.

/// Largest c for which the backward reads F in place rather than packing it (see
/// sym_gemm_impl).
constexpr std::int64_t kDirectMaxC = 128;

/// Largest k block of the backward (S rows of up to this length stay whole, so that most
/// products are a single pass with plain stores).
constexpr std::int64_t kKcBwd = 512;

/// One tile: out[0:rows, 0:cols] (= or +=) MR rows of A times NV packed B panels; full tiles
/// store straight to out, edge tiles go through a local buffer.
template <int MR, int NV, bool Accumulate>
CNNVIZ_ALWAYS_INLINE void sym_tile(std::int64_t kc, const float* a, const float* b, float* out,
                                   std::int64_t ldo, std::int64_t rows, std::int64_t cols) {
  if (rows == MR && cols == NV * kPanel) {
    gram_micro<MR, NV, Accumulate>(kc, a, b, out, ldo);
    return;
  }
  float tile[MR * NV * kPanel];
  gram_micro<MR, NV, false>(kc, a, b, tile, NV * kPanel);
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      const float v = tile[i * NV * kPanel + j];
      out[i * ldo + j] = Accumulate ? out[i * ldo + j] + v : v;
    }
  }
}

/// The tiles of one (k block, column block): out[0:c, 0:cols] (= or +=) A (c x kc, packed in
/// panels of 16 rows) times B (kc x cols, packed in panels of 16 columns).
template <int MR, int NV, bool Accumulate>
CNNVIZ_ALWAYS_INLINE void sym_block(std::int64_t kc, const float* ab, const float* bp, float* out,
                                    std::int64_t ldo, std::int64_t c, std::int64_t cols) {
  const std::int64_t col_panels = (cols + kPanel - 1) / kPanel;
  for (std::int64_t i0 = 0; i0 < c; i0 += MR) {
    const std::int64_t rows = std::min<std::int64_t>(MR, c - i0);
    const float* a = ab + (i0 / kPanel) * kc * kPanel + i0 % kPanel;
    float* o = out + i0 * ldo;
    std::int64_t jp = 0;
    for (; jp + NV <= col_panels; jp += NV) {
      sym_tile<MR, NV, Accumulate>(kc, a, bp + jp * kc * kPanel, o + jp * kPanel, ldo, rows,
                                   std::min(NV * kPanel, cols - jp * kPanel));
    }
    if constexpr (NV > 2) {
      if (jp + 2 <= col_panels) {
        sym_tile<MR, 2, Accumulate>(kc, a, bp + jp * kc * kPanel, o + jp * kPanel, ldo, rows,
                                    std::min(2 * kPanel, cols - jp * kPanel));
        jp += 2;
      }
    }
    if (jp < col_panels) {
      sym_tile<MR, 1, Accumulate>(kc, a, bp + jp * kc * kPanel, o + jp * kPanel, ldo, rows,
                                  cols - jp * kPanel);
    }
  }
}

/// Column block of gram_backward for c rows: the packed B block (min(c, kKcBwd) x nc floats)
/// stays in L2 (~384 KiB) while every A micro-panel sweeps it; a multiple of 48 (the widest tile).
std::int64_t sym_block_cols(std::int64_t c) {
  const std::int64_t kcb = std::max<std::int64_t>(1, std::min(c, kKcBwd));
  return std::clamp<std::int64_t>((std::int64_t{3} << 15) / kcb / 48 * 48, 48, 64 * 48);
}

/// out[:, j0:j1] = S F[:, j0:j1] (j1 - j0 <= sym_block_cols(c)); ap = S packed in panels of 16
/// per k block (block kb at ap + kb * cp), bp = scratch of sym_block_cols(c) * min(c, kKcBwd).
template <int MR, int NV>
CNNVIZ_ALWAYS_INLINE void sym_gemm_impl(const float* ap, const float* f, float* out, std::int64_t c,
                                        std::int64_t n, std::int64_t j0, std::int64_t j1,
                                        float* bp) {
  const std::int64_t cp = (c + kPanel - 1) / kPanel * kPanel;
  const std::int64_t kcb = std::min(c, kKcBwd);
  const std::int64_t cols = j1 - j0;
  if (c <= kDirectMaxC) {
    // Short k: the tiles read F in place (a c x 16 NV tile of F stays in L1 while every row
    // block of S sweeps it), the next tile's lines prefetched; no packing pass over F, which
    // cost as much as the multiply-adds at c = 64. Columns past the last whole tile go through
    // the packed path.
    constexpr std::int64_t tile = NV * kPanel;
    const std::int64_t whole = cols / tile * tile;
    for (std::int64_t jt = 0; jt < whole; jt += tile) {
      const float* b = f + j0 + jt;
      for (std::int64_t i0 = 0; i0 < c; i0 += MR) {
        // Each row block prefetches MR rows of the next tile (spread over the tile's work).
        if (jt + tile < whole) {
          for (std::int64_t k = i0; k < std::min(i0 + MR, c); ++k) {
            for (int v = 0; v < NV; ++v) __builtin_prefetch(b + tile + k * n + v * kPanel);
          }
        }
        const float* a = ap + (i0 / kPanel) * c * kPanel + i0 % kPanel;
        float* o = out + i0 * n + j0 + jt;
        const std::int64_t rows = std::min<std::int64_t>(MR, c - i0);
        if (rows == MR) {
          gram_micro_direct<MR, NV>(c, a, b, n, o, n);
        } else {
          float part[MR * tile];
          gram_micro_direct<MR, NV>(c, a, b, n, part, tile);
          for (std::int64_t i = 0; i < rows; ++i) {
            std::memcpy(o + i * n, part + i * tile, sizeof(float) * tile);
          }
        }
      }
    }
    if (whole < cols) {
      pack_cols(f, n, 0, c, j0 + whole, cols - whole, bp);
      sym_block<MR, NV, false>(c, ap, bp, out + j0 + whole, n, c, cols - whole);
    }
    return;
  }
  for (std::int64_t kb = 0; kb < c; kb += kcb) {
    const std::int64_t kc = std::min(kcb, c - kb);
    pack_cols(f, n, kb, kc, j0, cols, bp);
    if (kb == 0) {
      sym_block<MR, NV, false>(kc, ap + kb * cp, bp, out + j0, n, c, cols);
    } else {
      sym_block<MR, NV, true>(kc, ap + kb * cp, bp, out + j0, n, c, cols);
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
__attribute__((target("avx512f,avx512vl,fma"))) void sym_gemm_avx512(const float* ap,
                                                                     const float* f, float* out,
                                                                     std::int64_t c, std::int64_t n,
                                                                     std::int64_t j0,
                                                                     std::int64_t j1, float* bp) {
  sym_gemm_impl<8, 3>(ap, f, out, c, n, j0, j1, bp);
}
__attribute__((target("avx2,fma"))) void sym_gemm_avx2(const float* ap, const float* f, float* out,
                                                       std::int64_t c, std::int64_t n,
                                                       std::int64_t j0, std::int64_t j1,
                                                       float* bp) {
  sym_gemm_impl<4, 1>(ap, f, out, c, n, j0, j1, bp);
}
__attribute__((target("avx2,fma"))) void gram_upper_avx2(const float* f, std::int64_t c,
                                                         std::int64_t n, std::int64_t k0,
                                                         std::int64_t k1, std::int64_t r0,
                                                         std::int64_t r1, std::int64_t kcb,
                                                         float* pack, float* acc) {
  gram_upper_impl<4, 1>(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
}
#endif
void gram_upper_generic(const float* f, std::int64_t c, std::int64_t n, std::int64_t k0,
                        std::int64_t k1, std::int64_t r0, std::int64_t r1, std::int64_t kcb,
                        float* pack, float* acc) {
  gram_upper_impl<2, 1>(f, c, n, k0, k1, r0, r1, kcb, pack, acc);
}
void sym_gemm_generic(const float* ap, const float* f, float* out, std::int64_t c, std::int64_t n,
                      std::int64_t j0, std::int64_t j1, float* bp) {
  sym_gemm_impl<2, 1>(ap, f, out, c, n, j0, j1, bp);
}

using detail::Isa;

/// acc rows [r0, r1) (multiples of 8; tiles on and above the diagonal) += the same rows of
/// F[:, k0:k1] F[:, k0:k1]^T; acc is cp x cp (c rounded up to 16), pack holds cp * kcb floats.
void gram_upper(const float* f, std::int64_t c, std::int64_t n, std::int64_t k0, std::int64_t k1,
                std::int64_t r0, std::int64_t r1, std::int64_t kcb, float* pack, float* acc) {
  switch (detail::fma_isa()) {
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

void sym_gemm(const float* ap, const float* f, float* out, std::int64_t c, std::int64_t n,
              std::int64_t j0, std::int64_t j1, float* bp) {
  switch (detail::fma_isa()) {
#if CNNVIZ_GRAM_X86
    case Isa::avx512:
      return sym_gemm_avx512(ap, f, out, c, n, j0, j1, bp);
    case Isa::avx2:
      return sym_gemm_avx2(ap, f, out, c, n, j0, j1, bp);
#endif
    default:
      return sym_gemm_generic(ap, f, out, c, n, j0, j1, bp);
  }
}

}  // namespace

const char* gram_kernel_name() { return detail::isa_name(detail::fma_isa()); }

void gram(const float* features, float* out, std::int64_t batch, std::int64_t c, std::int64_t n,
          float norm, int num_threads) {
  detail::check_gram_args("gram", features, nullptr, false, out, batch, c, n, norm);
  if (batch * c == 0) return;
  const int threads = cpu::resolve_num_threads(num_threads, cpu::Work::compute);
  const std::int64_t panels = (c + kPanel - 1) / kPanel, cp = panels * kPanel;
  // k block: the packed block (cp x kc floats) stays in L2 (~256 KiB) while the tiles reuse it.
  const std::int64_t kcb =
      std::clamp<std::int64_t>((std::int64_t{1} << 16) / cp / 16 * 16, 64, 2048);
  const std::int64_t by_size =
      std::max<std::int64_t>(1, c * c * n / (std::int64_t{1} << 22));  // ~4M FMAs a thread
  constexpr std::int64_t kRowBlock = 8;
  const std::int64_t row_blocks = (c + kRowBlock - 1) / kRowBlock;
  // Two ways to share one product between threads, picked by shape:
  // - split n (the reduction): each thread packs and multiplies its own k range of F into a
  //   private cp x cp triangle, and the partial triangles are summed at the end. Every value of F
  //   is packed once and each thread runs whole triangles (the most efficient tiles); the cost is
  //   one cp x cp partial a thread to zero and add. The right choice when c is small against n
  //   (VGG's early layers: a 64 x 64 triangle has only 20 row-block tiles, far too few to share).
  // - split the rows of the triangle: no partial sums, but each part packs the panels it needs,
  //   so F is packed more than once; kept for large c with short n, where the partials would
  //   cost more than they save.
  // Measured on a 2-core AVX-512 machine: the n split wins on the four VGG shapes (C=64..512,
  // N=224^2..28^2: 1.1-1.6x the row split) and down to ~200 columns a thread; the row split
  // wins for short n (C=512, N=196) and keeps large c from costing a cp x cp partial a thread.
  const bool split_k = threads > 1 && c <= 1024 && (n >= 4 * c || n >= 128 * threads);
  if (split_k) {
    const int workers = static_cast<int>(std::min<std::int64_t>(threads, by_size));
    // Parts of n taken from a shared counter (a few per worker for balance), multiples of 16
    // (whole in-register transposes).
    const std::int64_t parts_per = workers > 1 ? 4 : 1;
    const std::int64_t chunk = std::max<std::int64_t>(
        16, ((n + parts_per * workers - 1) / (parts_per * workers) + 15) / 16 * 16);
    const std::int64_t parts = std::max<std::int64_t>(1, (n + chunk - 1) / chunk);
    std::vector<float> partial(static_cast<std::size_t>(workers * cp * cp));
    std::vector<char> used(static_cast<std::size_t>(workers));
    struct State {
      std::vector<float> pack;
      float* acc;
    };
    for (std::int64_t b = 0; b < batch; ++b) {
      const float* f = features + b * c * n;
      float* g = out + b * c * c;
      std::fill(used.begin(), used.end(), 0);
      if (n > 0) {
        cpu::parallel_dynamic(
            parts, workers,
            [&](int w) {
              float* acc = partial.data() + w * cp * cp;
              std::fill(acc, acc + cp * cp, 0.f);
              used[static_cast<std::size_t>(w)] = 1;
              return State{std::vector<float>(static_cast<std::size_t>(cp * kcb)), acc};
            },
            [&](std::int64_t t, int, State& st) {
              gram_upper(f, c, n, t * chunk, std::min(n, (t + 1) * chunk), 0,
                         row_blocks * kRowBlock, kcb, st.pack.data(), st.acc);
            });
      }
      // Sum the partials, scale and mirror, tile by tile: each 16 x 16 tile is summed whole into
      // a local tile (vector loops over the padded partials), then written as rows of g above
      // the diagonal and, transposed, as rows below it. On the calling thread: a second
      // parallel section would cost another thread start and join (and, on a busy machine,
      // another wait for a core) for ~0.1 ms of work at C = 512.
      std::vector<const float*> accs;
      for (int w = 0; w < workers; ++w) {
        if (used[static_cast<std::size_t>(w)]) accs.push_back(partial.data() + w * cp * cp);
      }
      float tile[kPanel][kPanel];
      for (std::int64_t i0 = 0; i0 < c; i0 += kPanel) {
        const std::int64_t i1 = std::min(i0 + kPanel, c);
        for (std::int64_t j0 = i0; j0 < c; j0 += kPanel) {
          const std::int64_t j1 = std::min(j0 + kPanel, c);
          for (std::int64_t i = 0; i < kPanel; ++i) {
            for (std::int64_t j = 0; j < kPanel; ++j) tile[i][j] = 0.f;
            for (const float* a : accs) {
              const float* row = a + (i0 + i) * cp + j0;
              for (std::int64_t j = 0; j < kPanel; ++j) tile[i][j] += row[j];
            }
            for (std::int64_t j = 0; j < kPanel; ++j) tile[i][j] /= norm;
          }
          for (std::int64_t i = i0; i < i1; ++i) {
            for (std::int64_t j = std::max(i, j0); j < j1; ++j) g[i * c + j] = tile[i - i0][j - j0];
          }
          for (std::int64_t j = j0; j < j1; ++j) {
            for (std::int64_t i = i0; i < std::min(i1, j + 1); ++i) {
              g[j * c + i] = tile[i - i0][j - j0];
            }
          }
        }
      }
    }
    return;
  }
  // Row split: the rows of the upper triangle are cut into parts (blocks of 8 rows), balanced by
  // the tiles each row block has. Each part packs only the panels it needs.
  const auto work = [&](std::int64_t rb) { return panels - rb * kRowBlock / kPanel; };
  std::int64_t total = 0;
  for (std::int64_t rb = 0; rb < row_blocks; ++rb) total += work(rb);
  const int workers = static_cast<int>(std::min<std::int64_t>({threads, row_blocks, by_size}));
  // A few parts per thread, taken from a shared counter (a descheduled thread does not hold up
  // the others); each part packs the panels it needs, so not too many.
  const std::int64_t spans = std::min<std::int64_t>(workers > 1 ? 3 * workers : 1, row_blocks);
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
    cpu::parallel_dynamic(
        parts, workers, [&](int) { return std::vector<float>(static_cast<std::size_t>(cp * kcb)); },
        [&](std::int64_t t, int, std::vector<float>& pack) {
          {
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
        });
  }
}

void gram_backward(const float* features, const float* grad, float* out, std::int64_t batch,
                   std::int64_t c, std::int64_t n, float norm, int num_threads) {
  detail::check_gram_args("gram_backward", features, grad, true, out, batch, c, n, norm);
  const int threads = cpu::resolve_num_threads(num_threads, cpu::Work::compute);
  if (batch * c * n == 0) return;
  const std::int64_t cp = (c + kPanel - 1) / kPanel * kPanel;
  const std::int64_t kcb = std::min(c, kKcBwd);
  std::vector<float> s(static_cast<std::size_t>(c * c));
  std::vector<float> ap(static_cast<std::size_t>(cp * c));
  const int workers =
      static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(1, c * c * n >> 22)));
  const std::int64_t nc = std::clamp<std::int64_t>(
      ((n + 8 * workers - 1) / (8 * workers) + 47) / 48 * 48, 48, sym_block_cols(c));
  for (std::int64_t b = 0; b < batch; ++b) {
    // S = (dG + dG^T) / norm in 32 x 32 blocks (the transposed reads stay in a few pages), then
    // packed in panels of 16 rows per k block: by symmetry a row panel of S is its column panel.
    const float* dg = grad + b * c * c;
    constexpr std::int64_t kB = 32;
    for (std::int64_t i0 = 0; i0 < c; i0 += kB) {
      for (std::int64_t j0 = 0; j0 < c; j0 += kB) {
        for (std::int64_t i = i0; i < std::min(i0 + kB, c); ++i) {
          for (std::int64_t j = j0; j < std::min(j0 + kB, c); ++j) {
            s[static_cast<std::size_t>(i * c + j)] = (dg[i * c + j] + dg[j * c + i]) / norm;
          }
        }
      }
    }
    for (std::int64_t kb = 0; kb < c; kb += kcb) {
      pack_cols(s.data(), c, kb, std::min(kcb, c - kb), 0, c, ap.data() + kb * cp);
    }
    const float* f = features + b * c * n;
    float* o = out + b * c * n;
    // Threads take column blocks from a shared counter (no thread waits on a descheduled one),
    // at least 8 blocks a thread for balance, and never more threads than ~4M multiply-adds of
    // work each.
    const std::int64_t blocks = (n + nc - 1) / nc;
    cpu::parallel_dynamic(
        blocks, workers,
        [&](int) { return std::vector<float>(static_cast<std::size_t>(kcb * nc)); },
        [&](std::int64_t blk, int, std::vector<float>& bp) {
          sym_gemm(ap.data(), f, o, c, n, blk * nc, std::min(n, (blk + 1) * nc), bp.data());
        });
  }
}

}  // namespace cnnviz
