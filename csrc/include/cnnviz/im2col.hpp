// im2col and its adjoint col2im over NCHW float32 images, so that a convolution is one GEMM
// (W (Co, C*kh*kw) @ cols) and its input gradient is one GEMM plus col2im:
//   dx = col2im(W^T @ dy), with dy seen as (Co, out.h * out.w) per image.
// Grouped convolutions: split the channels and call once per group. Buffers are contiguous and in
// host memory; the CUDA twins are in cnnviz/cuda.hpp.
#pragma once

#include <cstdint>

#include "cnnviz/window.hpp"

namespace cnnviz {

/// Unfolds x (n, c, h, w) into cols (n, c * kh * kw, out.h * out.w), out =
/// window_output_extent(h, w, window, false): row (ci * kh + i) * kw + j holds tap (i, j) of
/// channel ci at every output position, 0 where the tap falls in the padding (PyTorch's unfold).
///
/// num_threads: CPU threads, 0 = default_num_threads(); small inputs use fewer.
/// Throws std::invalid_argument for negative counts, a null buffer or a bad window.
void im2col(const float* x, float* cols, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, int num_threads = 0);

/// The adjoint of im2col (PyTorch's fold): x is zeroed, then every value of cols (n, c * kh * kw,
/// out.h * out.w) is added to the input pixel its tap reads; taps in the padding are dropped.
/// x (n, c, h, w) must not overlap cols. Same arguments and errors as im2col.
void col2im(const float* cols, float* x, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Window2d& window, int num_threads = 0);

}  // namespace cnnviz
