"""float32 adjoints run by onnxruntime: a convolution's input gradient is a convolution with
flipped kernels (stride 1) or a ConvTranspose with the same weights (other strides), which
onnxruntime's MLAS runs several times faster than NumPy's BLAS GEMM plus col2im on the CPUs
here (the NumPy path stays the reference and serves float64).

Sessions come from the model's :class:`~cnnviz_core.model.SessionFactory`, so they run on the
model's device, and are cached per (factory, weights, geometry)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ..geometry import Window
from ..model import SessionFactory

#: sessions kept per (factory, weights, geometry); each holds its own copy of the weights
_CACHE_SIZE = 128
_sessions: OrderedDict[tuple, tuple[np.ndarray, ort.InferenceSession]] = OrderedDict()


def conv_input_grad(
    dy: np.ndarray,
    w: np.ndarray,
    win: Window,
    groups: int,
    input_hw: Sequence[int],
    sessions: SessionFactory,
) -> np.ndarray:
    """dL/dx of ``y = conv(x, w)`` for float32 ``dy`` (N, Co, Ho, Wo): ConvTranspose(dy, w)
    cropped to the input's (H, W) through ``output_padding``, run by a session of
    ``sessions`` (the model's factory)."""
    session = _cached(
        (sessions, w.shape, win, groups, tuple(input_hw), dy.shape[2:]),
        w,
        lambda: _adjoint_session(w, win, groups, input_hw, dy.shape[2:], sessions),
    )
    return session.run(None, {"dy": np.ascontiguousarray(dy, np.float32)})[0]


def matmul_constant(
    dy: np.ndarray, w: np.ndarray, sessions: SessionFactory, transpose: bool = False
) -> np.ndarray:
    """``dy @ w`` (or ``dy @ w.T``) for float32 ``dy`` (N, M) and constant weights ``w``:
    a dense layer's input gradient, run by onnxruntime like the convolution adjoints."""

    def make() -> ort.InferenceSession:
        k = w.T if transpose else w
        node = helper.make_node("MatMul", ["dy", "w"], ["dx"])
        graph = helper.make_graph(
            [node],
            "matmul_constant",
            [helper.make_tensor_value_info("dy", TensorProto.FLOAT, ["N", k.shape[0]])],
            [helper.make_tensor_value_info("dx", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.ascontiguousarray(k, np.float32), "w")],
        )
        return _session(graph, sessions)

    session = _cached((sessions, w.shape, "matmul", transpose), w, make)
    return session.run(None, {"dy": np.ascontiguousarray(dy, np.float32)})[0]


def _cached(
    key: tuple, weights: np.ndarray, make: Callable[[], ort.InferenceSession]
) -> ort.InferenceSession:
    """The session for ``key`` and these very weights (kept alive with the entry, so their
    id cannot be reused), made on first use; least recently used ones are dropped."""
    key = (id(weights), *key)
    entry = _sessions.get(key)
    if entry is None or entry[0] is not weights:
        entry = _sessions[key] = (weights, make())
        if len(_sessions) > _CACHE_SIZE:
            _sessions.popitem(last=False)
    _sessions.move_to_end(key)
    return entry[1]


def _adjoint_session(
    w: np.ndarray,
    win: Window,
    groups: int,
    input_hw: Sequence[int],
    output_hw: Sequence[int],
    sessions: SessionFactory,
) -> ort.InferenceSession:
    """A stride-1 convolution's adjoint is itself a convolution (flipped kernels, in and out
    channels swapped per group, pads (K-1)d - p), which onnxruntime runs about 3x faster
    than a ConvTranspose here; other strides use ConvTranspose."""
    pads = [win.span(a % 2) - 1 - p for a, p in enumerate(win.pads)]
    if win.stride != (1, 1) or min(pads) < 0:
        return _conv_transpose_session(w, win, groups, input_hw, output_hw, sessions)
    c_out, c_in_group = w.shape[:2]
    flipped = (
        np.asarray(w, np.float32)
        .reshape(groups, c_out // groups, c_in_group, *win.kernel)
        .transpose(0, 2, 1, 3, 4)
        .reshape(groups * c_in_group, c_out // groups, *win.kernel)[..., ::-1, ::-1]
    )
    node = helper.make_node(
        "Conv", ["dy", "w"], ["dx"], pads=pads, dilations=list(win.dilation), group=groups
    )
    return _one_node_session(node, np.ascontiguousarray(flipped), w.shape[0], output_hw, sessions)


def _conv_transpose_session(
    w: np.ndarray,
    win: Window,
    groups: int,
    input_hw: Sequence[int],
    output_hw: Sequence[int],
    sessions: SessionFactory,
) -> ort.InferenceSession:
    natural = win.transposed_output_size(output_hw)
    node = helper.make_node(
        "ConvTranspose",
        ["dy", "w"],
        ["dx"],
        strides=list(win.stride),
        pads=list(win.pads),
        dilations=list(win.dilation),
        group=groups,
        output_padding=[input_hw[a] - natural[a] for a in range(2)],
    )
    return _one_node_session(node, np.asarray(w, np.float32), w.shape[0], output_hw, sessions)


def _one_node_session(
    node: onnx.NodeProto,
    w: np.ndarray,
    channels: int,
    hw: Sequence[int],
    sessions: SessionFactory,
) -> ort.InferenceSession:
    """A session of one node reading ``dy`` (N, channels, *hw) and the constant ``w``."""
    graph = helper.make_graph(
        [node],
        "conv_input_grad",
        [helper.make_tensor_value_info("dy", TensorProto.FLOAT, ["N", channels, *hw])],
        [helper.make_tensor_value_info("dx", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return _session(graph, sessions)


def _session(graph: onnx.GraphProto, sessions: SessionFactory) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # many small sessions run one after another: idle threads that spin steal the cores
    return sessions(model, spin=False)
