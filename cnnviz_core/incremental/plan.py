"""The plan of incremental occlusion (Krypton: Nakandala, Kumar and Papakonstantinou, SIGMOD
2019, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations"): for every node of the ONNX graph, in topological order, the rectangle of its
output that an occluding window can change, and whether the node is computed on crops
(incremental) or on whole maps (full, the rest of the network as one sub-model).

Regions are tabulated per spatial axis: for every start ``a`` of the window's clamped input
region (``0 <= a <= H - wh``, or only those of the windows asked for) a tensor's region
starts at ``start[index of a]`` and has ONE size for all windows (the largest over all
starts, shifted inside the map), so a batch of windows has one crop shape per layer;
recomputing a few unchanged values stays exact. The axes are independent (a window's rows
only move rows), so the tables are 1-D.

Rules (input region -> output region): sliding windows (Conv, MaxPool, AveragePool) map
``[s, s + n)`` to the outputs whose receptive window meets it (kernel, stride, pads,
dilation, ceil mode); elementwise / channel-wise ops (ReLU-like, BN, LRN, with constants
broadcast over space) keep it; Add/Mul/Sum/Max/Concat over several changed maps take the
bounding box of their inputs' regions. Anything else (global pooling, Flatten, Gemm...)
needs the whole map: the network is computed in full from there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import graph
from ..geometry import Window

#: elementwise ops with one changed input whose constants broadcast over space
UNARY_OPS = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Clip", "Sigmoid",
        "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Erf", "Exp",
        "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Pow", "Add", "Sub", "Mul", "Div", "Sum",
        "Max", "Min", "Mean", "BatchNormalization", "LRN", "Dropout", "Identity",
        "ImageScaler",
    }
)  # fmt: skip

#: elementwise ops that may combine several changed maps (region: the bounding box)
MERGE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Concat"})

#: sliding-window ops computed on crops
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool"})

#: ops that need the whole map by nature (the head of a classifier): the network goes
#: full there without a warning
HEAD_OPS = frozenset(
    {
        "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Reshape", "Gemm",
        "MatMul", "Softmax", "LogSoftmax", "ReduceMean", "ReduceMax", "ReduceSum",
        "ReduceL2", "Squeeze", "Unsqueeze",
    }
)  # fmt: skip

INCREMENTAL = "incremental"
FULL = "full"


@dataclass
class Axis:
    """One spatial axis of a tensor's changed region: a size, and the start per input start."""

    size: int
    start: np.ndarray  # (A,) int64: per served window start (Plan.starts) on this axis
    extent: int  # the map's size on this axis


@dataclass
class Step:
    """One unit of incremental work: a head node (window op, unary or merge) and the chain of
    unary nodes fused after it, run as one small onnxruntime session on crops."""

    kind: str  # "window" | "unary" | "merge"
    nodes: list[onnx.NodeProto]
    inputs: list[str]  # changed (data) inputs of the head, in order
    output: str  # the tensor the chain produces
    axes: tuple[Axis, Axis]
    shape: tuple[int, ...]  # (C, H, W) of the output
    geometry: Window | None = None  # window steps: the op's window
    pad_value: float = 0.0
    flops_full: int = 0  # per image for the whole map (Conv heads)
    flops_region: int = 0  # per window for the computed region

    @property
    def name(self) -> str:
        return self.nodes[0].name or self.nodes[0].output[0]


@dataclass
class Plan:
    """Where each tensor changes, which steps run on crops, and the sub-model of the rest."""

    image_hw: tuple[int, int]
    window: tuple[int, int]
    starts: tuple[np.ndarray, np.ndarray]  # the clamped window starts served, per axis
    steps: list[Step]
    regions: dict[str, tuple[Axis, Axis]]  # changed tensors computed incrementally (+ input)
    frontier: list[str]  # tensors the full rest reads (materialized per window)
    rest_outputs: list[str]
    rest_nodes: list[onnx.NodeProto]
    switch: str | None  # the first node computed in full, and why
    switch_reason: str | None
    blocked: tuple[str, str] | None  # (op, node) of an unsupported op that forced full
    flops_naive: int  # per window: the whole network
    flops_incremental: int  # per window: crops + the full rest
    elements_per_window: int = 0  # float32 values held per window (crops, maps, the rest)
    layers: list[dict] = field(default_factory=list)
    #: spatial means of a changed map (GlobalAveragePool, ReduceMean over H, W): output ->
    #: (its input, output shape without the batch); updated per window from the region's
    #: values instead of materializing the map
    means: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        """Whether any step runs on crops (else the plan is the naive forward)."""
        return bool(self.steps)


class PlanError(Exception):
    """Internal: a node cannot be planned incrementally (the message says why)."""


def _axis_window(inp: Axis, g: Window, axis: int, out_extent: int, tau: float | None) -> Axis:
    k, s, pb = g.span(axis), g.stride[axis], g.begins[axis]
    lo = -(-(inp.start + pb - k + 1) // s)  # ceil division
    hi = (inp.start + inp.size - 1 + pb) // s
    lo, hi = np.maximum(lo, 0), np.minimum(hi, out_extent - 1)
    return _fit(lo, hi, out_extent, tau)


def _fit(lo: np.ndarray, hi: np.ndarray, extent: int, tau: float | None) -> Axis:
    """One size for all starts (the largest), each start shifted so the region fits the map;
    with ``tau`` the size is capped at ``tau * extent`` around the region's centre."""
    size = max(1, int((hi - lo + 1).max()))  # an empty region (stride > kernel) computes one
    start = lo
    if tau is not None:
        cap = max(1, math.ceil(tau * extent))
        if size > cap:
            start = lo + ((hi - lo + 1) - cap) // 2
            size = cap
    start = np.clip(start, 0, extent - size)
    return Axis(size, start.astype(np.int64), extent)


def _axis_union(axes: list[Axis], extent: int, tau: float | None) -> Axis:
    lo = np.min([a.start for a in axes], axis=0)
    hi = np.max([a.start + a.size - 1 for a in axes], axis=0)
    return _fit(lo, hi, extent, tau)


def conv_flops(node: onnx.NodeProto, weights: dict[str, np.ndarray], pixels: int) -> int:
    """Multiply-adds x 2 of a Conv over ``pixels`` output positions."""
    w = weights.get(node.input[1])
    if w is None:
        return 0
    return 2 * int(np.prod(w.shape)) * pixels


def dense_flops(node: onnx.NodeProto, shapes: dict, weights: dict[str, np.ndarray]) -> int:
    """2 x K x M of a Gemm / MatMul per image (its weight matrix's size)."""
    for name in node.input[1:2]:
        w = weights.get(name)
        if w is not None:
            return 2 * int(np.prod(w.shape))
    return 0


def _spatial_constant(value: np.ndarray) -> bool:
    """A constant operand that broadcasts over space (scalar or (C, 1, 1)-like)."""
    return value.ndim < 2 or all(d == 1 for d in value.shape[-2:])


def static_types(
    proto: onnx.ModelProto, input_name: str, image_chw: tuple[int, int, int]
) -> dict[str, tuple[int, graph.Shape | None]]:
    """Element types and shapes of every tensor for one image of ``image_chw``."""
    fixed = copy.deepcopy(proto)
    for inp in fixed.graph.input:
        if inp.name == input_name:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, (1, *image_chw)):
                d.Clear()
                d.dim_value = v
    del fixed.graph.value_info[:]
    return graph.tensor_types(graph.infer_shapes(fixed))


def build_plan(
    proto: onnx.ModelProto,
    input_name: str,
    image_chw: tuple[int, int, int],
    window: tuple[int, int],
    outputs: list[str],
    *,
    threshold: float = 0.5,
    tau: float | None = None,
    starts: tuple[np.ndarray, np.ndarray] | None = None,
    types: dict | None = None,
    weights: dict[str, np.ndarray] | None = None,
) -> Plan:
    """The incremental plan of ``proto`` (batch symbolic) for images of ``image_chw``,
    windows of ``window`` and the tensors ``outputs`` (scores, taps).

    Args:
        threshold: a node whose region covers more than this fraction of its map's area is
            computed in full, and so is everything after it that depends on it.
        tau: projective-field threshold (approximate): cap each region's side at ``tau`` x
            the map's side; None for exact.
        starts: the sorted distinct (clamped) window starts per axis the plan serves (rows,
            columns); default every start. Windows on a grid (stride 8...) keep the
            regions of strided layers aligned, so fewer values are recomputed.
        types, weights: :func:`static_types` and the initializers, when already known.
    """
    _, h, w = image_chw
    wh, ww = window
    if types is None:
        types = static_types(proto, input_name, image_chw)
    if weights is None:
        weights = graph.initializers(proto)
    if starts is None:
        starts = (np.arange(h - wh + 1, dtype=np.int64), np.arange(w - ww + 1, dtype=np.int64))
    float_input = types.get(input_name, (TensorProto.FLOAT, None))[0] == TensorProto.FLOAT

    def shape(name: str) -> tuple[int, ...] | None:
        s = types.get(name, (0, None))[1]
        if not s or not all(isinstance(d, int) and d > 0 for d in s):
            return None
        return tuple(int(d) for d in s[1:])

    nodes = graph.data_nodes(proto, input_name)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in proto.graph.output} | set(outputs)
    # tensors something reads: an optional output nobody reads (Dropout's mask) is no output
    read = {name for name in consumers if name} | graph_outputs

    regions: dict[str, tuple[Axis, Axis]] = {
        input_name: (
            Axis(wh, np.asarray(starts[0], np.int64), h),
            Axis(ww, np.asarray(starts[1], np.int64), w),
        )
    }
    data = {input_name}
    steps: list[Step] = []
    fused: set[int] = set()
    full_nodes: list[onnx.NodeProto] = []
    switch = reason = None
    blocked: tuple[str, str] | None = None
    flops_naive = flops_inc = 0
    layers: list[dict] = []
    means: dict[str, tuple[str, tuple[int, ...]]] = {}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)

    def go_full(node: onnx.NodeProto, why: str, unsupported: bool) -> None:
        nonlocal switch, reason, blocked
        full_nodes.append(node)
        if switch is None:
            switch, reason = node.name or node.output[0], why
        if unsupported and blocked is None:
            blocked = (node.op_type, node.name or node.output[0])

    for index, node in enumerate(nodes):
        if id(node) in fused:
            continue
        for o in node.output:
            if o:
                data.add(o)
        out_shape = shape(node.output[0])
        flops = 0
        if node.op_type == "Conv" and out_shape:
            flops = conv_flops(node, weights, int(np.prod(out_shape[1:])))  # 1-D convs too
        elif node.op_type in ("Gemm", "MatMul"):
            flops = dense_flops(node, types, weights)
        flops_naive += flops
        changed = [n for n in node.input if n in data]
        full_inputs = [n for n in changed if n not in regions]
        mean_shape = _spatial_mean(node, changed, regions, shape, weights, opset)
        if mean_shape is not None:
            means[node.output[0]] = (changed[0], mean_shape)
            layers.append(
                {
                    "node": node.name or node.output[0],
                    "op": node.op_type,
                    "mode": INCREMENTAL,
                    "region": None,
                    "map": mean_shape,
                    "flops": 0,
                }
            )
            continue
        try:
            if not float_input:
                raise PlanError("the model does not take float32 input")
            if full_inputs:
                raise PlanError("FULL_INPUT")
            if node.op_type in HEAD_OPS and node.op_type not in UNARY_OPS:
                raise PlanError("HEAD")
            if any(o in read for o in node.output[1:]):
                raise PlanError("an op with several outputs")
            if out_shape is None or len(out_shape) != 3:
                raise PlanError("its output is not a (C, H, W) map of known size")
            step = _head_step(node, changed, regions, shape, weights, tau)
        except PlanError as exc:
            why = str(exc)
            natural = why in ("FULL_INPUT", "HEAD")
            go_full(
                node,
                "reads a fully computed map"
                if why == "FULL_INPUT"
                else f"{node.op_type} needs the whole map"
                if why == "HEAD"
                else why,
                unsupported=not natural,
            )
            flops_inc += flops
            layers.append(
                {
                    "node": node.name or node.output[0],
                    "op": node.op_type,
                    "mode": FULL,
                    "region": None,
                    "map": out_shape,
                    "flops": flops,
                }
            )
            continue
        area = step.axes[0].size * step.axes[1].size
        if area > threshold * out_shape[1] * out_shape[2]:
            go_full(
                node,
                f"its region covers {area / (out_shape[1] * out_shape[2]):.0%} "
                f"of the map (threshold {threshold:.0%})",
                unsupported=False,
            )
            flops_inc += flops
            layers.append(
                {
                    "node": node.name or node.output[0],
                    "op": node.op_type,
                    "mode": FULL,
                    "region": (step.axes[0].size, step.axes[1].size),
                    "map": out_shape,
                    "flops": flops,
                }
            )
            continue
        # fuse the chain of unary ops that follow (single consumer, not an asked output)
        current = node.output[0]
        for later in nodes[index + 1 :] if node.op_type != "AveragePool" else ():
            users = consumers.get(current, [])
            if (
                len(users) != 1
                or users[0] is not later
                or current in graph_outputs
                or later.op_type not in UNARY_OPS
                or any(o in read for o in later.output[1:])
                or shape(later.output[0]) != shape(current)
                or not _unary_ok(later, current, data, weights)
            ):
                break
            step.nodes.append(later)
            fused.add(id(later))
            data.update(o for o in later.output if o)
            current = later.output[0]
        step.output = current
        step.flops_full = flops
        if flops and out_shape:
            step.flops_region = flops * area // (out_shape[1] * out_shape[2])
        flops_inc += step.flops_region
        regions[current] = step.axes
        steps.append(step)
        layers.append(
            {
                "node": step.name,
                "op": "+".join(n.op_type for n in step.nodes),
                "mode": INCREMENTAL,
                "region": (step.axes[0].size, step.axes[1].size),
                "map": out_shape,
                "flops": step.flops_region,
            }
        )

    frontier, rest = _rest(proto, outputs, set(regions) | set(means), full_nodes)
    elements = sum(2 * s.shape[0] * s.axes[0].size * s.axes[1].size for s in steps)
    for name in [*frontier, *(o for n in rest for o in n.output)]:
        size = shape(name)
        elements += int(np.prod(size)) if size else 0
    return Plan(
        image_hw=(h, w),
        window=window,
        starts=(regions[input_name][0].start, regions[input_name][1].start),
        steps=steps,
        regions=regions,
        frontier=frontier,
        rest_outputs=[o for o in outputs if o not in regions and o not in means],
        rest_nodes=rest,
        switch=switch,
        switch_reason=reason,
        blocked=blocked,
        flops_naive=flops_naive,
        flops_incremental=flops_inc,
        elements_per_window=elements,
        layers=layers,
        means=means,
    )


def _spatial_mean(
    node: onnx.NodeProto,
    changed: list[str],
    regions: dict[str, tuple[Axis, Axis]],
    shape: Callable[[str], tuple[int, ...] | None],
    weights: dict[str, np.ndarray],
    opset: int,
) -> tuple[int, ...] | None:
    """The output shape (no batch) of a mean over H and W of one changed map (GlobalAveragePool,
    or ReduceMean over axes 2 and 3), else None: such a mean changes by the window's region
    alone (the map's sum, minus the region's old values, plus its new ones)."""
    if len(changed) != 1 or changed[0] not in regions or len([o for o in node.output if o]) != 1:
        return None
    in_shape, out_shape = shape(changed[0]), shape(node.output[0])
    if in_shape is None or out_shape is None or len(in_shape) != 3:
        return None
    if node.op_type == "GlobalAveragePool":
        return out_shape
    if node.op_type != "ReduceMean" or node.input[0] != changed[0]:
        return None
    attrs = graph.attributes(node)
    if opset >= 18:
        axes_input = node.input[1] if len(node.input) > 1 else ""
        if not axes_input or axes_input not in weights:
            return None
        axes = [int(a) for a in np.asarray(weights[axes_input]).ravel()]
    else:
        axes = [int(a) for a in attrs.get("axes", [])]
    return out_shape if sorted(a % 4 for a in axes) == [2, 3] else None


def _unary_ok(node: onnx.NodeProto, changed: str, data: set[str], weights: dict) -> bool:
    """A unary elementwise node on ``changed``: every other input a space-broadcast constant
    (BatchNormalization's parameters are per channel by definition)."""
    if node.op_type not in UNARY_OPS:
        return False
    for name in node.input:
        if not name or name == changed:
            continue
        if name in data or name not in weights:
            return False
        if node.op_type != "BatchNormalization" and not _spatial_constant(weights[name]):
            return False
    return sum(1 for n in node.input if n == changed) == 1


def _head_step(
    node: onnx.NodeProto,
    changed: list[str],
    regions: dict[str, tuple[Axis, Axis]],
    shape,
    weights: dict[str, np.ndarray],
    tau: float | None,
) -> Step:
    op = node.op_type
    out_shape = shape(node.output[0])
    if op in WINDOW_OPS:
        if len(changed) != 1 or node.input[0] != changed[0]:
            raise PlanError(f"{op} whose weights depend on the image")
        if op == "Conv" and any(n not in weights for n in node.input[1:] if n):
            raise PlanError("Conv with weights that are not constants")
        in_shape = shape(node.input[0])
        if in_shape is None or len(in_shape) != 3:
            raise PlanError("input of unknown size")
        attrs = graph.attributes(node)
        if op == "MaxPool" and (attrs.get("storage_order", 0) or len(node.output) > 1):
            raise PlanError("MaxPool with indices")
        if op == "AveragePool" and any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise PlanError("dilated AveragePool")
        g = graph.node_window(node, in_shape[1:], weights)
        if g is None:
            raise PlanError("not a 2-D sliding window")
        src = regions[changed[0]]
        axes = (
            _axis_window(src[0], g, 0, out_shape[1], tau),
            _axis_window(src[1], g, 1, out_shape[2], tau),
        )
        pad_value = -np.inf if op == "MaxPool" else 0.0
        return Step("window", [node], list(changed), node.output[0], axes, out_shape, g, pad_value)
    if op in UNARY_OPS and len(changed) == 1 and _unary_ok(node, changed[0], set(changed), weights):
        return Step("unary", [node], list(changed), node.output[0], regions[changed[0]], out_shape)
    if op in MERGE_OPS and len(changed) >= 1:
        if op == "Concat":
            axis = graph.attributes(node).get("axis")
            if axis not in (1, -3):
                raise PlanError("Concat along a spatial axis")
            if any(n not in changed for n in node.input):
                raise PlanError("Concat of a constant")
        for name in node.input:
            if name in changed:
                s = shape(name)
                if s is None or s[1:] != out_shape[1:]:
                    raise PlanError(f"{op} that broadcasts a changed map")
            elif name and (name not in weights or not _spatial_constant(weights[name])):
                raise PlanError(f"{op} with an operand that varies over space")
        merged = [regions[n] for n in dict.fromkeys(changed)]
        axes = (
            _axis_union([a[0] for a in merged], out_shape[1], tau),
            _axis_union([a[1] for a in merged], out_shape[2], tau),
        )
        return Step("merge", [node], list(dict.fromkeys(changed)), node.output[0], axes, out_shape)
    raise PlanError(f"{op} cannot be computed on crops")


def _rest(
    proto: onnx.ModelProto,
    outputs: list[str],
    known: set[str],
    full_nodes: list[onnx.NodeProto],
) -> tuple[list[str], list[onnx.NodeProto]]:
    """The nodes that compute ``outputs`` from the incrementally known tensors (the frontier
    they read), in graph order."""
    producer = {o: n for n in proto.graph.node for o in n.output if o}
    inits = {i.name for i in proto.graph.initializer}
    needed: set[int] = set()
    frontier: list[str] = []
    stack = [o for o in outputs if o not in known]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in known:
            frontier.append(name)
            continue
        if name in inits or name not in producer:
            continue
        node = producer[name]
        if id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    order = [n for n in proto.graph.node if id(n) in needed]
    frontier.sort()
    return frontier, order


def rest_model(
    proto: onnx.ModelProto, plan: Plan, shapes: dict[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """The sub-model that runs the fully computed part: inputs = the frontier tensors with a
    symbolic batch, outputs = the asked tensors it computes."""
    used = {n for node in plan.rest_nodes for n in node.input}
    inits = [i for i in proto.graph.initializer if i.name in used]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shapes[name]])
        for name in plan.frontier
    ]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in plan.rest_outputs]
    g = helper.make_graph(list(plan.rest_nodes), "rest", inputs, outs, inits)
    model = helper.make_model(g, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def step_model(step: Step, weights: dict[str, np.ndarray], opsets) -> onnx.ModelProto:
    """A small model that runs a step on crops: inputs ``x0..`` (N, C, h, w) with symbolic
    batch and spatial dims, the window op with no padding (the crops carry it), the fused
    unary chain after it, output ``y``."""
    rename = {name: f"x{i}" for i, name in enumerate(step.inputs)}
    rename[step.output] = "y"
    nodes, inits, seen = [], [], set()
    for k, node in enumerate(step.nodes):
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = f"n{k}"
        del new.input[:]
        new.input.extend(rename.get(n, n) for n in node.input)
        del new.output[:]
        new.output.extend(rename.get(n, n) for n in node.output)
        if k == 0 and step.kind == "window":
            drop = ("pads", "auto_pad", "ceil_mode", "count_include_pad")
            keep = [a for a in node.attribute if a.name not in drop]
            del new.attribute[:]
            new.attribute.extend(keep)
            if node.op_type == "AveragePool":  # the crops hold the pads; divisor fixed later
                new.attribute.append(helper.make_attribute("count_include_pad", 1))
        for name in node.input:
            if name in weights and name not in seen:
                seen.add(name)
                inits.append(numpy_helper.from_array(weights[name], name))
        nodes.append(new)
    inputs = [
        helper.make_tensor_value_info(rename[n], TensorProto.FLOAT, ["N", None, "h", "w"])
        for n in step.inputs
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "step", inputs, [out], inits)
    model = helper.make_model(g, opset_imports=list(opsets))
    model.ir_version = 8
    return model
