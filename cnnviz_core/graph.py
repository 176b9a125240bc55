"""ONNX graph utilities: shapes, exposing tensors, batching, layer names and receptive-field
arithmetic (loading files safely lives in :mod:`cnnviz_core.loading`).

Everything here works on ``onnx.ModelProto`` and plain Python values; sessions and
preprocessing live in :mod:`cnnviz_core.model`.
"""

from __future__ import annotations

import ast
import copy
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .geometry import Window, needs_input_size

#: protobuf cannot serialize a message this large (ONNX shape inference serializes the model)
_PROTOBUF_LIMIT = 1 << 31

Shape = tuple  # entries: int (known), str (symbolic) or None (unknown)

#: ops that compute no values from the image (shape plumbing, constants)
NO_DATA_OPS = frozenset({"Shape", "Size", "Constant", "ConstantOfShape", "Range", "NonZero"})

#: ops whose output pixel (i, j) depends only on input pixel (i, j) of each input
POINTWISE_OPS = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Clip", "Sigmoid",
        "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Erf", "Exp",
        "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Pow", "Add", "Sub", "Mul", "Div", "Sum",
        "Max", "Min", "Mean", "Where", "BatchNormalization", "InstanceNormalization", "LRN",
        "Dropout", "Identity", "Cast", "Concat", "Softmax", "LogSoftmax", "ImageScaler",
        "Affine", "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip

#: ops that only move or relabel values (a tensor seen through them is the same data)
RESHAPE_OPS = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast"}
)

#: ops of QOperator-format quantized models (integer kernels, onnxruntime's QLinear* /
#: *Integer ops and their com.microsoft twins); QDQ models use Quantize/DequantizeLinear
QOPERATOR_OPS = frozenset(
    {
        "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd",
        "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
        "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax", "QLinearReduceMean",
        "QLinearWhere", "QLinearConvTranspose", "DynamicQuantizeLinear", "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat", "QAttention",
    }
)  # fmt: skip

#: the ops of a QDQ-quantized model's image path (fake quantization around float ops)
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

#: sliding-window ops (kernel, stride, pads, dilation)
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with shape information for every tensor that ONNX can infer.

    Inference is not strict: a node ONNX cannot infer (an unknown or custom op, an
    inconsistent shape) leaves its outputs' shapes unknown, silently, as expected. When ONNX
    cannot run inference on the model at all (a graph its inference rejects, or a model over
    protobuf's 2 GB limit), the model comes back as it is with a ``RuntimeWarning`` saying
    why: layer shapes and receptive fields are then unknown.
    """
    size = model.ByteSize()
    if size >= _PROTOBUF_LIMIT:
        warnings.warn(
            f"ONNX shape inference skipped: the model is {size / 2**30:.1f} GiB, over protobuf's "
            "2 GiB limit; layer shapes and receptive fields will be unknown",
            RuntimeWarning,
            stacklevel=2,
        )
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        warnings.warn(
            f"ONNX shape inference failed ({exc}); layer shapes and receptive fields will be "
            "unknown",
            RuntimeWarning,
            stacklevel=2,
        )
        return model


def dims(type_proto: onnx.TypeProto) -> Shape | None:
    """Shape of a tensor type: ints for known dims, names for symbolic ones, None if unknown
    (a negative value, as Paddle exports write -1 for a free dim, is unknown too)."""
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(
        (d.dim_value if d.dim_value >= 0 else None)
        if d.HasField("dim_value")
        else (d.dim_param or None)
        for d in tensor.shape.dim
    )


def tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int, Shape | None]]:
    """Map tensor name -> (ONNX elem_type, shape) for inputs, outputs, value_info, initializers."""
    graph = model.graph
    types: dict[str, tuple[int, Shape | None]] = {}
    for init in graph.initializer:
        types[init.name] = (init.data_type, tuple(init.dims))
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = (info.type.tensor_type.elem_type, dims(info.type))
    return types


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Constant tensors of the graph: initializers and Constant nodes' values."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def node_reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: its inputs, and for control flow (If, Loop, Scan) the outer
    tensors its branches or bodies use by name (a legacy torch export of LRN reads the
    pooled map inside an If)."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            names.extend(_captured(sub))
    return names


def _captured(sub: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads that it does not make itself (outer-scope captures)."""
    made = {i.name for i in sub.input} | {i.name for i in sub.initializer}
    out: list[str] = []
    for node in sub.node:
        out.extend(name for name in node_reads(node) if name not in made)
        made.update(node.output)
    return out


def data_nodes(model: onnx.ModelProto, source: str) -> list[onnx.NodeProto]:
    """Nodes (in graph order, which ONNX requires to be topological) whose outputs depend on
    tensor ``source`` (through their inputs or, for control flow, their branches)."""
    reached = {source}
    nodes = []
    for node in model.graph.node:
        if node.op_type in NO_DATA_OPS:
            continue
        if any(name in reached for name in node_reads(node)):
            nodes.append(node)
            reached.update(o for o in node.output if o)
    return nodes


def attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes as plain Python values (bytes decoded to str)."""
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


def torch_scope(node: onnx.NodeProto) -> str | None:
    """The PyTorch module path a node came from (dynamo exporter metadata), e.g.
    ``features.conv1``: the innermost name scope that belongs to a module, not to an op."""
    props = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(props.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or not isinstance(classes, list):
        return None
    if len(classes) != len(scopes):  # no class info: the last scope names the op itself
        return str(scopes[-2]) if len(scopes) > 1 and scopes[-2] else None
    for scope, kind in zip(reversed(scopes), reversed(classes)):
        if scope and not str(kind).startswith(("aten.", "prims.", "<")):
            return str(scope)
    return None


def softmax_input(model: onnx.ModelProto, output: str) -> str | None:
    """When ``output`` is a Softmax (seen through reshapes), the tensor it normalises: the
    pre-softmax class scores. None otherwise."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(output)
    while node is not None and node.op_type in RESHAPE_OPS:
        node = producers.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "Softmax" else None


def expose(
    model: onnx.ModelProto, names: Iterable[str], types: dict[str, tuple[int, Shape | None]]
) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the tensors ``names`` (graph surgery).

    ``types`` (from :func:`tensor_types` of the shape-inferred model) gives their element
    types. Only the asked tensors are added: exposed tensors stop the runtime from fusing
    the node that makes them, which costs speed.
    """
    out = copy.deepcopy(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name in present:
            continue
        elem_type = types.get(name, (onnx.TensorProto.FLOAT, None))[0]
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
        present.add(name)
    return out


# ---------------------------------------------------------------------------------------
# layouts

#: the Transpose a channels-last export (tf2onnx, Keras) puts after its NHWC input
NHWC_TO_NCHW = (0, 3, 1, 2)


def input_consumers(model: onnx.ModelProto, input_name: str) -> list[onnx.NodeProto]:
    """Nodes of the main graph that read tensor ``input_name``, in graph order."""
    return [node for node in model.graph.node if input_name in node.input]


def _is_channels_first_view(
    node: onnx.NodeProto, dims_nhwc: Sequence, consts: dict[str, np.ndarray]
) -> bool:
    """Whether ``node`` turns the (N, H, W, C) input into (N, C, H, W): a Transpose with perm
    (0, 3, 1, 2), or for one channel (what tf2onnx writes then) a Reshape to a constant
    (-1 | 0 | N, 1, H, W), the same bytes."""
    if node.op_type == "Transpose":
        return tuple(attributes(node).get("perm", ())) == NHWC_TO_NCHW
    if node.op_type != "Reshape" or dims_nhwc[3] != 1 or len(node.input) < 2:
        return False
    target = consts.get(node.input[1])
    height, width = dims_nhwc[1], dims_nhwc[2]
    return (
        target is not None
        and target.shape == (4,)
        and isinstance(height, int)
        and isinstance(width, int)
        and (int(target[0]) in (-1, 0) or target[0] == dims_nhwc[0])
        and [int(v) for v in target[1:]] == [1, height, width]
    )


def peel_channels_last(model: onnx.ModelProto, input_name: str) -> onnx.ModelProto | None:
    """A copy of a channels-last model whose input is channels-first, or None.

    tf2onnx and Keras exports declare an (N, H, W, C) input that a Transpose with perm
    (0, 3, 1, 2) turns into (N, C, H, W) (for one channel tf2onnx writes a Reshape to
    (-1, 1, H, W) instead). When every reader of ``input_name`` is such a node (and none of
    their outputs is a graph output), the copy declares the input as (N, C, H, W) (same
    name, symbolic dims kept) and drops those nodes: what read their outputs reads the
    input. Returns None otherwise (no such node, or the NHWC tensor is also read as it is).
    """
    consumers = input_consumers(model, input_name)
    outputs = {o.name for o in model.graph.output}
    inp = next(i for i in model.graph.input if i.name == input_name)
    dims_nhwc = dims(inp.type)
    if dims_nhwc is None or len(dims_nhwc) != 4:
        return None
    consts = initializers(model) if any(n.op_type == "Reshape" for n in consumers) else {}
    if not consumers or any(
        not _is_channels_first_view(node, dims_nhwc, consts) or node.output[0] in outputs
        for node in consumers
    ):
        return None
    out = copy.deepcopy(model)
    graph = out.graph
    peeled = {node.output[0] for node in consumers}
    kept = [
        node
        for node in graph.node
        if not (
            node.op_type in ("Transpose", "Reshape")
            and node.output[0] in peeled
            and input_name in node.input
        )
    ]
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in peeled:
                node.input[index] = input_name
    stale = [info for info in graph.value_info if info.name in peeled]
    for info in stale:
        graph.value_info.remove(info)
    inp = next(i for i in graph.input if i.name == input_name)
    dims_proto = [copy.deepcopy(d) for d in inp.type.tensor_type.shape.dim]
    del inp.type.tensor_type.shape.dim[:]
    inp.type.tensor_type.shape.dim.extend(dims_proto[axis] for axis in NHWC_TO_NCHW)
    return out


#: NCHW -> NHWC, the inverse of :data:`NHWC_TO_NCHW`
NCHW_TO_NHWC = (0, 2, 3, 1)
#: element-wise ops a layout Transpose commutes with (their other operands, if any, are
#: constants broadcast per channel, or tensors under the same Transpose)
_LAYOUT_FREE_UNARY = frozenset(
    {
        "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Clip", "Sigmoid", "HardSigmoid",
        "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Erf", "Exp", "Log", "Sqrt",
        "Reciprocal", "Neg", "Abs", "Dropout", "Identity", "Cast",
    }
)  # fmt: skip
_LAYOUT_FREE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu"})
_LAYOUT_REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"})


def channels_first_kept(model: onnx.ModelProto, input_name: str) -> onnx.ModelProto:
    """A copy of a model whose (N, H, W, C) input is read as it is (NHWC kept through the
    graph) that takes (N, C, H, W): a Transpose to NHWC is put after the input, then moved
    down the graph (through element-wise ops, per-channel constants re-laid out, and
    reductions over H and W) until it meets a Transpose back to NCHW and both vanish. The
    result computes the same function of the channels-first input; a Transpose that cannot
    move further stays (the graph stays exact, only that part of it keeps NHWC tensors).
    """
    out = copy.deepcopy(model)
    graph = out.graph
    inp = next(i for i in graph.input if i.name == input_name)
    dims_nhwc = [copy.deepcopy(d) for d in inp.type.tensor_type.shape.dim]
    del inp.type.tensor_type.shape.dim[:]
    inp.type.tensor_type.shape.dim.extend(dims_nhwc[axis] for axis in NHWC_TO_NCHW)
    nhwc = f"{input_name}__nhwc"
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == input_name:
                node.input[index] = nhwc
    first = onnx.helper.make_node(
        "Transpose", [input_name], [nhwc], perm=list(NCHW_TO_NHWC), name=f"{nhwc}_transpose"
    )
    graph.node.insert(0, first)
    while _sink_one_transpose(graph):
        pass
    _drop_unused(graph)
    del graph.value_info[:]
    return out


def _sink_one_transpose(graph: onnx.GraphProto) -> bool:
    """Move one layout Transpose one node down (or cancel it); False when none can move."""
    consts = {init.name: init for init in graph.initializer}
    for node in graph.node:  # Constant nodes too (the legacy torch exporter writes them)
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            consts[node.output[0]] = value
    outputs = {o.name for o in graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)
    for t in graph.node:
        perm = tuple(attributes(t).get("perm", ())) if t.op_type == "Transpose" else ()
        if perm != NCHW_TO_NHWC:  # only transposes to NHWC move (down to their inverse)
            continue
        for node in readers.get(t.output[0], []):
            if node.op_type == "Transpose":
                inner = tuple(attributes(node).get("perm", ()))
                if tuple(perm[i] for i in inner) == (0, 1, 2, 3) and node.output[0] not in outputs:
                    _rename_reads(graph, node.output[0], t.input[0])
                    graph.node.remove(node)
                    return True
                continue
            if node.output[0] in outputs or len(node.output) != 1:
                continue
            if _push_through(graph, t, node, perm, consts):
                return True
    return False


def _push_through(
    graph: onnx.GraphProto,
    t: onnx.NodeProto,
    node: onnx.NodeProto,
    perm: tuple[int, ...],
    consts: dict[str, onnx.TensorProto],
) -> bool:
    """Rewrite node(transpose(x)) as transpose(node'(x)) when node commutes with it."""
    moved = t.output[0]
    inputs = list(node.input)
    if node.op_type in _LAYOUT_FREE_UNARY:
        if any(name == moved for name in inputs[1:]):
            return False
        inputs[0] = t.input[0]
        perm_after = perm
    elif node.op_type in _LAYOUT_FREE_BINARY:
        twins = {
            n.output[0]: n.input[0]
            for n in graph.node
            if n.op_type == "Transpose" and tuple(attributes(n).get("perm", ())) == perm
        }
        for index, name in enumerate(inputs):
            if name == moved:
                inputs[index] = t.input[0]
            elif name in twins:  # another branch under the same Transpose (a residual Add)
                inputs[index] = twins[name]
            elif name in consts:
                value = numpy_helper.to_array(consts[name])
                if value.ndim > 4:
                    return False
                full = value.reshape((1,) * (4 - value.ndim) + value.shape)
                inverse = tuple(int(i) for i in np.argsort(perm))
                tensor = numpy_helper.from_array(
                    np.ascontiguousarray(full.transpose(inverse)), f"{name}__relaid_{t.name}"
                )
                graph.initializer.append(tensor)
                consts[tensor.name] = tensor
                inputs[index] = tensor.name
            else:
                return False
        perm_after = perm
    elif node.op_type in _LAYOUT_REDUCE and (len(inputs) == 1 or inputs[1] in consts):
        attrs = attributes(node)
        given = numpy_helper.to_array(consts[inputs[1]]) if len(inputs) > 1 else None
        axes = [int(a) % 4 for a in (given if given is not None else attrs.get("axes", range(4)))]
        mapped = sorted(perm[a] for a in axes)
        if attrs.get("keepdims", 1):
            perm_after = perm
        else:
            kept = [perm[a] for a in range(4) if a not in axes]
            if kept != sorted(kept):
                return False
            perm_after = ()
        for attr in node.attribute:
            if attr.name == "axes":
                del attr.ints[:]
                attr.ints.extend(mapped)
        if given is not None:  # axes as an input (opset 18): a re-laid copy
            tensor = numpy_helper.from_array(
                np.asarray(mapped, np.int64), f"{inputs[1]}__relaid_{t.name}"
            )
            graph.initializer.append(tensor)
            inputs[1] = tensor.name
        inputs[0] = t.input[0]
    else:
        return False
    del node.input[:]
    node.input.extend(inputs)
    if perm_after:
        name = node.output[0]
        moved_name = f"{name}__nhwc"
        node.output[0] = moved_name
        after = onnx.helper.make_node(
            "Transpose", [moved_name], [name], perm=list(perm_after), name=f"{name}_transpose"
        )
        graph.node.insert(list(graph.node).index(node) + 1, after)
        # the channels-first tensor keeps the user-visible name, the remaining NHWC readers
        # read ``NAME__nhwc``
        _swap_names(graph, name, moved_name)
    return True


def _swap_names(graph: onnx.GraphProto, a: str, b: str) -> None:
    for node in graph.node:
        for seq in (node.input, node.output):
            for index, name in enumerate(seq):
                if name == a:
                    seq[index] = b
                elif name == b:
                    seq[index] = a


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove Transposes whose outputs nothing reads (left behind by cancellations)."""
    changed = True
    while changed:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Transpose" and n.output[0] not in read]
        for node in dead:
            graph.node.remove(node)
        changed = bool(dead)


# ---------------------------------------------------------------------------------------
# batching


def make_batch_symbolic(model: onnx.ModelProto, input_name: str) -> onnx.ModelProto | None:
    """A copy of a model exported with a fixed batch of 1 whose batch dimension is symbolic.

    Rewrites the input and output batch dims to ``N``, drops the (now stale) intermediate
    shapes, and turns constant Reshape targets that hard-code the batch as 1 into 0 ("copy
    this dim from the input"). A Reshape with ``allowzero=1`` (what torch's dynamo exporter
    writes for ``x.reshape(1, -1)``) is rewritten too when its target has no 0: there the
    attribute changes nothing, so it is dropped before the 0 goes in. Returns None when the
    input's batch is already symbolic or larger than 1. The caller must check the result
    (see ``Model``) and fall back to a loop.
    """
    graph = model.graph
    inp = next(i for i in graph.input if i.name == input_name)
    batch_dim = inp.type.tensor_type.shape.dim
    if not batch_dim or not batch_dim[0].HasField("dim_value") or batch_dim[0].dim_value != 1:
        return None
    out = copy.deepcopy(model)
    graph = out.graph
    for info in [*graph.input, *graph.output]:
        if info.name in {i.name for i in graph.initializer}:
            continue
        shape = info.type.tensor_type.shape
        if shape.dim and shape.dim[0].HasField("dim_value") and shape.dim[0].dim_value == 1:
            shape.dim[0].Clear()
            shape.dim[0].dim_param = "N"
    del graph.value_info[:]

    consts = initializers(out)
    inits = {i.name: i for i in graph.initializer}
    on_data = {n.output[0] for n in data_nodes(out, input_name)}  # protobuf wrappers: no id()
    for node in graph.node:
        if node.op_type != "Reshape" or node.output[0] not in on_data or len(node.input) < 2:
            continue
        target = consts.get(node.input[1])
        if target is None or target.ndim != 1 or target.size == 0 or target[0] != 1:
            continue
        if attributes(node).get("allowzero", 0):
            if (target == 0).any():
                continue  # a real zero-sized dim: 0 cannot mean "copy" here
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)
        fixed = target.copy()
        fixed[0] = 0  # copy the batch dim of the data input
        name = f"{node.input[1]}__cnnviz_batch"
        if name not in inits:
            graph.initializer.append(numpy_helper.from_array(fixed, name))
            inits[name] = graph.initializer[-1]
        node.input[1] = name
    return out


# ---------------------------------------------------------------------------------------
# receptive fields


@dataclass(frozen=True)
class ReceptiveField:
    """Where an output pixel of a layer looks in the input image, per spatial axis (H, W).

    Output pixel (i, j) sees input rows ``offset[0] + i * stride[0]`` to
    ``offset[0] + i * stride[0] + size[0] - 1`` (and likewise columns). ``offset`` can be
    negative: the window then starts in the padding.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Input box ``(top, left, bottom, right)`` (inclusive) seen by output pixel (i, j)."""
        top = self.offset[0] + i * self.stride[0]
        left = self.offset[1] + j * self.stride[1]
        return top, left, top + self.size[0] - 1, left + self.size[1] - 1

    def center(self, i: int, j: int) -> tuple[float, float]:
        """Input coordinates of the centre of output pixel (i, j)'s receptive field."""
        top, left, bottom, right = self.window(i, j)
        return (top + bottom) / 2, (left + right) / 2


IDENTITY_FIELD = ReceptiveField((1, 1), (1, 1), (0, 0))


def node_window(
    node: onnx.NodeProto, spatial: Sequence[int] | None, weights: dict[str, np.ndarray]
) -> Window | None:
    """The 2-D sliding window of a Conv / pooling node (kernel from ``kernel_shape`` or the
    Conv's constant weights), or None when it is not 2-D or its SAME pads need an input size
    that is unknown."""
    attrs = attributes(node)
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type == "Conv" and node.input[1] in weights:
        kernel = list(weights[node.input[1]].shape[2:])
    if kernel is None or len(kernel) != 2:
        return None
    known = spatial is not None and all(isinstance(n, int) for n in spatial)
    if needs_input_size(attrs) and not known:
        return None
    return Window.from_onnx(attrs, kernel, spatial if known else None)


def _window_field(
    node: onnx.NodeProto, field: ReceptiveField, in_shape: Shape | None, weights: dict
) -> ReceptiveField | None:
    win = node_window(node, in_shape[2:] if in_shape and len(in_shape) == 4 else None, weights)
    if win is None:
        return None
    size = [field.size[a] + (win.span(a) - 1) * field.stride[a] for a in range(2)]
    offset = [field.offset[a] - win.begins[a] * field.stride[a] for a in range(2)]
    stride = [field.stride[a] * win.stride[a] for a in range(2)]
    return ReceptiveField((size[0], size[1]), (stride[0], stride[1]), (offset[0], offset[1]))


def _pad_field(node: onnx.NodeProto, field: ReceptiveField, consts: dict) -> ReceptiveField | None:
    attrs = attributes(node)
    pads = attrs.get("pads")
    if pads is None and len(node.input) > 1:
        pads = consts.get(node.input[1])
        if len(node.input) > 3 and node.input[3]:
            return None  # padding only some axes: rare, not worth guessing
    if pads is None or len(pads) != 8:
        return None
    top, left = int(pads[2]), int(pads[3])
    offset = (field.offset[0] - top * field.stride[0], field.offset[1] - left * field.stride[1])
    return ReceptiveField(field.size, field.stride, offset)


def _union(fields: Sequence[ReceptiveField]) -> ReceptiveField | None:
    """Field of a pixel that combines same-position pixels of several maps (Add, Concat)."""
    if len({f.stride for f in fields}) != 1:
        return None
    size, offset = [], []
    for axis in range(2):
        start = min(f.offset[axis] for f in fields)
        end = max(f.offset[axis] + f.size[axis] for f in fields)
        size.append(end - start)
        offset.append(start)
    return ReceptiveField((size[0], size[1]), fields[0].stride, (offset[0], offset[1]))


def receptive_fields(
    model: onnx.ModelProto, input_name: str, types: dict[str, tuple[int, Shape | None]]
) -> dict[str, ReceptiveField]:
    """Receptive field of every spatial (N, C, H, W) tensor computed from the image input.

    Tensors without spatial layout (after flattening or global pooling) or made by ops whose
    geometry is not a sliding window (Resize, ConvTranspose...) get no entry.
    """
    consts = initializers(model)
    fields = {input_name: IDENTITY_FIELD}
    for node in data_nodes(model, input_name):
        known = [fields[name] for name in node.input if name in fields]
        if not known:
            continue
        out_shape = types.get(node.output[0], (0, None))[1]
        if out_shape is not None and len(out_shape) != 4:
            continue
        if node.op_type in WINDOW_OPS:
            in_shape = types.get(node.input[0], (0, None))[1]
            field = _window_field(node, known[0], in_shape, consts)
        elif node.op_type == "Pad":
            field = _pad_field(node, known[0], consts)
        elif node.op_type in POINTWISE_OPS:
            field = _union(known)
        else:
            field = None
        if field is not None:
            for name in node.output:
                if name:
                    fields[name] = field
    return fields
