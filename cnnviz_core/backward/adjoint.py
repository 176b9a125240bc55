"""float32 adjoints run by onnxruntime: a convolution's input gradient is a convolution with
flipped kernels (stride 1) or a ConvTranspose with the same weights (other strides), which
onnxruntime's MLAS runs several times faster than NumPy's BLAS GEMM plus col2im on the CPUs
here (the NumPy path stays the reference and serves float64).

Sessions come from the model's :class:`~cnnviz_core.model.SessionFactory`, so they run on the
model's device, and are cached per (factory, shapes, geometry): each holds its weights as an
initializer (onnxruntime prepacks constant weights, ~10% faster than feeding them), found by
identity (a model's constants) or, for weights computed in the graph and fetched anew on each
call, by equal values; so repeated calls never rebuild a session."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ..geometry import Window
from ..model import SessionFactory, run_session

#: sessions kept, all keys together; each holds its own copy of the weights
_CACHE_SIZE = 128
#: (factory, shapes, geometry) -> [(weights, session)], most recently used last
_sessions: OrderedDict[tuple, list[tuple[np.ndarray, ort.InferenceSession]]] = OrderedDict()


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
    return _run(session, dy)


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
    return _run(session, dy)


def _cached(
    key: tuple, weights: np.ndarray, make: Callable[[], ort.InferenceSession]
) -> ort.InferenceSession:
    """The session for ``key`` (factory, shapes, geometry) and these weights, made on first
    use: the same array (a model's constants) or equal values (weights computed in the graph,
    fetched anew each call) find it; least recently used sessions are dropped."""
    entries = _sessions.setdefault(key, [])
    _sessions.move_to_end(key)
    found = next((e for e in entries if e[0] is weights), None) or next(
        (e for e in entries if e[0].dtype == weights.dtype and np.array_equal(e[0], weights)),
        None,
    )
    if found is None:
        try:
            found = (weights, make())
        except Exception:
            if not entries:  # no empty list left behind for the eviction to pop from
                del _sessions[key]
            raise
        entries.append(found)
        if cached_sessions() > _CACHE_SIZE:
            oldest = next(iter(_sessions))
            _sessions[oldest].pop(0)
            if not _sessions[oldest]:
                del _sessions[oldest]
    return found[1]


def cached_sessions() -> int:
    """How many adjoint sessions the cache holds (tests check repeated calls add none)."""
    return sum(len(entries) for entries in _sessions.values())


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


def _run(session: ort.InferenceSession, dy: np.ndarray) -> np.ndarray:
    """The adjoint session on ``dy`` (onnxruntime's failures as ModelRunError)."""
    feed = {"dy": np.ascontiguousarray(dy, np.float32)}
    return run_session(session, None, feed, f"a backward adjoint on a cotangent {dy.shape}")[0]
