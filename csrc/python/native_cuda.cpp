// pybind11 module cnnviz_core._native_cuda: bindings of the CUDA kernels. pybind11 arrays are host
// buffers only, so device tensors (torch, CuPy) come in as raw device pointers plus an element
// count; the caller keeps their owners alive until the stream has run the work.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "cnnviz/cuda.hpp"
#include "cnnviz/relu.hpp"
#include "window_args.hpp"

namespace py = pybind11;

namespace {

const float* in_ptr(std::uintptr_t p) { return reinterpret_cast<const float*>(p); }
float* out_ptr(std::uintptr_t p) { return reinterpret_cast<float*>(p); }
void* stream_ptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }
const std::int64_t* in_index_ptr(std::uintptr_t p) {
  return reinterpret_cast<const std::int64_t*>(p);
}
std::int64_t* out_index_ptr(std::uintptr_t p) { return reinterpret_cast<std::int64_t*>(p); }

using cnnviz::python::make_window;
using cnnviz::python::Pads;
using cnnviz::python::Pair;

void relu_backward(std::uintptr_t x, std::uintptr_t g, std::uintptr_t out, std::int64_t n,
                   const std::string& mode, float negative_slope, std::uintptr_t stream) {
  const cnnviz::ReluMode m = cnnviz::parse_relu_mode(mode);
  py::gil_scoped_release release;
  cnnviz::cuda::relu_backward(in_ptr(x), in_ptr(g), out_ptr(out), n, m, negative_slope,
                              stream_ptr(stream));
}

void relu_backward_clip(std::uintptr_t x, std::uintptr_t g, std::uintptr_t out, std::int64_t n,
                        float lo, float hi, const std::string& mode, std::uintptr_t stream) {
  const cnnviz::ReluMode m = cnnviz::parse_relu_mode(mode);
  py::gil_scoped_release release;
  cnnviz::cuda::relu_backward_clip(in_ptr(x), in_ptr(g), out_ptr(out), n, m, lo, hi,
                                   stream_ptr(stream));
}

void max_pool2d(std::uintptr_t x, std::uintptr_t y, std::uintptr_t switches, std::int64_t planes,
                std::int64_t h, std::int64_t w, const Pair& kernel, const Pair& stride,
                const Pads& pads, const Pair& dilation, bool ceil_mode, std::uintptr_t stream) {
  const cnnviz::Window2d win = make_window(kernel, stride, pads, dilation);
  py::gil_scoped_release release;
  cnnviz::cuda::max_pool2d(in_ptr(x), out_ptr(y), out_index_ptr(switches), planes, h, w, win,
                           ceil_mode, stream_ptr(stream));
}

void max_unpool2d(std::uintptr_t g, std::uintptr_t switches, std::uintptr_t out,
                  std::int64_t planes, std::int64_t pooled_size, std::int64_t h, std::int64_t w,
                  std::uintptr_t stream) {
  py::gil_scoped_release release;
  cnnviz::cuda::max_unpool2d(in_ptr(g), in_index_ptr(switches), out_ptr(out), planes, pooled_size,
                             h, w, stream_ptr(stream));
}

void im2col(std::uintptr_t x, std::uintptr_t cols, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Pair& kernel, const Pair& stride, const Pads& pads,
            const Pair& dilation, std::uintptr_t stream) {
  const cnnviz::Window2d win = make_window(kernel, stride, pads, dilation);
  py::gil_scoped_release release;
  cnnviz::cuda::im2col(in_ptr(x), out_ptr(cols), n, c, h, w, win, stream_ptr(stream));
}

void col2im(std::uintptr_t cols, std::uintptr_t x, std::int64_t n, std::int64_t c, std::int64_t h,
            std::int64_t w, const Pair& kernel, const Pair& stride, const Pads& pads,
            const Pair& dilation, std::uintptr_t stream) {
  const cnnviz::Window2d win = make_window(kernel, stride, pads, dilation);
  py::gil_scoped_release release;
  cnnviz::cuda::col2im(in_ptr(cols), out_ptr(x), n, c, h, w, win, stream_ptr(stream));
}

cnnviz::OcclusionFill parse_fill(const std::string& kind) {
  if (kind == "constant") return cnnviz::OcclusionFill::constant;
  if (kind == "per_channel") return cnnviz::OcclusionFill::per_channel;
  if (kind == "image") return cnnviz::OcclusionFill::image;
  throw py::value_error("occlusion_batch: fill_kind must be 'constant', 'per_channel' or 'image', "
                        "got '" + kind + "'");
}

void occlusion_batch(std::uintptr_t image, std::int64_t c, std::int64_t h, std::int64_t w,
                     std::uintptr_t positions, std::int64_t count, std::int64_t window_h,
                     std::int64_t window_w, std::uintptr_t fill, const std::string& fill_kind,
                     std::uintptr_t out, std::uintptr_t stream) {
  const cnnviz::OcclusionFill kind = parse_fill(fill_kind);
  py::gil_scoped_release release;
  cnnviz::cuda::occlusion_batch(in_ptr(image), c, h, w, in_index_ptr(positions), count, window_h,
                                window_w, in_ptr(fill), kind, out_ptr(out), stream_ptr(stream));
}

void gram(std::uintptr_t features, std::uintptr_t out, std::int64_t batch, std::int64_t c,
          std::int64_t n, float norm, std::uintptr_t stream) {
  py::gil_scoped_release release;
  cnnviz::cuda::gram(in_ptr(features), out_ptr(out), batch, c, n, norm, stream_ptr(stream));
}

void gram_backward(std::uintptr_t features, std::uintptr_t grad, std::uintptr_t out,
                   std::int64_t batch, std::int64_t c, std::int64_t n, float norm,
                   std::uintptr_t workspace, std::uintptr_t stream) {
  py::gil_scoped_release release;
  cnnviz::cuda::gram_backward(in_ptr(features), in_ptr(grad), out_ptr(out), batch, c, n, norm,
                              out_ptr(workspace), stream_ptr(stream));
}

}  // namespace

PYBIND11_MODULE(_native_cuda, m) {
  m.doc() = "CUDA kernels of cnnviz on raw device pointers (private: use cnnviz_core.kernels).";
  m.attr("__version__") = CNNVIZ_VERSION;

  m.def("device_count", &cnnviz::cuda::device_count,
        "Number of usable CUDA devices; 0 without a device or driver.");

  m.def("relu_backward", &relu_backward, py::arg("x_ptr"), py::arg("g_ptr"), py::arg("out_ptr"),
        py::arg("n"), py::arg("mode"), py::arg("negative_slope") = 0.0f, py::arg("stream") = 0,
        R"doc(Enqueue the ReLU / LeakyReLU backward on n float32 elements of device memory.

x_ptr, g_ptr, out_ptr: device addresses (x_ptr may be 0 in deconvnet mode; out may equal x or g).
stream: a cudaStream_t as an int (0 = default stream). Returns without synchronizing.)doc");

  m.def("relu_backward_clip", &relu_backward_clip, py::arg("x_ptr"), py::arg("g_ptr"),
        py::arg("out_ptr"), py::arg("n"), py::arg("lo"), py::arg("hi"), py::arg("mode"),
        py::arg("stream") = 0,
        "Enqueue the Clip backward (gate lo < x < hi); otherwise as relu_backward.");

  m.def("max_pool2d", &max_pool2d, py::arg("x_ptr"), py::arg("y_ptr"), py::arg("switches_ptr"),
        py::arg("planes"), py::arg("h"), py::arg("w"), py::arg("kernel"), py::arg("stride"),
        py::arg("pads"), py::arg("dilation"), py::arg("ceil_mode") = false, py::arg("stream") = 0,
        "Enqueue max pooling of planes x h x w float32 values into y and int64 switches "
        "(switches_ptr may be 0); pads: (top, left, bottom, right).");

  m.def("max_unpool2d", &max_unpool2d, py::arg("g_ptr"), py::arg("switches_ptr"),
        py::arg("out_ptr"), py::arg("planes"), py::arg("pooled_size"), py::arg("h"), py::arg("w"),
        py::arg("stream") = 0,
        "Enqueue the scatter-add of g to the switches of a zeroed planes x h x w map; switches "
        "outside [0, h * w) are skipped.");

  m.def("im2col", &im2col, py::arg("x_ptr"), py::arg("cols_ptr"), py::arg("n"), py::arg("c"),
        py::arg("h"), py::arg("w"), py::arg("kernel"), py::arg("stride"), py::arg("pads"),
        py::arg("dilation"), py::arg("stream") = 0,
        "Enqueue im2col of x (n, c, h, w) into cols (n, c * kh * kw, Ho * Wo).");

  m.def("occlusion_batch", &occlusion_batch, py::arg("image_ptr"), py::arg("c"), py::arg("h"),
        py::arg("w"), py::arg("positions_ptr"), py::arg("count"), py::arg("window_h"),
        py::arg("window_w"), py::arg("fill_ptr"), py::arg("fill_kind"), py::arg("out_ptr"),
        py::arg("stream") = 0,
        "Enqueue the occlusion batch (count, c, h, w) of image (c, h, w); positions: int64 "
        "(count, 2); fill_kind: 'constant' (1 value), 'per_channel' (c) or 'image' (c, h, w).");

  m.def("gram", &gram, py::arg("features_ptr"), py::arg("out_ptr"), py::arg("batch"),
        py::arg("c"), py::arg("n"), py::arg("norm"), py::arg("stream") = 0,
        "Enqueue Gram matrices (batch, c, c) = F F^T / norm of F (batch, c, n).");

  m.def("gram_backward", &gram_backward, py::arg("features_ptr"), py::arg("grad_ptr"),
        py::arg("out_ptr"), py::arg("batch"), py::arg("c"), py::arg("n"), py::arg("norm"),
        py::arg("workspace_ptr") = 0, py::arg("stream") = 0,
        "Enqueue dF (batch, c, n) = (dG + dG^T) F / norm; workspace_ptr: batch * c * c floats of "
        "device memory, or 0 to allocate one on the stream.");

  m.def("col2im", &col2im, py::arg("cols_ptr"), py::arg("x_ptr"), py::arg("n"), py::arg("c"),
        py::arg("h"), py::arg("w"), py::arg("kernel"), py::arg("stride"), py::arg("pads"),
        py::arg("dilation"), py::arg("stream") = 0,
        "Enqueue col2im of cols (n, c * kh * kw, Ho * Wo) into x (n, c, h, w).");
}
