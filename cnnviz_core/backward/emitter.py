"""The writer of emitted ONNX nodes: each rule's :meth:`~.registry.OpRule.emit` writes its VJP
into an :class:`Emitter` (unique names, initializers, opset-aware helpers); :mod:`.compile`
joins a model's forward, the seeds and the emitted backward into one graph."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, UnsupportedOpError

#: backward modes the emission covers (the ReLU-like rules read them)
EMITTED_MODES = ("gradient", "guided", "deconvnet")
#: lowest default-domain opset of an exported graph (ScatterElements with reduction="add" is
#: opset 16; older models are converted with onnx.version_converter)
MIN_OPSET = 17

Name = str


def emitted_mode(mode: object) -> str:
    """``mode`` checked to be one the emission covers (not a relevance mode); raises naming
    them."""
    if not isinstance(mode, str) or mode not in EMITTED_MODES:
        raise UnsupportedOpError(
            f"backward mode {mode!r} has no ONNX emission; compiled graphs cover "
            f"{', '.join(EMITTED_MODES)}: run this mode in the engine (cnnviz_core.backward)"
        )
    return mode


class Emitter:
    """Collects ONNX nodes and initializers with unique names at one opset.

    Args:
        opset: the default-domain opset the nodes are written for (at least
            :data:`MIN_OPSET`).
        prefix: prefix of every name it creates.
        taken: names already used in the graph the nodes join.
        constants: tensors of that graph that are constants (weights): rules may fold them
            (a convolution's flipped kernel).
    """

    def __init__(
        self,
        opset: int,
        prefix: str = "cnnviz",
        taken: Sequence[str] = (),
        constants: Collection[str] = (),
    ):
        if opset < MIN_OPSET:
            raise InputError(f"the emitter writes opset {MIN_OPSET} or later; got {opset}")
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.ops: set[str] = set()
        #: whether axis 0 of every data tensor is the batch (free in size): rules refuse
        #: shape-specialised maps along it
        self.batched = False
        #: whether to use only ops every ONNX runtime converts (exported files): no MaxUnpool,
        #: which OpenVINO's ONNX frontend lacks; onnxruntime-only graphs may clear it
        self.portable = True
        self.constants = frozenset(constants)
        self._taken = set(taken)
        self._count = 0
        self._consts: dict[tuple, str] = {}
        self._shapes: dict[str, str] = {}

    # ----------------------------------------------------------------------- primitives

    def fresh(self, hint: str) -> Name:
        """A new unique tensor name."""
        while True:
            self._count += 1
            name = f"{self.prefix}/{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def add(
        self, op_type: str, inputs: Sequence[Name], outputs: int = 1, **attrs: Any
    ) -> list[Name]:
        """Append one node; returns its output names (fresh)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.add_node(op_type, inputs, names, **attrs)
        return names

    def add_node(
        self, op_type: str, inputs: Sequence[Name], outputs: Sequence[Name], **attrs: Any
    ) -> None:
        """Append one node with given output names."""
        attrs = {k: v for k, v in attrs.items() if v is not None}
        name = f"{self.prefix}/{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name, **attrs))
        self.ops.add(op_type)

    def op(self, op_type: str, *inputs: Name, **attrs: Any) -> Name:
        """Append a one-output node; returns its output name."""
        return self.add(op_type, inputs, 1, **attrs)[0]

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "const") -> Name:
        """An initializer holding ``value`` (small ones are shared)."""
        array = np.array(value, dtype, order="C")  # 0-d stays 0-d (ascontiguousarray: 1-d)
        key = None
        if array.size <= 64:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values: Sequence[int]) -> Name:
        """A 1-D int64 initializer (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), np.int64).reshape(-1), np.int64, "ints")

    def scalar(self, value: float) -> Name:
        """A float32 scalar initializer."""
        return self.const(np.float32(value), np.float32, "scalar")

    # -------------------------------------------------------------------------- helpers

    def shape_of(self, x: Name) -> Name:
        """Shape(x), one node per tensor."""
        if x not in self._shapes:
            self._shapes[x] = self.op("Shape", x)
        return self._shapes[x]

    def reshape_like(self, x: Name, like: Name) -> Name:
        """``x`` reshaped to the (runtime) shape of ``like``."""
        return self.op("Reshape", x, self.shape_of(like))

    def zeros_like(self, like: Name) -> Name:
        """float32 zeros with the runtime shape of ``like``."""
        zero = numpy_helper.from_array(np.zeros(1, np.float32))
        return self.op("ConstantOfShape", self.shape_of(like), value=zero)

    def reduce(self, op_type: str, x: Name, axes: Sequence[int], keepdims: bool = True) -> Name:
        """ReduceSum / ReduceMax / ReduceMin / ReduceMean over ``axes`` (axes as an input from
        opset 13 for ReduceSum, 18 for the others)."""
        keep = int(keepdims)
        axes_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_input:
            return self.op(op_type, x, self.ints(axes), keepdims=keep)
        return self.op(op_type, x, axes=list(axes), keepdims=keep)

    def reduce_sum(self, x: Name, axes: Sequence[int], keepdims: bool = True) -> Name:
        """ReduceSum over ``axes`` (x itself when there are none)."""
        return self.reduce("ReduceSum", x, axes, keepdims) if len(axes) else x

    def unbroadcast(self, g: Name, g_shape: Sequence[int], shape: Sequence[int]) -> Name:
        """:func:`~.rules.common.unbroadcast` in ONNX: sum a broadcast result's cotangent
        ``g`` (of ``g_shape``) back to an operand's ``shape``."""
        extra = len(g_shape) - len(shape)
        if extra > 0:
            g = self.reduce_sum(g, list(range(extra)), keepdims=False)
            g_shape = g_shape[extra:]
        axes = [i for i, n in enumerate(shape) if n == 1 and g_shape[i] != 1]
        return self.reduce_sum(g, axes, keepdims=True) if axes else g

    def mul(self, a: Name, b: Name) -> Name:
        return self.op("Mul", a, b)

    def scale(self, x: Name, factor: float) -> Name:
        """x * factor (x itself for 1)."""
        return x if factor == 1.0 else self.mul(x, self.scalar(factor))

    def where(self, condition: Name, a: Name, b: Name) -> Name:
        """Where (any dtype); float tensors on the backward path use :meth:`masked` or
        :meth:`select`, which onnxruntime's CPU runs about 10x faster."""
        return self.op("Where", condition, a, b)

    def masked(self, x: Name, condition: Name) -> Name:
        """x where ``condition`` else 0, as x x Cast(condition): exact for finite float32 x
        (the factor is 0 or 1)."""
        return self.mul(x, self.op("Cast", condition, to=onnx.TensorProto.FLOAT))

    def select(self, condition: Name, a: Name, b: Name) -> Name:
        """Where(condition, a, b) for finite float32 tensors as two masked products (one of
        them an exact 0)."""
        return self.op("Add", self.masked(a, condition), self.masked(b, self.op("Not", condition)))

    def gated(self, passed: Name | None, dy: Name, mode: str, slope: float = 0.0) -> Name:
        """The ReLU-family backward in ONNX (:func:`~cnnviz_core.kernels.relu_backward`):
        ``passed`` the forward gate (boolean), ``slope`` the leak; deconvnet rectifies ``dy``
        alone, guided also zeroes negative ``dy``."""
        emitted_mode(mode)
        if mode == "deconvnet":
            return self.op("Relu", dy)
        assert passed is not None, "gradient and guided modes need the forward gate"
        if slope != 0:
            local = self.select(passed, dy, self.scale(dy, slope))
        else:
            local = self.masked(dy, passed)
        if mode == "guided":  # rectify the incoming signal dy
            return self.masked(local, self.op("Greater", dy, self.scalar(0.0)))
        return local

    def relu_from_output(self, y: Name, dy: Name, mode: str) -> Name:
        """ReLU's backward read from its output ``y`` >= 0: dy where y > 0 (:meth:`masked`),
        guided Relu(dy) where y > 0, deconvnet Relu(dy)."""
        emitted_mode(mode)
        if mode == "deconvnet":
            return self.op("Relu", dy)
        signal = self.op("Relu", dy) if mode == "guided" else dy
        return self.masked(signal, self.op("Greater", y, self.scalar(0.0)))

    def axis_matmul(self, x: Name, rank: int, axis: int, matrix: np.ndarray) -> Name:
        """A linear map along one axis: y[..., i, ...] = sum_j matrix[i, j] x[..., j, ...]
        (slices, pads, gathers and resizes are such maps; one-hot rows copy exactly)."""
        axis %= rank
        perm = [a for a in range(rank) if a != axis] + [axis]
        moved = x if axis == rank - 1 else self.op("Transpose", x, perm=perm)
        y = self.op("MatMul", moved, self.const(np.asarray(matrix).T, hint="axis_map"))
        if axis == rank - 1:
            return y
        return self.op("Transpose", y, perm=[int(i) for i in np.argsort(perm)])

    def transpose_window(
        self,
        dy: Name,
        weight: Name,
        kernel_spatial: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
        begins: Sequence[int],
        spatial: Sequence[int],
        out_spatial: Sequence[int],
        groups: int = 1,
    ) -> Name:
        """The adjoint of a sliding window: ConvTranspose(dy, weight) without pads, then the
        input's extent cut out (``begins`` dropped, zeros added where no window reached)."""
        y = self.op(
            "ConvTranspose",
            dy,
            weight,
            strides=list(stride),
            dilations=list(dilation),
            group=groups,
        )
        full = [
            (o - 1) * s + d * (k - 1) + 1
            for o, s, d, k in zip(out_spatial, stride, dilation, kernel_spatial)
        ]
        short = [max(b + n - f, 0) for b, n, f in zip(begins, spatial, full)]
        rank = 2 + len(spatial)
        if any(short):
            y = self.op("Pad", y, self.ints([0] * rank + [0, 0] + short), mode="constant")
        if any(begins) or any(b + n != f + s for b, n, f, s in zip(begins, spatial, full, short)):
            axes = list(range(2, rank))
            y = self.op(
                "Slice",
                y,
                self.ints(begins),
                self.ints([b + n for b, n in zip(begins, spatial)]),
                self.ints(axes),
            )
        return y
