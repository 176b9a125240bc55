// pybind11 module cnnviz_core._native: thin NumPy bindings of the CPU kernels. Arrays are used in
// place (no conversion, no copy): anything but a C-contiguous float32 ndarray is rejected with an
// error naming the argument, and the GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cnnviz/relu.hpp"

namespace py = pybind11;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

/// Returns `obj` as an array after checking that it is a C-contiguous float32 ndarray.
py::array checked_float32(const py::object& obj, const char* fn, const char* name) {
  const std::string where = std::string(fn) + ": " + name;
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(where + " must be a numpy.ndarray of float32, got " +
                         Py_TYPE(obj.ptr())->tp_name);
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::array_t<float>::check_(a)) {
    throw py::type_error(where + " must have dtype float32, got " +
                         std::string(py::str(a.dtype())) + " with shape " + shape_str(a) +
                         "; convert with numpy.ascontiguousarray(" + name +
                         ", dtype=numpy.float32)");
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(where + " must be C-contiguous, got a strided view with shape " +
                          shape_str(a) + "; copy with numpy.ascontiguousarray(" + name + ")");
  }
  return a;
}

void check_same_shape(const py::array& a, const py::array& b, const char* fn, const char* a_name,
                      const char* b_name) {
  const bool same = a.ndim() == b.ndim() && std::equal(a.shape(), a.shape() + a.ndim(), b.shape());
  if (!same) {
    throw py::value_error(std::string(fn) + ": " + a_name + " and " + b_name +
                          " must have the same shape, got " + shape_str(a) + " and " +
                          shape_str(b));
  }
}

/// The inputs and output buffer of one elementwise backward call, checked.
struct Buffers {
  py::array x, g, out;
};

Buffers prepare(const py::object& x_obj, const py::object& g_obj, const py::object& out_obj,
                const char* fn) {
  Buffers b{checked_float32(x_obj, fn, "x"), checked_float32(g_obj, fn, "g"), {}};
  check_same_shape(b.x, b.g, fn, "x", "g");
  if (out_obj.is_none()) {
    b.out = py::array_t<float>(std::vector<py::ssize_t>(b.x.shape(), b.x.shape() + b.x.ndim()));
    return b;
  }
  b.out = checked_float32(out_obj, fn, "out");
  check_same_shape(b.x, b.out, fn, "x", "out");
  if (!b.out.writeable()) throw py::value_error(std::string(fn) + ": out is read-only");
  // Elementwise kernels may write in place, but not into a shifted view of an input.
  const auto* o = static_cast<const char*>(b.out.data());
  const py::ssize_t bytes = b.out.nbytes();
  for (const py::array* in : {&b.x, &b.g}) {
    const auto* p = static_cast<const char*>(in->data());
    if (bytes > 0 && p != o && p < o + bytes && o < p + bytes) {
      throw py::value_error(std::string(fn) +
                            ": out partially overlaps an input; pass the input itself or a "
                            "separate buffer");
    }
  }
  return b;
}

py::array relu_backward(const py::object& x, const py::object& g, const std::string& mode,
                        float negative_slope, const py::object& out, int num_threads) {
  const cnnviz::ReluMode m = cnnviz::parse_relu_mode(mode);
  Buffers b = prepare(x, g, out, "relu_backward");
  const auto* xp = static_cast<const float*>(b.x.data());
  const auto* gp = static_cast<const float*>(b.g.data());
  auto* op = static_cast<float*>(b.out.mutable_data());
  const std::int64_t n = b.x.size();
  {
    py::gil_scoped_release release;
    cnnviz::relu_backward(xp, gp, op, n, m, negative_slope, num_threads);
  }
  return b.out;
}

py::array relu_backward_clip(const py::object& x, const py::object& g, float lo, float hi,
                             const std::string& mode, const py::object& out, int num_threads) {
  const cnnviz::ReluMode m = cnnviz::parse_relu_mode(mode);
  Buffers b = prepare(x, g, out, "relu_backward_clip");
  const auto* xp = static_cast<const float*>(b.x.data());
  const auto* gp = static_cast<const float*>(b.g.data());
  auto* op = static_cast<float*>(b.out.mutable_data());
  const std::int64_t n = b.x.size();
  {
    py::gil_scoped_release release;
    cnnviz::relu_backward_clip(xp, gp, op, n, m, lo, hi, num_threads);
  }
  return b.out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "CPU kernels of cnnviz (private: use cnnviz_core.kernels).";
  m.attr("__version__") = CNNVIZ_VERSION;

  m.def("relu_backward", &relu_backward, py::arg("x"), py::arg("g"), py::arg("mode"),
        py::arg("negative_slope") = 0.0f, py::arg("out") = py::none(), py::arg("num_threads") = 0,
        R"doc(Backward of ReLU / LeakyReLU in mode 'gradient', 'guided' or 'deconvnet'.

x, g (and out, when given) must be C-contiguous float32 arrays of one shape; out may be x or g
(in place). Returns out, or a new array of x's shape. num_threads = 0 uses all hardware threads.)doc");

  m.def("relu_backward_clip", &relu_backward_clip, py::arg("x"), py::arg("g"), py::arg("lo"),
        py::arg("hi"), py::arg("mode"), py::arg("out") = py::none(), py::arg("num_threads") = 0,
        R"doc(Backward of Clip (ReLU6: lo=0, hi=6): the forward gate is lo < x < hi.

Same arrays, modes and threads as relu_backward.)doc");

  m.def("default_num_threads", &cnnviz::default_num_threads,
        "Threads a kernel uses when called with num_threads=0 (the hardware concurrency).");
}
