// Gram matrices of feature maps, the style / texture statistic of Gatys et al. (2015, "Texture
// Synthesis Using Convolutional Neural Networks"), and their backward pass. Features are
// contiguous float32 buffers in host memory, (batch, c, n) with n = H * W of an NCHW map; the
// CUDA twins are in cnnviz/cuda.hpp.
#pragma once

#include <cstdint>

namespace cnnviz {

/// out[b] = F[b] F[b]^T / norm for F (batch, c, n) and out (batch, c, c).
///
/// Only the blocks on and above the diagonal are multiplied (the product is symmetric); the
/// result is mirrored, so out[b] is exactly symmetric. The inner kernel is picked at run time
/// for the CPU (AVX-512, AVX2+FMA or generic), so one build runs on any x86-64 machine.
///
/// Args:
///   features: batch * c * n values.
///   out: batch * c * c values; must not overlap features.
///   batch, c, n: sizes (>= 0); n = 0 gives zeros.
///   norm: divisor, e.g. c * n or n; nonzero and finite.
///   num_threads: CPU threads, 0 = default_compute_threads() (one per physical core); threads
///     split n (partial triangles summed at the end) when n is long against c, else the rows of
///     the upper triangle (balanced by tile count); small products use fewer.
/// Throws std::invalid_argument for negative sizes, a null buffer or a zero / non-finite norm.
void gram(const float* features, float* out, std::int64_t batch, std::int64_t c, std::int64_t n,
          float norm, int num_threads = 0);

/// Backward of gram: out[b] = (grad[b] + grad[b]^T) F[b] / norm, the gradient of a loss L w.r.t.
/// F given grad = dL / dG.
///
/// Args:
///   features: F, batch * c * n values.
///   grad: dL / dG, batch * c * c values (need not be symmetric).
///   out: batch * c * n values; must not overlap the inputs.
///   batch, c, n, norm: as in gram.
///   num_threads: as in gram; threads split the n columns of F and out.
/// Throws std::invalid_argument as gram does.
void gram_backward(const float* features, const float* grad, float* out, std::int64_t batch,
                   std::int64_t c, std::int64_t n, float norm, int num_threads = 0);

/// Name of the inner kernel gram and gram_backward use on this CPU: "avx512", "avx2" or "generic".
const char* gram_kernel_name();

}  // namespace cnnviz
