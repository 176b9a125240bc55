// pybind11 module cnnviz_core._native: thin NumPy bindings of the CPU kernels. Arrays are used in
// place (no conversion, no copy): anything but a C-contiguous float32 ndarray (int64 for pooling
// switches) of the expected rank and shape is rejected with an error naming the argument, and the
// GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cnnviz/gram.hpp"
#include "cnnviz/im2col.hpp"
#include "cnnviz/occlusion.hpp"
#include "cnnviz/pool.hpp"
#include "cnnviz/relu.hpp"
#include "cnnviz/texture.hpp"
#include "window_args.hpp"

namespace py = pybind11;

namespace {

using Shape = std::vector<py::ssize_t>;

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

std::string shape_str(const py::array& a) { return shape_str(shape_of(a)); }

/// The elements of a checked array (see checked()), for a kernel.
template <class T>
const T* readable(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <class T>
T* writable(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

/// Whether `out` and `in` share memory; `in` itself counts only unless `same_allowed` (an
/// elementwise kernel may write in place).
bool overlaps(const py::array& out, const py::array& in, bool same_allowed) {
  const auto* o = static_cast<const char*>(out.data());
  const auto* p = static_cast<const char*>(in.data());
  if (same_allowed && p == o) return false;
  return out.nbytes() > 0 && p < o + out.nbytes() && o < p + in.nbytes();
}

/// Returns `obj` as an array after checking that it is a C-contiguous ndarray of T (float32 or
/// int64) in native byte order.
template <class T>
py::array checked(const py::object& obj, const char* fn, const char* name) {
  // The messages are built only on failure: str(dtype) costs microseconds, and kernels called
  // once per pixel (texture_match) would pay it on every call.
  const auto where = [&] { return std::string(fn) + ": " + name; };
  const auto dtype = [] { return std::string(py::str(py::dtype::of<T>())); };
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(where() + " must be a numpy.ndarray of " + dtype() + ", got " +
                         Py_TYPE(obj.ptr())->tp_name);
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::array_t<T>::check_(a)) {
    throw py::type_error(where() + " must have dtype " + dtype() + ", got " +
                         std::string(py::str(a.dtype())) + " with shape " + shape_str(a) +
                         "; convert with numpy.ascontiguousarray(" + name + ", dtype=numpy." +
                         dtype() + ")");
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(where() + " must be C-contiguous, got a strided view with shape " +
                          shape_str(a) + "; copy with numpy.ascontiguousarray(" + name + ")");
  }
  return a;
}

py::array checked_float32(const py::object& obj, const char* fn, const char* name) {
  return checked<float>(obj, fn, name);
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
  if (overlaps(b.out, b.x, true) || overlaps(b.out, b.g, true)) {
    throw py::value_error(std::string(fn) +
                          ": out partially overlaps an input; pass the input itself or a "
                          "separate buffer");
  }
  return b;
}

py::array relu_backward(const py::object& x, const py::object& g, const std::string& mode,
                        float negative_slope, const py::object& out, int num_threads) {
  const cnnviz::ReluMode m = cnnviz::parse_relu_mode(mode);
  Buffers b = prepare(x, g, out, "relu_backward");
  const auto* xp = readable<float>(b.x);
  const auto* gp = readable<float>(b.g);
  auto* op = writable<float>(b.out);
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
  const auto* xp = readable<float>(b.x);
  const auto* gp = readable<float>(b.g);
  auto* op = writable<float>(b.out);
  const std::int64_t n = b.x.size();
  {
    py::gil_scoped_release release;
    cnnviz::relu_backward_clip(xp, gp, op, n, m, lo, hi, num_threads);
  }
  return b.out;
}

void check_ndim(const py::array& a, py::ssize_t ndim, const char* fn, const char* name,
                const char* layout) {
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(fn) + ": " + name + " must be " + std::to_string(ndim) +
                          "-D " + layout + ", got shape " + shape_str(a));
  }
}

/// The output array of a kernel: a new one of `shape`, or `out_obj` after checking its dtype,
/// shape, contiguity and that it is writeable and shares no memory with `inputs`.
template <class T>
py::array output(const py::object& out_obj, const Shape& shape, const char* fn,
                 std::initializer_list<const py::array*> inputs) {
  if (out_obj.is_none()) return py::array_t<T>(shape);
  py::array out = checked<T>(out_obj, fn, "out");
  if (shape_of(out) != shape) {
    throw py::value_error(std::string(fn) + ": out must have shape " + shape_str(shape) + ", got " +
                          shape_str(out));
  }
  if (!out.writeable()) throw py::value_error(std::string(fn) + ": out is read-only");
  for (const py::array* in : inputs) {
    if (overlaps(out, *in, false)) {
      throw py::value_error(std::string(fn) + ": out must not overlap an input");
    }
  }
  return out;
}

py::tuple max_pool2d(const py::object& x_obj, const cnnviz::python::Pair& kernel,
                     const cnnviz::python::Pair& stride, const cnnviz::python::Pads& pads,
                     const cnnviz::python::Pair& dilation, bool ceil_mode, int num_threads,
                     const py::object& out_obj, const py::object& switches_obj) {
  const char* fn = "max_pool2d";
  py::array x = checked<float>(x_obj, fn, "x");
  check_ndim(x, 4, fn, "x", "(N, C, H, W)");
  const cnnviz::Window2d win = cnnviz::python::make_window(kernel, stride, pads, dilation);
  const std::int64_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
  const cnnviz::Extent2d o = cnnviz::window_output_extent(h, w, win, ceil_mode);
  const Shape shape{x.shape(0), x.shape(1), static_cast<py::ssize_t>(o.h),
                    static_cast<py::ssize_t>(o.w)};
  py::array y = output<float>(out_obj, shape, fn, {&x});
  py::array switches = output<std::int64_t>(switches_obj, shape, fn, {&x, &y});
  const auto* xp = readable<float>(x);
  auto* yp = writable<float>(y);
  auto* sp = writable<std::int64_t>(switches);
  {
    py::gil_scoped_release release;
    cnnviz::max_pool2d(xp, yp, sp, n * c, h, w, win, ceil_mode, num_threads);
  }
  return py::make_tuple(y, switches);
}

py::array max_unpool2d(const py::object& g_obj, const py::object& switches_obj,
                       const cnnviz::python::Pair& output_size, const py::object& out_obj,
                       int num_threads) {
  const char* fn = "max_unpool2d";
  py::array g = checked<float>(g_obj, fn, "g");
  py::array switches = checked<std::int64_t>(switches_obj, fn, "switches");
  check_ndim(g, 4, fn, "g", "(N, C, Ho, Wo)");
  check_same_shape(g, switches, fn, "g", "switches");
  const std::int64_t h = output_size[0], w = output_size[1];
  if (h < 1 || w < 1) {
    throw py::value_error(std::string(fn) + ": output_size must be >= 1, got (" +
                          std::to_string(h) + ", " + std::to_string(w) + ")");
  }
  py::array out = output<float>(out_obj, {g.shape(0), g.shape(1), h, w}, fn, {&g, &switches});
  const std::int64_t planes = g.shape(0) * g.shape(1), pooled = g.shape(2) * g.shape(3);
  const auto* gp = readable<float>(g);
  const auto* sp = readable<std::int64_t>(switches);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::max_unpool2d(gp, sp, op, planes, pooled, h, w, num_threads);
  }
  return out;
}

py::array im2col(const py::object& x_obj, const cnnviz::python::Pair& kernel,
                 const cnnviz::python::Pair& stride, const cnnviz::python::Pads& pads,
                 const cnnviz::python::Pair& dilation, const py::object& out_obj, int num_threads) {
  const char* fn = "im2col";
  py::array x = checked<float>(x_obj, fn, "x");
  check_ndim(x, 4, fn, "x", "(N, C, H, W)");
  const cnnviz::Window2d win = cnnviz::python::make_window(kernel, stride, pads, dilation);
  const std::int64_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
  const cnnviz::Extent2d o = cnnviz::window_output_extent(h, w, win, false);
  py::array out = output<float>(out_obj, {n, c * kernel[0] * kernel[1], o.h * o.w}, fn, {&x});
  const auto* xp = readable<float>(x);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::im2col(xp, op, n, c, h, w, win, num_threads);
  }
  return out;
}

py::array col2im(const py::object& cols_obj, const cnnviz::python::Pair& output_size,
                 const cnnviz::python::Pair& kernel, const cnnviz::python::Pair& stride,
                 const cnnviz::python::Pads& pads, const cnnviz::python::Pair& dilation,
                 const py::object& out_obj, int num_threads) {
  const char* fn = "col2im";
  py::array cols = checked<float>(cols_obj, fn, "cols");
  check_ndim(cols, 3, fn, "cols", "(N, C * kh * kw, Ho * Wo)");
  const cnnviz::Window2d win = cnnviz::python::make_window(kernel, stride, pads, dilation);
  const std::int64_t h = output_size[0], w = output_size[1];
  const cnnviz::Extent2d o = cnnviz::window_output_extent(h, w, win, false);
  const std::int64_t taps = kernel[0] * kernel[1];
  if (cols.shape(1) % taps != 0 || cols.shape(2) != o.h * o.w) {
    throw py::value_error(std::string(fn) + ": cols must have shape (N, C * " +
                          std::to_string(taps) + ", " + std::to_string(o.h * o.w) +
                          ") for this window and output_size, got " + shape_str(cols));
  }
  const std::int64_t n = cols.shape(0), c = cols.shape(1) / taps;
  py::array out = output<float>(out_obj, {n, c, h, w}, fn, {&cols});
  const auto* cp = readable<float>(cols);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::col2im(cp, op, n, c, h, w, win, num_threads);
  }
  return out;
}

py::array occlusion_batch(const py::object& image_obj, const py::object& positions_obj,
                          const cnnviz::python::Pair& window, const py::object& fill_obj,
                          const py::object& out_obj, int num_threads) {
  const char* fn = "occlusion_batch";
  py::array image = checked<float>(image_obj, fn, "image");
  check_ndim(image, 3, fn, "image", "(C, H, W)");
  py::array positions = checked<std::int64_t>(positions_obj, fn, "positions");
  if (positions.ndim() != 2 || positions.shape(1) != 2) {
    throw py::value_error(std::string(fn) + ": positions must have shape (P, 2) (top, left), got " +
                          shape_str(positions));
  }
  if (window[0] < 0 || window[1] < 0) {
    throw py::value_error(std::string(fn) + ": window must be >= 0, got (" +
                          std::to_string(window[0]) + ", " + std::to_string(window[1]) + ")");
  }
  py::array fill = checked<float>(fill_obj, fn, "fill");
  const std::int64_t c = image.shape(0), h = image.shape(1), w = image.shape(2);
  cnnviz::OcclusionFill kind;
  if (fill.ndim() == 0) {
    kind = cnnviz::OcclusionFill::constant;
  } else if (fill.ndim() == 1 && fill.shape(0) == c) {
    kind = cnnviz::OcclusionFill::per_channel;
  } else if (fill.ndim() == 3 && shape_of(fill) == shape_of(image)) {
    kind = cnnviz::OcclusionFill::image;
  } else {
    throw py::value_error(std::string(fn) + ": fill must be a 0-d array, (C,) = " +
                          shape_str(Shape{image.shape(0)}) + " or the image shape " +
                          shape_str(image) + ", got " + shape_str(fill));
  }
  const std::int64_t count = positions.shape(0);
  py::array out = output<float>(out_obj, {count, c, h, w}, fn, {&image, &positions, &fill});
  const auto* ip = readable<float>(image);
  const auto* pp = readable<std::int64_t>(positions);
  const auto* fp = readable<float>(fill);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::occlusion_batch(ip, c, h, w, pp, count, window[0], window[1], fp, kind, op,
                            num_threads);
  }
  return out;
}

py::array crop_batch(const py::object& source_obj, const py::object& corners_obj,
                     const cnnviz::python::Pair& size, const py::object& patch_obj,
                     const py::object& offsets_obj, const py::object& out_obj, int num_threads) {
  const char* fn = "crop_batch";
  py::array source = checked<float>(source_obj, fn, "source");
  check_ndim(source, 3, fn, "source", "(C, H, W)");
  const auto pairs = [&](const py::object& obj, const char* name) {
    py::array a = checked<std::int64_t>(obj, fn, name);
    if (a.ndim() != 2 || a.shape(1) != 2) {
      throw py::value_error(std::string(fn) + ": " + name +
                            " must have shape (B, 2) (row, column), got " + shape_str(a));
    }
    return a;
  };
  py::array corners = pairs(corners_obj, "corners");
  if (size[0] < 0 || size[1] < 0) {
    throw py::value_error(std::string(fn) + ": size must be >= 0, got (" +
                          std::to_string(size[0]) + ", " + std::to_string(size[1]) + ")");
  }
  const std::int64_t count = corners.shape(0), c = source.shape(0);
  py::array patch, offsets;
  const float* pp = nullptr;
  const std::int64_t* fp = nullptr;
  std::int64_t ph = 0, pw = 0;
  if (!patch_obj.is_none()) {
    patch = checked<float>(patch_obj, fn, "patch");
    check_ndim(patch, 4, fn, "patch", "(B, C, h, w)");
    if (patch.shape(0) != count || patch.shape(1) != c) {
      throw py::value_error(std::string(fn) + ": patch must have shape (" +
                            std::to_string(count) + ", " + std::to_string(c) +
                            ", h, w) (one per crop, the source's channels), got " +
                            shape_str(patch));
    }
    if (offsets_obj.is_none()) {
      throw py::value_error(std::string(fn) + ": a patch needs its offsets");
    }
    offsets = pairs(offsets_obj, "offsets");
    if (offsets.shape(0) != count) {
      throw py::value_error(std::string(fn) + ": offsets must have one row per crop (" +
                            std::to_string(count) + "), got " + shape_str(offsets));
    }
    pp = readable<float>(patch);
    fp = readable<std::int64_t>(offsets);
    ph = patch.shape(2);
    pw = patch.shape(3);
  }
  py::array out = output<float>(out_obj, {count, c, size[0], size[1]}, fn,
                                {&source, &corners, &patch, &offsets});
  const auto* sp = readable<float>(source);
  const auto* cp = readable<std::int64_t>(corners);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;  // std::invalid_argument reaches Python as ValueError
    cnnviz::crop_batch(sp, c, source.shape(1), source.shape(2), cp, count, size[0], size[1], pp,
                       ph, pw, fp, op, num_threads);
  }
  return out;
}

py::array gram(const py::object& features_obj, float norm, const py::object& out_obj,
               int num_threads) {
  const char* fn = "gram";
  py::array f = checked<float>(features_obj, fn, "features");
  check_ndim(f, 3, fn, "features", "(B, C, N)");
  const std::int64_t b = f.shape(0), c = f.shape(1), n = f.shape(2);
  py::array out = output<float>(out_obj, {b, c, c}, fn, {&f});
  const auto* fp = readable<float>(f);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::gram(fp, op, b, c, n, norm, num_threads);
  }
  return out;
}

py::array gram_backward(const py::object& features_obj, const py::object& grad_obj, float norm,
                        const py::object& out_obj, int num_threads) {
  const char* fn = "gram_backward";
  py::array f = checked<float>(features_obj, fn, "features");
  check_ndim(f, 3, fn, "features", "(B, C, N)");
  py::array g = checked<float>(grad_obj, fn, "grad");
  const std::int64_t b = f.shape(0), c = f.shape(1), n = f.shape(2);
  if (shape_of(g) != Shape{f.shape(0), f.shape(1), f.shape(1)}) {
    throw py::value_error(std::string(fn) + ": grad must have shape (B, C, C) = " +
                          shape_str(Shape{f.shape(0), f.shape(1), f.shape(1)}) + ", got " +
                          shape_str(g));
  }
  py::array out = output<float>(out_obj, {b, c, n}, fn, {&f, &g});
  const auto* fp = readable<float>(f);
  const auto* gp = readable<float>(g);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::gram_backward(fp, gp, op, b, c, n, norm, num_threads);
  }
  return out;
}

/// The checked sample, queries and weights of a texture search, and their sizes.
struct TextureArgs {
  py::array sample, queries, weights;
  std::int64_t c = 0, h = 0, w = 0, batch = 0, kh = 0, kw = 0;
};

TextureArgs texture_args(const py::object& sample_obj, const py::object& queries_obj,
                         const py::object& weights_obj, const char* fn) {
  TextureArgs a;
  a.sample = checked<float>(sample_obj, fn, "sample");
  a.queries = checked<float>(queries_obj, fn, "queries");
  a.weights = checked<float>(weights_obj, fn, "weights");
  check_ndim(a.sample, 3, fn, "sample", "(C, H, W)");
  check_ndim(a.queries, 4, fn, "queries", "(B, C, kh, kw)");
  check_ndim(a.weights, 3, fn, "weights", "(B, kh, kw)");
  a.c = a.sample.shape(0), a.h = a.sample.shape(1), a.w = a.sample.shape(2);
  a.batch = a.queries.shape(0), a.kh = a.queries.shape(2), a.kw = a.queries.shape(3);
  if (a.queries.shape(1) != a.c) {
    throw py::value_error(std::string(fn) + ": queries must have the sample's " +
                          std::to_string(a.c) + " channels, got shape " + shape_str(a.queries));
  }
  if (shape_of(a.weights) != Shape{a.queries.shape(0), a.queries.shape(2), a.queries.shape(3)}) {
    throw py::value_error(std::string(fn) + ": weights must have shape (B, kh, kw) = " +
                          shape_str(Shape{a.queries.shape(0), a.queries.shape(2),
                                          a.queries.shape(3)}) +
                          ", got " + shape_str(a.weights));
  }
  if (a.kh < 1 || a.kw < 1 || a.kh > a.h || a.kw > a.w) {
    throw py::value_error(std::string(fn) + ": the window " + std::to_string(a.kh) + " x " +
                          std::to_string(a.kw) + " must be >= 1 and fit in the sample " +
                          std::to_string(a.h) + " x " + std::to_string(a.w));
  }
  return a;
}

py::array texture_distances(const py::object& sample_obj, const py::object& queries_obj,
                            const py::object& weights_obj, const py::object& out_obj,
                            int num_threads) {
  const char* fn = "texture_distances";
  TextureArgs a = texture_args(sample_obj, queries_obj, weights_obj, fn);
  py::array out = output<float>(out_obj, {a.batch, a.h - a.kh + 1, a.w - a.kw + 1}, fn,
                                {&a.sample, &a.queries, &a.weights});
  const auto* sp = readable<float>(a.sample);
  const auto* qp = readable<float>(a.queries);
  const auto* wp = readable<float>(a.weights);
  auto* op = writable<float>(out);
  {
    py::gil_scoped_release release;
    cnnviz::texture_distances(sp, a.c, a.h, a.w, qp, wp, a.batch, a.kh, a.kw, op, num_threads);
  }
  return out;
}

py::tuple texture_match(const py::object& sample_obj, const py::object& queries_obj,
                        const py::object& weights_obj, float epsilon,
                        const py::object& uniforms_obj, int num_threads) {
  const char* fn = "texture_match";
  TextureArgs a = texture_args(sample_obj, queries_obj, weights_obj, fn);
  py::array uniforms = checked<double>(uniforms_obj, fn, "uniforms");
  if (shape_of(uniforms) != Shape{a.queries.shape(0)}) {
    throw py::value_error(std::string(fn) + ": uniforms must have shape (B,) = " +
                          shape_str(Shape{a.queries.shape(0)}) + ", got " + shape_str(uniforms));
  }
  std::vector<cnnviz::TextureMatch> picks(static_cast<std::size_t>(a.batch));
  const auto* sp = readable<float>(a.sample);
  const auto* qp = readable<float>(a.queries);
  const auto* wp = readable<float>(a.weights);
  const auto* up = readable<double>(uniforms);
  {
    py::gil_scoped_release release;
    cnnviz::texture_match(sp, a.c, a.h, a.w, qp, wp, a.batch, a.kh, a.kw, epsilon, up,
                          picks.data(), num_threads);
  }
  py::array_t<std::int64_t> index(a.batch), candidates(a.batch);
  py::array_t<float> best(a.batch), distance(a.batch);
  for (std::int64_t b = 0; b < a.batch; ++b) {
    index.mutable_at(b) = picks[b].index;
    best.mutable_at(b) = picks[b].best;
    distance.mutable_at(b) = picks[b].distance;
    candidates.mutable_at(b) = picks[b].candidates;
  }
  return py::make_tuple(index, best, distance, candidates);
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

  m.def("max_pool2d", &max_pool2d, py::arg("x"), py::arg("kernel"), py::arg("stride"),
        py::arg("pads"), py::arg("dilation"), py::arg("ceil_mode") = false,
        py::arg("num_threads") = 0, py::arg("out") = py::none(),
        py::arg("switches_out") = py::none(),
        R"doc(Max pooling of x (N, C, H, W) that also returns the argmax switches.

kernel, stride, dilation: (h, w); pads: (top, left, bottom, right). Returns (y, switches), both
(N, C, Ho, Wo); switches are int64 flat indices into each H x W input plane (-1 for a window with
no tap inside the plane). out / switches_out: optional C-contiguous float32 / int64 outputs of
that shape, written in place.)doc");

  m.def("max_unpool2d", &max_unpool2d, py::arg("g"), py::arg("switches"), py::arg("output_size"),
        py::arg("out") = py::none(), py::arg("num_threads") = 0,
        R"doc(Scatter-add g (N, C, Ho, Wo) to the switch positions of a zero (N, C, H, W) map.

switches: int64, g's shape, values in [-1, H * W) (-1 is skipped); output_size: (H, W).)doc");

  m.def(
      "im2col", &im2col, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("pads"),
      py::arg("dilation"), py::arg("out") = py::none(), py::arg("num_threads") = 0,
      R"doc(Unfold x (N, C, H, W) into cols (N, C * kh * kw, Ho * Wo) (torch unfold layout).)doc");

  m.def("col2im", &col2im, py::arg("cols"), py::arg("output_size"), py::arg("kernel"),
        py::arg("stride"), py::arg("pads"), py::arg("dilation"), py::arg("out") = py::none(),
        py::arg("num_threads") = 0,
        R"doc(Fold cols (N, C * kh * kw, Ho * Wo) into (N, C, H, W), summing overlaps (the adjoint
of im2col); output_size: (H, W).)doc");

  m.def("occlusion_batch", &occlusion_batch, py::arg("image"), py::arg("positions"),
        py::arg("window"), py::arg("fill"), py::arg("out") = py::none(),
        py::arg("num_threads") = 0,
        R"doc(Batch (P, C, H, W) of copies of image (C, H, W), each with one window filled.

positions: int64 (P, 2) (top, left); window: (h, w), clipped to the image; fill: float32, 0-d
(constant), (C,) (per channel) or (C, H, W) (a fill image).)doc");

  m.def("crop_batch", &crop_batch, py::arg("source"), py::arg("corners"), py::arg("size"),
        py::arg("patch") = py::none(), py::arg("offsets") = py::none(),
        py::arg("out") = py::none(), py::arg("num_threads") = 0,
        R"doc(Crops (B, C, h, w) of source (C, H, W) at corners (B, 2) (row, column), size (h, w),
each inside the source; with patch (B, C, ph, pw), patch[b] is written over crop b at offsets[b]
(clipped to the crop).)doc");

  m.def("gram", &gram, py::arg("features"), py::arg("norm"), py::arg("out") = py::none(),
        py::arg("num_threads") = 0,
        "Gram matrices F F^T / norm (B, C, C) of features F (B, C, N).");

  m.def("gram_backward", &gram_backward, py::arg("features"), py::arg("grad"), py::arg("norm"),
        py::arg("out") = py::none(), py::arg("num_threads") = 0,
        "Backward of gram: (grad + grad^T) F / norm, (B, C, N), for grad = dL/dG (B, C, C).");

  m.def("gram_kernel_name", &cnnviz::gram_kernel_name,
        "The Gram inner kernel picked for this CPU: 'avx512', 'avx2' or 'generic'.");

  m.def("texture_distances", &texture_distances, py::arg("sample"), py::arg("queries"),
        py::arg("weights"), py::arg("out") = py::none(), py::arg("num_threads") = 0,
        R"doc(Efros-Leung neighbourhood distances (B, H - kh + 1, W - kw + 1): the weighted SSD of
each query window (B, C, kh, kw) against every full window of sample (C, H, W), summed over
channels and divided by the query's weight sum; weights (B, kh, kw) >= 0, 0 = unknown tap.)doc");

  m.def("texture_match", &texture_match, py::arg("sample"), py::arg("queries"), py::arg("weights"),
        py::arg("epsilon"), py::arg("uniforms"), py::arg("num_threads") = 0,
        R"doc(texture_distances, then per query a pick among the candidates within (1 + epsilon) of
the best, the k-th in index order with k = floor(u * count) for u = uniforms[b] (float64 (B,)).
Returns (index int64, best float32, distance float32, candidates int64), each (B,); index is the
flat candidate position y * (W - kw + 1) + x.)doc");

  m.def("texture_kernel_name", &cnnviz::texture_kernel_name,
        "The texture-distance inner kernel picked for this CPU: 'avx512', 'avx2' or 'generic'.");

  m.def("default_num_threads", &cnnviz::default_num_threads,
        "Threads a memory-bound kernel uses when called with num_threads=0 (the hardware "
        "concurrency).");
  m.def("default_compute_threads", &cnnviz::default_compute_threads,
        "Threads the compute-bound Gram kernels use when called with num_threads=0 (one per "
        "physical core).");
}
