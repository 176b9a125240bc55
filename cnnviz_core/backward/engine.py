"""Reverse-mode pass over an ONNX graph: forward values from onnxruntime (taps), backward in
NumPy and the native kernels, one rule per op (see :mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import graph
from ..errors import InputError, UnsupportedOpError
from ..model import Model, SessionFactory
from ..registry import VersionedRegistry
from ..targets import (
    ResolvedTarget,
    Targets,
    cotangents,
    resolve_known,
    resolve_targets,
    seed_tensors,
    seeded_scores,
)
from .registry import (
    MODES,
    RELEVANCE_MODES,
    RULES,
    Grad,
    Mode,
    NodeCall,
    OpRule,
    backward_mode,
    make_call,
)
from .relevance import DeepLift, Propagation, Relevance, propagation, relevance_options


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


def backward(
    plan: BackwardPlan,
    values: Mapping[str, np.ndarray],
    cotangents: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    mode: str | Relevance = "gradient",
    references: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Propagate ``cotangents`` (tensor -> array shaped like it) back through the plan and
    return the gradients of the tensors ``wrt`` (zeros where nothing flows).

    In a relevance mode (:mod:`.relevance`: ``deeplift``, ``lrp-*`` or their option objects)
    ``values`` must hold every tensor of the plan, ``references`` (DeepLIFT) the same
    tensors on the baseline, and the results are relevances / contributions."""
    carries = plan.carriers()
    options = relevance_options(mode)
    walk: Propagation | None = None
    if options is not None:
        walk = propagation(
            options, plan.nodes, plan.source, values, references, plan.opset, carries
        )
    relu_mode: Mode = "gradient"  # what the rules see: relevance modes change the VJPs
    if walk is None:
        if mode not in MODES:
            known = ", ".join((*MODES, *RELEVANCE_MODES))
            raise InputError(f"unknown backward mode {mode!r}; choose one of {known}")
        relu_mode = backward_mode(str(mode))
    grads: dict[str, np.ndarray] = {}
    for name, value in cotangents.items():
        seed = np.asarray(value)
        _accumulate(grads, name, seed if walk is None else walk.seed(name, seed))
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
            relu_mode,
            plan.opset,
            plan.sessions,
        )
        for name, grad, need in zip(node.input, _input_grads(rule, call, out_grads, walk), needs):
            if need and grad is not None:
                _accumulate(grads, name, grad)
    if walk is not None:
        grads = {name: walk.result(name, grad) for name, grad in grads.items() if name in wrt}
    return {name: grads[name] if name in grads else np.zeros_like(values[name]) for name in wrt}


@dataclass
class Gradients:
    """What :func:`gradients` returns: one forward and one backward pass for a batch.

    Attributes:
        grads: the model input name and each name of ``wrt`` (as given) -> gradient, shaped
            like its tensor.
        scores: (N,) float64, each image's explained scalar: sum of cotangent x tensor.
        targets: the resolved target of each image (empty when cotangents were given).
        seeds: seeded tensor -> (N, ...) cotangent.
        values: the forward values read (every tensor on the path, seeds and ``wrt``
            included), keyed by tensor name.
        references: DeepLIFT: the same tensors' values on the baseline (else empty).
    """

    grads: dict[str, np.ndarray]
    scores: np.ndarray
    targets: list[ResolvedTarget]
    seeds: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    references: dict[str, np.ndarray] = field(default_factory=dict)


def gradients(
    model: Model,
    batch: np.ndarray,
    target: Targets | Mapping[str, np.ndarray] = None,
    *,
    wrt: Sequence[str] = (),
    mode: str | Relevance = "gradient",
    forward: str = "onnxruntime",
) -> Gradients:
    """Scores and gradients of the targets of a batch w.r.t. the input and any intermediate
    tensors, from one forward run and one backward pass: the engine's entry point.

    Args:
        model: the model.
        batch: preprocessed (N, C, H, W) input.
        target: what to explain (see :mod:`cnnviz_core.targets`): None (the predicted
            class, read from this same forward run), a class index or label,
            :class:`~cnnviz_core.targets.Class` / ``Channel`` / ``Neuron``, a resolved
            target, or a list of one per image; or explicit cotangents, a mapping from layer
            name or alias to an array of that tensor's shape (e.g. ones on one channel).
        wrt: layer names whose gradients to return besides the input (keyed as given); a
            layer off the path to the targets gets zeros.
        mode: ``gradient``, ``guided`` (Springenberg et al. 2015) or ``deconvnet`` (Zeiler &
            Fergus 2014), which differ at ReLU-like ops only; or a relevance mode
            (:mod:`.relevance`): ``deeplift`` / :class:`~.relevance.DeepLift` (a second
            forward runs on its baseline), ``lrp-epsilon`` / ``lrp-gamma`` /
            ``lrp-alphabeta`` / :class:`~.relevance.LRP`, where ``grads`` hold relevances
            (DeepLIFT: contributions to f(x) - f(baseline)).
        forward: ``onnxruntime`` (float32), ``numpy`` (the batch's dtype, e.g. float64: the
            oracle) or ``compiled`` (float32: forward and backward as one ONNX graph run by
            onnxruntime, see :func:`~.compile.compiled_gradients`; gradient, guided and
            deconvnet modes only).

    Raises:
        TargetError: a target out of range, or a list whose length is not the batch size.
        InputError: a cotangent whose shape is not its tensor's, or an unknown mode.
        UnsupportedOpError: an op on the path without a backward rule.
    """
    if forward == "compiled":
        from .compile import compiled_gradients  # the compiled pass builds on this module

        return compiled_gradients(model, batch, target, wrt=wrt, mode=mode)
    if isinstance(target, Mapping):
        known: list[ResolvedTarget | None] = []
        seeded = list(dict.fromkeys(model.tensor_name(k) for k in target))
    else:
        known = resolve_known(model, batch, target)
        seeded = seed_tensors(model, known)
    plan = plan_backward(model, seeded)
    layers = {w: model.tensor_name(w) for w in wrt}
    options = relevance_options(mode)
    keep = [*seeded, *layers.values(), *(plan.tensors if options is not None else [])]
    values = forward_values(model, batch, plan, forward, keep=keep)
    references = None
    if isinstance(options, DeepLift):  # the baseline's values of the same tensors
        base = options.reference_batch(np.asarray(values[plan.source]))
        references = forward_values(model, base, plan, forward, keep=keep)
    dtype = values[plan.source].dtype
    if isinstance(target, Mapping):
        resolved: list[ResolvedTarget] = []
        seeds = _given_cotangents(model, target, values, dtype)
    else:
        resolved = resolve_targets(model, batch, known, values)
        seeds = {
            name: seed.astype(dtype, copy=False)
            for name, seed in cotangents(model, batch, resolved, values).items()
        }
    planned = set(plan.tensors)
    on_path = [t for t in layers.values() if t in planned]
    result = backward(plan, values, seeds, [plan.source, *on_path], mode, references)
    grads = {model.input_name: result[plan.source]}
    for w, t in layers.items():
        grads[w] = result[t] if t in result else np.zeros_like(values[t])
    return Gradients(grads, seeded_scores(seeds, values), resolved, seeds, values, references or {})


def _given_cotangents(
    model: Model,
    cotangents: Mapping[str, np.ndarray],
    values: Mapping[str, np.ndarray],
    dtype: np.dtype,
) -> dict[str, np.ndarray]:
    """Explicit cotangents keyed by tensor name, in the forward's dtype, shapes checked."""
    seeds = {model.tensor_name(k): np.asarray(v, dtype) for k, v in cotangents.items()}
    for name, seed in seeds.items():
        if seed.shape != values[name].shape:
            raise InputError(
                f"cotangent for {name!r} has shape {seed.shape}; the tensor is {values[name].shape}"
            )
    return seeds


def _input_grads(
    rule: OpRule, call: NodeCall, out_grads: Sequence[Grad], walk: Propagation | None = None
) -> Sequence[Grad]:
    """The rule's VJP (or the relevance mode's rule at the node), checked to give one
    cotangent (or None) per input of the node."""
    in_grads = rule.vjp(call, out_grads) if walk is None else walk.vjp(rule, call, out_grads)
    if len(in_grads) != len(call.node.input):
        node = call.node
        label = f"{node.name!r} " if node.name else ""
        raise TypeError(
            f"the backward rule {type(rule).__name__} for ONNX op {node.op_type!r} (node "
            f"{label}making {node.output[0]!r}) returned {len(in_grads)} input gradients for "
            f"{len(node.input)} inputs; a rule's vjp returns one array or None per input"
        )
    return in_grads


def _accumulate(grads: dict[str, np.ndarray], name: str, grad: np.ndarray) -> None:
    """Sum fan-in: a tensor read by several nodes gets the sum of their cotangents."""
    if name in grads:
        grads[name] = grads[name] + grad
    else:
        grads[name] = grad
