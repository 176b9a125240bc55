"""Reverse-mode pass over an ONNX graph: forward values from onnxruntime (taps), backward in
NumPy and the native kernels, one rule per op (see :mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .. import graph
from ..errors import InputError, UnsupportedOpError
from ..model import Model
from .registry import MODES, NodeCall, OpRule, make_call, rule_for


@dataclass(frozen=True)
class BackwardPlan:
    """The nodes between a source tensor and the seed tensors, with their rules, checked once.

    Attributes:
        nodes: the nodes in topological order, each with its rule.
        source: the tensor gradients flow to (the model input by default).
        seeds: tensors where cotangents enter.
        opset: the model's default-domain opset.
        device: the model's device, handed to the rules (and so to the kernels).
    """

    nodes: tuple[tuple[onnx.NodeProto, OpRule], ...]
    source: str
    seeds: tuple[str, ...]
    opset: int
    device: str = "cpu"

    @property
    def tensors(self) -> list[str]:
        """Every tensor the planned rules touch (by value or by shape)."""
        values, shapes = self.reads()
        return values + shapes

    def reads(self) -> tuple[list[str], list[str]]:
        """(tensors whose values the rules read, tensors whose shapes alone they need).

        Inputs at a rule's ``constant_inputs`` are always values; other inputs and the
        outputs follow the rule's ``reads_inputs`` / ``reads_outputs``. Outputs nothing reads
        (say, an unused Dropout mask, which onnxruntime may not expose) are left out."""
        consumed = {i for node, _ in self.nodes for i in node.input} | set(self.seeds)
        values: dict[str, None] = {self.source: None}  # ordered sets
        shapes: dict[str, None] = {}
        for node, rule in self.nodes:
            for k, name in enumerate(node.input):
                if name:
                    wanted = rule.reads_inputs or k in rule.constant_inputs
                    (values if wanted else shapes)[name] = None
            for k, name in enumerate(node.output):
                if name and (k == 0 or name in consumed):
                    (values if rule.reads_outputs else shapes)[name] = None
        for name in self.seeds:
            shapes[name] = None
        return list(values), [name for name in shapes if name not in values]


def plan_backward(model: Model, seeds: Sequence[str], source: str | None = None) -> BackwardPlan:
    """Plan the pass from ``seeds`` (layer names or aliases) back to ``source`` (default: the
    model input). Raises :class:`UnsupportedOpError` naming the op and node before any work
    when a node on the path has no rule."""
    opset = next((o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    source = model.input_name if source in (None, model.input_name) else model.tensor_name(source)
    seed_tensors = tuple(dict.fromkeys(model.tensor_name(s) for s in seeds))
    forward = graph.data_nodes(model.runnable, source)
    # keep the nodes that both depend on the source and lead to a seed
    needed = set(seed_tensors)
    path = []
    for node in reversed(forward):
        if any(o in needed for o in node.output):
            path.append(node)
            needed.update(i for i in node.input if i)
    if not any(source in node.input for node in path):
        raise InputError(f"no path from {source!r} to {', '.join(seed_tensors)}")
    nodes = []
    for node in reversed(path):
        rule = rule_for(node.op_type, opset)
        if rule is None:
            label = f"{node.name!r} " if node.name else ""
            raise UnsupportedOpError(
                f"the backward pass has no rule for ONNX op {node.op_type!r} (node "
                f"{label}making {node.output[0]!r}, opset {opset})"
            )
        nodes.append((node, rule))
    return BackwardPlan(tuple(nodes), source, seed_tensors, opset, model.device)


def forward_values(
    model: Model,
    batch: np.ndarray,
    plan: BackwardPlan,
    backend: str = "onnxruntime",
    keep: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Values of every tensor the plan reads: from onnxruntime taps (float32), or computed by
    the rules' NumPy forwards in the batch's own dtype (``numpy``; float64 for checks).

    Tensors the planned nodes read but do not make (shape sub-graphs) come from
    onnxruntime in both cases: they carry no gradient and do not depend on precision.
    Tensors whose shape alone the rules need are zero-cost placeholders unless named in
    ``keep`` (tensor names the caller wants as values, e.g. a Grad-CAM layer).
    """
    values = dict(model.constants)
    values[model.input_name] = np.asarray(batch)
    made = {o for node, _ in plan.nodes for o in node.output}
    wanted, shapes_only = plan.reads()
    wanted += [t for t in keep if t in shapes_only]
    shapes_only = [t for t in shapes_only if t not in keep]
    if backend == "onnxruntime":
        values[model.input_name] = np.asarray(batch, np.float32)
        placeholders = {}
        for name in shapes_only:
            shape = None if name in values else model.tensor_shape(name, len(batch))
            if shape is None:
                wanted.append(name)
            else:  # a zero-cost stand-in: rules read only its shape
                placeholders[name] = np.broadcast_to(np.zeros((), np.float32), shape)
        values.update(placeholders)
        taps = [t for t in dict.fromkeys(wanted) if t not in values]
    elif backend == "numpy" and plan.source == model.input_name:
        taps = [t for t in [*wanted, *shapes_only] if t not in values and t not in made]
    else:
        raise ValueError("forward must be 'onnxruntime', or 'numpy' from the model input")
    if taps:
        values.update(model.run(np.asarray(batch, np.float32), taps=taps, outputs=False))
    if backend == "onnxruntime":
        return values
    for node, rule in plan.nodes:
        inputs = [values.get(i) if i else None for i in node.input]
        call = make_call(node, inputs, opset=plan.opset, device=plan.device)
        for name, value in zip(node.output, rule.forward(call)):
            values[name] = value
    return values


def backward(
    plan: BackwardPlan,
    values: Mapping[str, np.ndarray],
    cotangents: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    mode: str = "gradient",
) -> dict[str, np.ndarray]:
    """Propagate ``cotangents`` (tensor -> array shaped like it) back through the plan and
    return the gradients of the tensors ``wrt`` (zeros where nothing flows)."""
    if mode not in MODES:
        raise InputError(f"unknown backward mode {mode!r}; choose one of {', '.join(MODES)}")
    grads: dict[str, np.ndarray] = {}
    for name, value in cotangents.items():
        _accumulate(grads, name, np.asarray(value))
    carries = _carriers(plan)
    for node, rule in reversed(plan.nodes):
        out_grads = [grads.get(o) for o in node.output]
        if all(g is None for g in out_grads):
            continue
        needs = [
            bool(name) and name in carries and i not in rule.constant_inputs
            for i, name in enumerate(node.input)
        ]
        call = NodeCall(
            node,
            graph.attributes(node),
            [values.get(i) if i else None for i in node.input],
            [values[o] for o in node.output if o in values],
            needs,
            mode,
            plan.opset,
            plan.device,
        )
        for name, grad, need in zip(node.input, rule.vjp(call, out_grads), needs):
            if need and grad is not None:
                _accumulate(grads, name, grad)
    return {name: grads[name] if name in grads else np.zeros_like(values[name]) for name in wrt}


def gradients(
    model: Model,
    batch: np.ndarray,
    cotangents: Mapping[str, np.ndarray],
    *,
    wrt: Sequence[str] = (),
    mode: str = "gradient",
    forward: str = "onnxruntime",
) -> dict[str, np.ndarray]:
    """Gradients of ``sum(cotangent * tensor)`` over the given tensors, w.r.t. the input and
    any intermediate tensors, for a batch: the engine's one-call entry point.

    Args:
        model: the model.
        batch: preprocessed (N, C, H, W) input.
        cotangents: layer name or alias -> array of that tensor's shape (e.g. a one-hot
            class vector on the logits, or ones on one channel of a conv layer).
        wrt: layer names whose gradients to return besides the input (keyed as given).
        mode: ``gradient``, ``guided`` (Springenberg et al. 2015) or ``deconvnet`` (Zeiler &
            Fergus 2014); they differ at ReLU-like ops only.
        forward: ``onnxruntime`` (float32) or ``numpy`` (the batch's dtype, e.g. float64).

    Returns:
        dict with the model input name and each name of ``wrt`` -> gradient.
    """
    plan = plan_backward(model, list(cotangents))
    values = forward_values(model, batch, plan, forward)
    dtype = values[plan.source].dtype
    seeds = {model.tensor_name(k): np.asarray(v, dtype) for k, v in cotangents.items()}
    for name, seed in seeds.items():
        if seed.shape != values[name].shape:
            raise InputError(
                f"cotangent for {name!r} has shape {seed.shape}; the tensor is {values[name].shape}"
            )
    targets = {w: model.tensor_name(w) for w in wrt}
    result = backward(plan, values, seeds, [plan.source, *targets.values()], mode)
    return {model.input_name: result[plan.source], **{w: result[t] for w, t in targets.items()}}


def _carriers(plan: BackwardPlan) -> set[str]:
    """Tensors through which the source influences the seeds (gradients worth computing)."""
    reached = {plan.source}
    for node, _ in plan.nodes:
        if any(i in reached for i in node.input):
            reached.update(o for o in node.output if o)
    return reached


def _accumulate(grads: dict[str, np.ndarray], name: str, grad: np.ndarray) -> None:
    """Sum fan-in: a tensor read by several nodes gets the sum of their cotangents."""
    if name in grads:
        grads[name] = grads[name] + grad
    else:
        grads[name] = grad
