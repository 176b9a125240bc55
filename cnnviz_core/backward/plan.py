"""What a backward pass runs: the plan (the nodes between a source tensor and the seeds, each
with its rule, checked before any work), the forward values the rules read, and what a pass
returns. Both faces of the rule table build on it: the NumPy walker (:mod:`.engine`) and the
ONNX emission (:mod:`.compile`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import graph
from ..errors import InputError, UnsupportedOpError
from ..model import Model, SessionFactory
from ..registry import VersionedRegistry
from ..targets import ResolvedTarget
from .registry import RULES, OpRule, make_call


@dataclass(frozen=True)
class BackwardPlan:
    """The nodes between a source tensor and the seed tensors, with their rules, checked once.

    Attributes:
        nodes: the nodes in topological order, each with its rule.
        source: the tensor gradients flow to (the model input by default).
        seeds: tensors where cotangents enter.
        opset: the model's default-domain opset.
        sessions: the model's session factory (rules' onnxruntime adjoints run on its device).
    """

    nodes: tuple[tuple[onnx.NodeProto, OpRule], ...]
    source: str
    seeds: tuple[str, ...]
    opset: int
    sessions: SessionFactory

    @property
    def device(self) -> str:
        """Where the model runs (the factory's device): rules hand it to the kernels."""
        return self.sessions.device

    def carriers(self) -> set[str]:
        """Tensors through which the source influences the seeds (gradients worth computing)."""
        reached = {self.source}
        for node, _ in self.nodes:
            if any(i in reached for i in node.input):
                reached.update(o for o in node.output if o)
        return reached

    def reverse_steps(
        self, grads: Mapping[str, object]
    ) -> Iterator[tuple[onnx.NodeProto, OpRule, list, list[bool]]]:
        """The planned nodes from the seeds back to the source, for a walk that fills
        ``grads`` (tensor -> cotangent) as it goes: each node a cotangent reached, with its
        output cotangents and, per input, whether it needs one (it carries the source and
        is not one of the rule's constant inputs). The NumPy and the emitted backward both
        walk this way."""
        carries = self.carriers()
        for node, rule in reversed(self.nodes):
            out_grads = [grads.get(o) for o in node.output]
            if all(g is None for g in out_grads):
                continue
            needs = [
                bool(name) and name in carries and i not in rule.constant_inputs
                for i, name in enumerate(node.input)
            ]
            yield node, rule, out_grads, needs

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


def plan_backward(
    model: Model,
    seeds: Sequence[str],
    source: str | None = None,
    *,
    rules: VersionedRegistry[OpRule] = RULES,
) -> BackwardPlan:
    """Plan the pass from ``seeds`` (layer names or aliases) back to ``source`` (default: the
    model input), with the rules of ``rules`` (default: the registered ones). Raises
    :class:`UnsupportedOpError` naming the op and node before any work when a node on the
    path has no rule, or one its rule does not cover (``OpRule.check``)."""
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
            needed.update(graph.node_reads(node))  # control flow: what its branches read
    if not any(source in node.input for node in path):
        raise InputError(f"no path from {source!r} to {', '.join(seed_tensors)}")
    nodes = []
    for node in reversed(path):
        rule = rules.get(node.op_type, opset)
        if rule is None:
            label = f"{node.name!r} " if node.name else ""
            hint = ""
            if node.op_type in graph.QOPERATOR_OPS:
                hint = (
                    ": it is an integer op of a QOperator-format quantized model, which has no "
                    "gradient; quantize in QDQ format instead (onnxruntime.quantization."
                    "quantize_static(..., quant_format=QuantFormat.QDQ)), whose gradients pass "
                    "Quantize/DequantizeLinear as straight-through estimates, or explain the "
                    "float model"
                )
            elif node.op_type in ("If", "Loop", "Scan"):
                hint = (
                    ": control flow whose branches read the image has no gradient rule (the "
                    "legacy torch exporter writes one for LocalResponseNorm); export with "
                    "torch's dynamo exporter, which writes none, or replace the If by its branch"
                )
            raise UnsupportedOpError(
                f"the backward pass has no rule for ONNX op {node.op_type!r} (node "
                f"{label}making {node.output[0]!r}, opset {opset}){hint}"
            )
        rule.check(node, model)
        nodes.append((node, rule))
    return BackwardPlan(tuple(nodes), source, seed_tensors, opset, model.session_factory)


def check_cotangent(name: str, cotangent: np.ndarray, shape: Sequence[int]) -> None:
    """Raise :class:`InputError` when an explicit cotangent is not shaped like its tensor."""
    if tuple(cotangent.shape) != tuple(shape):
        raise InputError(
            f"cotangent for {name!r} has shape {cotangent.shape}; the tensor is {tuple(shape)}"
        )


def forward_values(
    model: Model,
    batch: np.ndarray,
    plan: BackwardPlan,
    backend: str = "onnxruntime",
    keep: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Values of every tensor the plan reads: from onnxruntime taps (float32), or computed by
    the rules' NumPy forwards in the batch's own dtype (``numpy``; float64 for checks).

    Tensors the planned nodes read but do not make (shape sub-graphs, weights computed in
    the graph such as a standardized or dequantized Conv weight) come from onnxruntime in
    both cases: they carry no gradient and do not depend on precision. Tensors that do not
    depend on the input are always values (fetched once, with no batch axis); tensors of
    the image path whose shape alone the rules need are zero-cost placeholders unless named
    in ``keep``: tensor names the caller wants as values (e.g. a Grad-CAM layer, the
    scores), tapped in the same run when the plan does not make them.
    """
    values = dict(model.constants)
    values[model.input_name] = np.asarray(batch)
    made = {o for node, _ in plan.nodes for o in node.output}
    wanted, shapes_only = plan.reads()
    wanted += [t for t in dict.fromkeys(keep) if t not in wanted]
    computed = [t for t in shapes_only if t not in values and not model.depends_on_input(t)]
    wanted += computed  # computed weights: their values, not a batch-shaped stand-in
    shapes_only = [t for t in shapes_only if t not in keep and t not in computed]
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
        call = make_call(node, inputs, opset=plan.opset, sessions=plan.sessions)
        for name, value in zip(node.output, rule.forward(call)):
            values[name] = value
    return values


@dataclass
class Gradients:
    """What :func:`gradients` returns: one forward and one backward pass for a batch.

    Attributes:
        grads: the model input name and each name of ``wrt`` (as given) -> gradient, shaped
            like its tensor.
        scores: (N,) float64, each image's explained scalar: sum of cotangent x tensor.
        targets: the resolved target of each image (empty when cotangents were given).
        seeds: seeded tensor -> (N, ...) cotangent.
        values: the forward values read, keyed by tensor name: every tensor on the path
            (the engine) or the seeds and ``wrt`` (the compiled graph), the input included.
        references: DeepLIFT: the same tensors' values on the baseline (else empty).
        forward: the path that computed them: ``compiled``, ``onnxruntime`` or ``numpy``
            (see :func:`~.engine.gradients`).
    """

    grads: dict[str, np.ndarray]
    scores: np.ndarray
    targets: list[ResolvedTarget]
    seeds: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    references: dict[str, np.ndarray] = field(default_factory=dict)
    forward: str = "onnxruntime"
