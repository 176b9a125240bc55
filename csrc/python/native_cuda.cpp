// pybind11 module cnnviz_core._native_cuda: bindings of the CUDA kernels. pybind11 arrays are host
// buffers only, so device tensors (torch, CuPy) come in as raw device pointers plus an element
// count; the caller keeps their owners alive until the stream has run the work. DeviceBuffer
// carries host NumPy arrays to the device and back (cnnviz_core.kernels does that for a model on
// CUDA whose tensors are NumPy arrays). Every kernel binding releases the GIL.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "cnnviz/cuda.hpp"
#include "cnnviz/relu.hpp"
#include "window_args.hpp"

namespace py = pybind11;

namespace {

using cnnviz::python::make_window;
using cnnviz::python::Pads;
using cnnviz::python::Pair;
using Ptr = std::uintptr_t;
using Release = py::call_guard<py::gil_scoped_release>;

/// A device address passed from Python as an int.
template <class T>
T* device(Ptr p) {
  return reinterpret_cast<T*>(p);
}
void* stream_of(Ptr p) { return reinterpret_cast<void*>(p); }

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("cnnviz_core._native_cuda.") + what + ": " +
                             cudaGetErrorString(err));
  }
}

cnnviz::OcclusionFill parse_fill(const std::string& kind) {
  if (kind == "constant") return cnnviz::OcclusionFill::constant;
  if (kind == "per_channel") return cnnviz::OcclusionFill::per_channel;
  if (kind == "image") return cnnviz::OcclusionFill::image;
  throw std::invalid_argument(
      "occlusion_batch: fill_kind must be 'constant', 'per_channel' or 'image', got '" + kind +
      "'");
}

/// Device memory owned by a Python object; freed when it is collected.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t nbytes) : nbytes_(nbytes) {
    check(cudaMalloc(&ptr_, std::max<std::size_t>(nbytes, 1)), "DeviceBuffer");
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  /// A buffer holding a copy of a C-contiguous host array.
  static std::unique_ptr<DeviceBuffer> upload(const py::array& a) {
    require_contiguous(a, "upload");
    auto buffer = std::make_unique<DeviceBuffer>(static_cast<std::size_t>(a.nbytes()));
    const void* src = a.data();
    py::gil_scoped_release release;
    check(cudaMemcpy(buffer->ptr_, src, buffer->nbytes_, cudaMemcpyHostToDevice), "upload");
    return buffer;
  }

  /// Copies the buffer into a writeable C-contiguous host array of the same size (waits for the
  /// work queued on the default stream).
  void download(py::array a) const {
    require_contiguous(a, "download");
    if (!a.writeable()) {
      throw std::invalid_argument("DeviceBuffer.download: the array is read-only");
    }
    if (static_cast<std::size_t>(a.nbytes()) != nbytes_) {
      throw std::invalid_argument("DeviceBuffer.download: the array holds " +
                                  std::to_string(a.nbytes()) + " bytes, the buffer " +
                                  std::to_string(nbytes_));
    }
    void* dst = a.mutable_data();
    py::gil_scoped_release release;
    check(cudaMemcpy(dst, ptr_, nbytes_, cudaMemcpyDeviceToHost), "download");
  }

  Ptr ptr() const { return reinterpret_cast<Ptr>(ptr_); }
  std::size_t nbytes() const { return nbytes_; }

 private:
  static void require_contiguous(const py::array& a, const char* fn) {
    if (!(a.flags() & py::array::c_style)) {
      throw std::invalid_argument(std::string("DeviceBuffer.") + fn +
                                  ": the array must be C-contiguous");
    }
  }

  void* ptr_ = nullptr;
  std::size_t nbytes_;
};

}  // namespace

PYBIND11_MODULE(_native_cuda, m) {
  m.doc() = "CUDA kernels of cnnviz on raw device pointers (private: use cnnviz_core.kernels).";
  m.attr("__version__") = CNNVIZ_VERSION;

  m.def("device_count", &cnnviz::cuda::device_count,
        "Number of usable CUDA devices; 0 without a device or driver.");
  m.def(
      "set_device", [](int index) { check(cudaSetDevice(index), "set_device"); },
      py::arg("index"), "Make device `index` current for this thread's next allocations and work.");

  py::class_<DeviceBuffer>(m, "DeviceBuffer",
                           "Device memory of nbytes bytes, freed with the object.")
      .def(py::init<std::size_t>(), py::arg("nbytes"))
      .def_static("upload", &DeviceBuffer::upload, py::arg("array"),
                  "A buffer holding a copy of a C-contiguous host array.")
      .def("download", &DeviceBuffer::download, py::arg("array"),
           "Copy the buffer into a writeable C-contiguous host array of its size (synchronizes "
           "with the default stream).")
      .def_property_readonly("ptr", &DeviceBuffer::ptr, "The device address, as an int.")
      .def_property_readonly("nbytes", &DeviceBuffer::nbytes);

  m.def(
      "relu_backward",
      [](Ptr x, Ptr g, Ptr out, std::int64_t n, const std::string& mode, float negative_slope,
         Ptr stream) {
        cnnviz::cuda::relu_backward(device<const float>(x), device<const float>(g),
                                    device<float>(out), n, cnnviz::parse_relu_mode(mode),
                                    negative_slope, stream_of(stream));
      },
      py::arg("x_ptr"), py::arg("g_ptr"), py::arg("out_ptr"), py::arg("n"), py::arg("mode"),
      py::arg("negative_slope") = 0.0f, py::arg("stream") = 0, Release(),
      R"doc(Enqueue the ReLU / LeakyReLU backward on n float32 elements of device memory.

x_ptr, g_ptr, out_ptr: device addresses (x_ptr may be 0 in deconvnet mode; out may equal x or g).
stream: a cudaStream_t as an int (0 = default stream). Returns without synchronizing.)doc");

  m.def(
      "relu_backward_clip",
      [](Ptr x, Ptr g, Ptr out, std::int64_t n, float lo, float hi, const std::string& mode,
         Ptr stream) {
        cnnviz::cuda::relu_backward_clip(device<const float>(x), device<const float>(g),
                                         device<float>(out), n, cnnviz::parse_relu_mode(mode), lo,
                                         hi, stream_of(stream));
      },
      py::arg("x_ptr"), py::arg("g_ptr"), py::arg("out_ptr"), py::arg("n"), py::arg("lo"),
      py::arg("hi"), py::arg("mode"), py::arg("stream") = 0, Release(),
      "Enqueue the Clip backward (gate lo < x < hi); otherwise as relu_backward.");

  m.def(
      "max_pool2d",
      [](Ptr x, Ptr y, Ptr switches, std::int64_t planes, std::int64_t h, std::int64_t w,
         const Pair& kernel, const Pair& stride, const Pads& pads, const Pair& dilation,
         bool ceil_mode, Ptr stream) {
        cnnviz::cuda::max_pool2d(device<const float>(x), device<float>(y),
                                 device<std::int64_t>(switches), planes, h, w,
                                 make_window(kernel, stride, pads, dilation), ceil_mode,
                                 stream_of(stream));
      },
      py::arg("x_ptr"), py::arg("y_ptr"), py::arg("switches_ptr"), py::arg("planes"),
      py::arg("h"), py::arg("w"), py::arg("kernel"), py::arg("stride"), py::arg("pads"),
      py::arg("dilation"), py::arg("ceil_mode") = false, py::arg("stream") = 0, Release(),
      "Enqueue max pooling of planes x h x w float32 values into y and int64 switches "
      "(switches_ptr may be 0); pads: (top, left, bottom, right).");

  m.def(
      "max_unpool2d",
      [](Ptr g, Ptr switches, Ptr out, std::int64_t planes, std::int64_t pooled_size,
         std::int64_t h, std::int64_t w, Ptr stream) {
        cnnviz::cuda::max_unpool2d(device<const float>(g), device<const std::int64_t>(switches),
                                   device<float>(out), planes, pooled_size, h, w,
                                   stream_of(stream));
      },
      py::arg("g_ptr"), py::arg("switches_ptr"), py::arg("out_ptr"), py::arg("planes"),
      py::arg("pooled_size"), py::arg("h"), py::arg("w"), py::arg("stream") = 0, Release(),
      "Enqueue the scatter-add of g to the switches of a zeroed planes x h x w map; switches "
      "outside [0, h * w) are skipped.");

  m.def(
      "im2col",
      [](Ptr x, Ptr cols, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
         const Pair& kernel, const Pair& stride, const Pads& pads, const Pair& dilation,
         Ptr stream) {
        cnnviz::cuda::im2col(device<const float>(x), device<float>(cols), n, c, h, w,
                             make_window(kernel, stride, pads, dilation), stream_of(stream));
      },
      py::arg("x_ptr"), py::arg("cols_ptr"), py::arg("n"), py::arg("c"), py::arg("h"),
      py::arg("w"), py::arg("kernel"), py::arg("stride"), py::arg("pads"), py::arg("dilation"),
      py::arg("stream") = 0, Release(),
      "Enqueue im2col of x (n, c, h, w) into cols (n, c * kh * kw, Ho * Wo).");

  m.def(
      "col2im",
      [](Ptr cols, Ptr x, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
         const Pair& kernel, const Pair& stride, const Pads& pads, const Pair& dilation,
         Ptr stream) {
        cnnviz::cuda::col2im(device<const float>(cols), device<float>(x), n, c, h, w,
                             make_window(kernel, stride, pads, dilation), stream_of(stream));
      },
      py::arg("cols_ptr"), py::arg("x_ptr"), py::arg("n"), py::arg("c"), py::arg("h"),
      py::arg("w"), py::arg("kernel"), py::arg("stride"), py::arg("pads"), py::arg("dilation"),
      py::arg("stream") = 0, Release(),
      "Enqueue col2im of cols (n, c * kh * kw, Ho * Wo) into x (n, c, h, w).");

  m.def(
      "occlusion_batch",
      [](Ptr image, std::int64_t c, std::int64_t h, std::int64_t w, Ptr positions,
         std::int64_t count, std::int64_t window_h, std::int64_t window_w, Ptr fill,
         const std::string& fill_kind, Ptr out, Ptr stream) {
        cnnviz::cuda::occlusion_batch(device<const float>(image), c, h, w,
                                      device<const std::int64_t>(positions), count, window_h,
                                      window_w, device<const float>(fill), parse_fill(fill_kind),
                                      device<float>(out), stream_of(stream));
      },
      py::arg("image_ptr"), py::arg("c"), py::arg("h"), py::arg("w"), py::arg("positions_ptr"),
      py::arg("count"), py::arg("window_h"), py::arg("window_w"), py::arg("fill_ptr"),
      py::arg("fill_kind"), py::arg("out_ptr"), py::arg("stream") = 0, Release(),
      "Enqueue the occlusion batch (count, c, h, w) of image (c, h, w); positions: int64 "
      "(count, 2); fill_kind: 'constant' (1 value), 'per_channel' (c) or 'image' (c, h, w).");

  m.def(
      "gram",
      [](Ptr features, Ptr out, std::int64_t batch, std::int64_t c, std::int64_t n, float norm,
         Ptr stream) {
        cnnviz::cuda::gram(device<const float>(features), device<float>(out), batch, c, n, norm,
                           stream_of(stream));
      },
      py::arg("features_ptr"), py::arg("out_ptr"), py::arg("batch"), py::arg("c"), py::arg("n"),
      py::arg("norm"), py::arg("stream") = 0, Release(),
      "Enqueue Gram matrices (batch, c, c) = F F^T / norm of F (batch, c, n).");

  m.def(
      "gram_backward",
      [](Ptr features, Ptr grad, Ptr out, std::int64_t batch, std::int64_t c, std::int64_t n,
         float norm, Ptr workspace, Ptr stream) {
        cnnviz::cuda::gram_backward(device<const float>(features), device<const float>(grad),
                                    device<float>(out), batch, c, n, norm,
                                    device<float>(workspace), stream_of(stream));
      },
      py::arg("features_ptr"), py::arg("grad_ptr"), py::arg("out_ptr"), py::arg("batch"),
      py::arg("c"), py::arg("n"), py::arg("norm"), py::arg("workspace_ptr") = 0,
      py::arg("stream") = 0, Release(),
      "Enqueue dF (batch, c, n) = (dG + dG^T) F / norm; workspace_ptr: batch * c * c floats of "
      "device memory, or 0 to allocate one on the stream.");
}
