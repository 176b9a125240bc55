"""Reverse-mode pass over an ONNX graph: forward values from onnxruntime (taps), backward in
NumPy and the native kernels, one rule per op (see :mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .. import graph
from ..errors import InputError, ModelLoadError, UnsupportedOpError
from ..model import Model
from ..targets import (
    ResolvedTarget,
    Targets,
    cotangents,
    resolve_known,
    resolve_targets,
    seed_tensors,
    seeded_scores,
)
from .compile import compiled_gradients
from .emitter import EMITTED_MODES
from .plan import BackwardPlan, Gradients, check_cotangent, forward_values, plan_backward
from .registry import (
    MODES,
    RELEVANCE_MODES,
    Grad,
    Mode,
    NodeCall,
    OpRule,
    backward_mode,
)
from .relevance import DeepLift, Propagation, Relevance, propagation, relevance_options


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
    options = relevance_options(mode)
    walk: Propagation | None = None
    if options is not None:
        walk = propagation(
            options, plan.nodes, plan.source, values, references, plan.opset, plan.carriers()
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
    for node, rule, out_grads, needs in plan.reverse_steps(grads):
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


def gradients(
    model: Model,
    batch: np.ndarray,
    target: Targets | Mapping[str, np.ndarray] = None,
    *,
    wrt: Sequence[str] = (),
    mode: str | Relevance = "gradient",
    forward: str = "auto",
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
        forward: ``compiled`` (float32: forward and backward as one ONNX graph run by
            onnxruntime, see :func:`~.compile.compiled_gradients`; gradient, guided and
            deconvnet modes only), ``onnxruntime`` (float32: onnxruntime's forward with taps,
            the backward in NumPy / native kernels), ``numpy`` (the batch's dtype, e.g.
            float64: the oracle), or ``auto`` (default): ``compiled`` when the mode and every
            op on the path have an ONNX emission and onnxruntime loads the graph (built
            once per model, targets, ``wrt``, mode and image shape, then cached), else
            ``onnxruntime``; both are exact to float32 rounding, and the compiled graph is
            as fast at batch 1 and faster in batches (README, "Gradients").
            ``Gradients.forward`` says which ran.

    Raises:
        TargetError: a target out of range, or a list whose length is not the batch size.
        InputError: a cotangent whose shape is not its tensor's, or an unknown mode.
        UnsupportedOpError: an op on the path without a backward rule.
    """
    if forward == "compiled" or (
        forward == "auto" and isinstance(mode, str) and mode in EMITTED_MODES
    ):
        try:
            return compiled_gradients(model, batch, target, wrt=wrt, mode=mode)
        except (UnsupportedOpError, InputError, ModelLoadError):
            if forward == "compiled":
                raise
            # an op or attribute without an emission, a non-float32 model, or a graph
            # onnxruntime cannot load: the engine covers it (or raises its own error for a
            # bad target or an op without a rule)
    if forward == "auto":
        forward = "onnxruntime"
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
    scores = seeded_scores(seeds, values)
    return Gradients(grads, scores, resolved, seeds, values, references or {}, forward)


def _given_cotangents(
    model: Model,
    cotangents: Mapping[str, np.ndarray],
    values: Mapping[str, np.ndarray],
    dtype: np.dtype,
) -> dict[str, np.ndarray]:
    """Explicit cotangents keyed by tensor name, in the forward's dtype, shapes checked."""
    seeds = {model.tensor_name(k): np.asarray(v, dtype) for k, v in cotangents.items()}
    for name, seed in seeds.items():
        check_cotangent(name, seed, values[name].shape)
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
