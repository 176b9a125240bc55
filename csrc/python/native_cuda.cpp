// pybind11 module cnnviz_core._native_cuda: bindings of the CUDA kernels. pybind11 arrays are host
// buffers only, so device tensors (torch, CuPy) come in as raw device pointers plus an element
// count; the caller keeps their owners alive until the stream has run the work.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cnnviz/cuda.hpp"
#include "cnnviz/relu.hpp"

namespace py = pybind11;

namespace {

const float* in_ptr(std::uintptr_t p) { return reinterpret_cast<const float*>(p); }
float* out_ptr(std::uintptr_t p) { return reinterpret_cast<float*>(p); }
void* stream_ptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }

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
}
