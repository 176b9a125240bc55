// CUDA twins of the Gram kernels (see cnnviz/cuda.hpp): a self-contained shared-memory tiled
// GEMM (no cuBLAS on the build machines). A block computes a 64 x 64 tile of the result with
// 16 x 16 threads of 4 x 4 values each, staging 16-deep slices of both operands in shared memory.
// gram launches only the tiles on and above the diagonal and stores each one twice (mirrored).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cnnviz/cuda.hpp"
#include "cnnviz/detail/gram_math.hpp"
#include "launch.cuh"

namespace cnnviz::cuda {

namespace {

constexpr int kTile = 64, kDepth = 16, kThreadsSide = 16, kPer = kTile / kThreadsSide;

/// Loads a kTile x kDepth slice of a row-major matrix m (rows x cols, leading dimension ld) at
/// (r0, k0) into s[k][r] (zero outside the matrix).
__device__ inline void load_rows(const float* m, std::int64_t ld, std::int64_t rows,
                                 std::int64_t cols, std::int64_t r0, std::int64_t k0,
                                 float (&s)[kDepth][kTile + 1]) {
  const int t = threadIdx.y * kThreadsSide + threadIdx.x;
  for (int e = t; e < kTile * kDepth; e += kThreadsSide * kThreadsSide) {
    const int r = e / kDepth, k = e % kDepth;
    const std::int64_t gr = r0 + r, gk = k0 + k;
    s[k][r] = gr < rows && gk < cols ? m[gr * ld + gk] : 0.f;
  }
}

/// Loads a kDepth x kTile slice of a row-major matrix m at (k0, c0) into s[k][c].
__device__ inline void load_cols(const float* m, std::int64_t ld, std::int64_t rows,
                                 std::int64_t cols, std::int64_t k0, std::int64_t c0,
                                 float (&s)[kDepth][kTile + 1]) {
  const int t = threadIdx.y * kThreadsSide + threadIdx.x;
  for (int e = t; e < kTile * kDepth; e += kThreadsSide * kThreadsSide) {
    const int k = e / kTile, c = e % kTile;
    const std::int64_t gk = k0 + k, gc = c0 + c;
    s[k][c] = gk < rows && gc < cols ? m[gk * ld + gc] : 0.f;
  }
}

/// out[b] = a[b] (m x k) times (TransB ? bm[b]^T with bm (n x k) : bm[b] (k x n)), scaled; when
/// Mirror (a square symmetric result), tiles below the diagonal exit and the others are also
/// stored transposed.
template <bool TransB, bool Mirror>
__global__ void gemm_kernel(const float* a, const float* bm, float* out, std::int64_t m,
                            std::int64_t n, std::int64_t k, float scale, std::int64_t a_batch,
                            std::int64_t b_batch, std::int64_t out_batch) {
  if (Mirror && blockIdx.x < blockIdx.y) return;
  __shared__ float as[kDepth][kTile + 1];
  __shared__ float bs[kDepth][kTile + 1];
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * kTile;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kTile;
  a += blockIdx.z * a_batch;
  bm += blockIdx.z * b_batch;
  out += blockIdx.z * out_batch;
  float acc[kPer][kPer] = {};
  for (std::int64_t k0 = 0; k0 < k; k0 += kDepth) {
    load_rows(a, k, m, k, r0, k0, as);
    if (TransB) {
      load_rows(bm, k, n, k, c0, k0, bs);
    } else {
      load_cols(bm, n, k, n, k0, c0, bs);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kDepth; ++kk) {
      float x[kPer], y[kPer];
#pragma unroll
      for (int i = 0; i < kPer; ++i) x[i] = as[kk][threadIdx.y + i * kThreadsSide];
#pragma unroll
      for (int j = 0; j < kPer; ++j) y[j] = bs[kk][threadIdx.x + j * kThreadsSide];
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
#pragma unroll
        for (int j = 0; j < kPer; ++j) acc[i][j] += x[i] * y[j];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const std::int64_t r = r0 + threadIdx.y + i * kThreadsSide;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const std::int64_t c = c0 + threadIdx.x + j * kThreadsSide;
      if (r < m && c < n) {
        const float v = acc[i][j] * scale;
        out[r * n + c] = v;
        if (Mirror) out[c * n + r] = v;
      }
    }
  }
}

/// s[b] = (g[b] + g[b]^T) * scale, c x c each.
__global__ void symmetrize_kernel(const float* g, float* s, std::int64_t count, std::int64_t c,
                                  float scale) {
  for (std::int64_t e = impl::first_index(); e < count; e += impl::grid_stride()) {
    const std::int64_t plane = c * c, b = e / plane, at = e % plane;
    const std::int64_t i = at / c, j = at % c;
    s[e] = (g[b * plane + i * c + j] + g[b * plane + j * c + i]) * scale;
  }
}

dim3 grid_of(std::int64_t rows, std::int64_t cols, std::int64_t batch, const char* fn) {
  const std::int64_t gx = (cols + kTile - 1) / kTile, gy = (rows + kTile - 1) / kTile;
  if (gx > 0x7fffffff || gy > 65535 || batch > 65535) {
    throw std::invalid_argument(std::string("cnnviz::cuda::") + fn +
                                ": sizes exceed the CUDA grid limits");
  }
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(batch));
}

}  // namespace

void gram(const float* features, float* out, std::int64_t batch, std::int64_t c, std::int64_t n,
          float norm, void* stream) {
  detail::check_gram_args("cuda::gram", features, nullptr, false, out, batch, c, n, norm);
  if (batch * c == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const dim3 block(kThreadsSide, kThreadsSide);
  gemm_kernel<true, true><<<grid_of(c, c, batch, "gram"), block, 0, s>>>(
      features, features, out, c, c, n, 1.f / norm, c * n, c * n, c * c);
  impl::check_launch("gram");
}

void gram_backward(const float* features, const float* grad, float* out, std::int64_t batch,
                   std::int64_t c, std::int64_t n, float norm, float* workspace, void* stream) {
  detail::check_gram_args("cuda::gram_backward", features, grad, true, out, batch, c, n, norm);
  if (batch * c * n == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  float* sym = workspace;
  if (sym == nullptr) {
    impl::check_call(cudaMallocAsync(reinterpret_cast<void**>(&sym),
                                     sizeof(float) * batch * c * c, s),
                     "gram_backward");
  }
  const std::int64_t count = batch * c * c;
  symmetrize_kernel<<<impl::grid_for(count), impl::kBlock, 0, s>>>(grad, sym, count, c,
                                                                   1.f / norm);
  impl::check_launch("gram_backward");
  const dim3 block(kThreadsSide, kThreadsSide);
  gemm_kernel<false, false><<<grid_of(c, n, batch, "gram_backward"), block, 0, s>>>(
      sym, features, out, c, n, c, 1.f, c * c, c * n, c * n);
  impl::check_launch("gram_backward");
  if (workspace == nullptr) impl::check_call(cudaFreeAsync(sym, s), "gram_backward");
}

}  // namespace cnnviz::cuda
