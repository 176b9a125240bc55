"""Relevance modes of the backward pass: DeepLIFT's Rescale rule and LRP's rules, on the same
walker as ``gradient`` / ``guided`` / ``deconvnet`` (no second graph walk).

- ``deeplift`` (Shrikumar et al. 2017, "Learning Important Features Through Propagating
  Activation Differences"; Captum's ``DeepLift``): the walker carries multipliers. Linear ops
  keep their VJP; element-wise activations use Rescale, ``m_in = m_out * dy / dx`` with
  ``dx = x - x0``, ``dy = y - y0`` (x0, y0: the same tensors on the baseline, from a second
  forward), the gradient where ``|dx| < 1e-10``; max-pools split the output difference between
  the input's and the baseline's argmax (Captum's ``maxpool``). The pass returns contributions
  ``m * (x - x0)``, which sum to the seeded score's difference f(x) - f(x0).
- ``lrp-epsilon``, ``lrp-gamma``, ``lrp-alphabeta`` (Bach et al. 2015, "On Pixel-Wise
  Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation";
  Montavon et al. 2019, "Layer-Wise Relevance Propagation: An Overview"): the walker carries
  relevance R, seeded with cotangent x value (the target's score). At Conv / Gemm / MatMul,
  ``R_in = a * W'^T (R / stab(z'))`` with ``z' = a W' + b`` and ``stab(z) = z + eps sign(z)``
  (sign(0) = 1): W' = W (epsilon), W + gamma W+ (gamma), W+ (alpha1-beta0), as Captum's
  ``EpsilonRule``, ``GammaRule``, ``Alpha1_Beta0_Rule`` (the bias kept in z'; for non-negative
  inputs, after a ReLU, these are Montavon et al.'s rules). ``input_rule="zbox"`` applies the
  z^B rule at the weighted layers that read the input pixels: ``R = x c - l c+ - h c-`` with
  ``z = x W - l W+ - h W-`` (no bias), l and h the input's bounds.

Per-op conventions (one table, :data:`OP_KINDS`; every registered op is classified, or
listed in :data:`UNSUPPORTED` and raises naming the op and node before any work):

- weighted (Conv, ConvTranspose, Gemm, MatMul with a constant weight operand): LRP: the
  mode's rule (z^B at the input with ``input_rule="zbox"``; a ConvTranspose is the linear
  map x -> x W^T like a Conv, its rule the same formula through its own VJP); DeepLIFT: the
  gradient (linear).
- linear (Add, Sub, Sum, Neg, Mul / Div by a constant, BatchNormalization, average pools,
  ReduceMean / ReduceSum, Resize): LRP: the z-rule ``R_i = x_i * VJP_i(R / stab(y))`` with the
  mode's epsilon (Captum's ``EpsilonRule`` on pools and BatchNorm; an Add of two branches
  splits R in proportion to them, as zennit's residual canonizer; constants such as a bias
  absorb their share); DeepLIFT: the gradient.
- maximum (MaxPool, GlobalMaxPool, ReduceMax, ReduceMin): LRP: the z-rule (winner takes all
  up to epsilon, as Captum; ties share); DeepLIFT: Captum's max-pool rule (ReduceMin mirrored:
  the input's argmin takes min(y, y0) - y0, the baseline's y - min(y, y0)).
- activation (ReLU-like, sigmoid-like, GELU...): LRP: R passes unchanged (zennit's ``Pass``,
  Captum's non-linear layers); DeepLIFT: Rescale.
- routing (reshapes, transposes, DepthToSpace / SpaceToDepth, concatenation, split, slices,
  gathers, pads, casts, Dropout, Identity, comparisons; Quantize/DequantizeLinear
  straight-through): both modes use the op's VJP, which moves each element's relevance or
  multiplier with it, as autograd passes them through these ops in zennit and Captum.

BatchNormalization is best folded into the preceding Conv first (:mod:`cnnviz_core.canonize`),
as LRP's canonizers do. Shapes: (N, C, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import onnx

from ..errors import InputError, UnsupportedOpError
from .registry import Grad, NodeCall, OpRule, RelevanceMode, make_call

#: ops whose outputs are copies (or selections) of input elements, or straight-through
#: estimates (Quantize/DequantizeLinear); comparisons carry nothing
ROUTING = frozenset(
    {
        "Identity",
        "Dropout",
        "Cast",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Split",
        "Slice",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "Gather",
        "GatherND",
        "Expand",
        "Tile",
        "Where",
        "QuantizeLinear",
        "DequantizeLinear",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
    }
)
#: ops with weights (input 1 for Conv / ConvTranspose; the constant operand of Gemm / MatMul)
WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: ops affine in the inputs that carry the signal
LINEAR = frozenset(
    {
        "Add",
        "Sub",
        "Sum",
        "Neg",
        "Mul",
        "Div",
        "BatchNormalization",
        "AveragePool",
        "GlobalAveragePool",
        "ReduceMean",
        "ReduceSum",
        "Resize",
        "Upsample",
    }
)
#: max pooling and the reductions that pick one element (ReduceMin: the mirror image)
MAXIMA = frozenset({"MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin"})
#: element-wise activations (one signal input; PRelu's slope and Clip's bounds are constants)
ACTIVATIONS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Gelu",
        "Mish",
        "HardSigmoid",
        "HardSwish",
    }
)
#: registered ops with no relevance convention: they raise in the relevance modes
UNSUPPORTED = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "LRN",
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "Einsum",
        "Max",
        "Min",
        "Pow",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Erf",
        "ScatterND",
    }
)
#: op type -> kind (``routing``, ``weighted``, ``linear``, ``maximum``, ``activation``)
OP_KINDS: dict[str, str] = {
    **dict.fromkeys(ROUTING, "routing"),
    **dict.fromkeys(WEIGHTED, "weighted"),
    **dict.fromkeys(LINEAR, "linear"),
    **dict.fromkeys(MAXIMA, "maximum"),
    **dict.fromkeys(ACTIVATIONS, "activation"),
}

#: DeepLIFT falls back to the gradient where |x - x0| is below this (Captum's eps)
DEEPLIFT_EPS = 1e-10

LRPRule = Literal["epsilon", "gamma", "alphabeta"]


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class LRP:
    """An LRP backward mode with its parameters (pass as ``mode=`` to
    :func:`~cnnviz_core.backward.gradients`; the string ``lrp-RULE`` means the defaults).

    Attributes:
        rule: ``epsilon``, ``gamma`` or ``alphabeta`` (alpha1-beta0) at Conv / Gemm / MatMul.
        epsilon: the stabiliser of every denominator (the epsilon of the epsilon rule).
        gamma: the gamma rule's weight on positive weights.
        input_rule: ``same`` (the rule above at the first layers too) or ``zbox`` (z^B at
            the weighted layers reading the input pixels, within ``low`` and ``high``).
        low, high: the input's bounds for ``zbox``, broadcastable to (N, C, H, W) (per
            channel: shape (1, C, 1, 1)).
    """

    rule: LRPRule = "epsilon"
    epsilon: float = 1e-6
    gamma: float = 0.25
    input_rule: Literal["same", "zbox"] = "same"
    low: float | np.ndarray | None = None
    high: float | np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rule not in ("epsilon", "gamma", "alphabeta"):
            raise InputError(f"unknown LRP rule {self.rule!r}; choose epsilon, gamma, alphabeta")
        if self.input_rule not in ("same", "zbox"):
            raise InputError(f"unknown input_rule {self.input_rule!r}; choose 'same' or 'zbox'")
        if self.epsilon < 0 or self.gamma < 0:
            raise InputError(
                f"LRP needs epsilon >= 0 and gamma >= 0; got {self.epsilon}, {self.gamma}"
            )
        if self.input_rule == "zbox" and (self.low is None or self.high is None):
            raise InputError("input_rule='zbox' needs the input's bounds: low= and high=")

    @property
    def mode(self) -> RelevanceMode:
        """The mode's name: ``lrp-epsilon``, ``lrp-gamma`` or ``lrp-alphabeta``."""
        names: dict[str, RelevanceMode] = {
            "epsilon": "lrp-epsilon",
            "gamma": "lrp-gamma",
            "alphabeta": "lrp-alphabeta",
        }
        return names[self.rule]


@dataclass(frozen=True, eq=False)
class DeepLift:
    """The DeepLIFT (Rescale) backward mode with its baseline (``mode="deeplift"``: zeros).

    Attributes:
        baseline: the reference input, broadcastable to the batch (N, C, H, W); None: zeros.
    """

    baseline: np.ndarray | None = None

    @property
    def mode(self) -> RelevanceMode:
        return "deeplift"

    def reference_batch(self, batch: np.ndarray) -> np.ndarray:
        """The baseline as a batch shaped and typed like ``batch``."""
        if self.baseline is None:
            return np.zeros_like(batch)
        base = np.asarray(self.baseline, batch.dtype)
        try:
            return np.ascontiguousarray(np.broadcast_to(base, batch.shape))
        except ValueError:
            raise InputError(
                f"the DeepLIFT baseline has shape {base.shape}; it must broadcast to the "
                f"batch {batch.shape}"
            ) from None


Relevance = LRP | DeepLift


def relevance_options(mode: object) -> Relevance | None:
    """The relevance mode ``mode`` names (``deeplift``, ``lrp-epsilon``, ``lrp-gamma``,
    ``lrp-alphabeta``, or an :class:`LRP` / :class:`DeepLift`), None for the ReLU modes."""
    if isinstance(mode, LRP | DeepLift):
        return mode
    if mode == "deeplift":
        return DeepLift()
    if isinstance(mode, str) and mode.startswith("lrp-"):
        rule = mode[4:]
        for known in ("epsilon", "gamma", "alphabeta"):
            if rule == known:
                return LRP(known)
    return None


def stabilize(z: np.ndarray, epsilon: float) -> np.ndarray:
    """``z + epsilon * sign(z)`` with sign(0) = 1 (Captum's and zennit's stabiliser)."""
    return z + np.where(z >= 0, epsilon, -epsilon).astype(z.dtype, copy=False)


def _label(node: onnx.NodeProto) -> str:
    name = f"{node.name!r} " if node.name else ""
    return f"ONNX op {node.op_type!r} (node {name}making {node.output[0]!r})"


class Propagation:
    """What a relevance mode changes in the walker: the seeds, each node's VJP, the result."""

    mode: RelevanceMode

    def seed(self, name: str, cotangent: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def vjp(self, rule: OpRule, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        raise NotImplementedError

    def result(self, name: str, signal: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _carriers(self, call: NodeCall) -> list[int]:
        return [k for k, need in enumerate(call.needs) if need]

    def _kind(self, call: NodeCall) -> str:
        return op_kind(self.mode, call.node, call.needs)


def op_kind(mode: str, node: onnx.NodeProto, needs: Sequence[bool]) -> str:
    """The node's kind in a relevance mode (see the module doc), or an
    :class:`UnsupportedOpError` naming the op and node.

    Args:
        mode: the relevance mode (for the message).
        node: the node.
        needs: per input, whether the signal reaches it from the pass's source.
    """
    op = node.op_type
    kind = OP_KINDS.get(op)
    if kind is None:
        raise UnsupportedOpError(
            f"the {mode} mode has no rule for {_label(node)}: it is not linear, an activation, "
            "a pooling or a reshape; explain with mode='gradient' (saliency, integrated "
            "gradients) instead"
        )
    carriers = [k for k, need in enumerate(needs) if need]
    allowed = {
        "Gemm": ([0], [1]),
        "MatMul": ([0], [1]),
        "Mul": ([0], [1]),
        "Div": ([0],),
        "ConvTranspose": ([0],),
    }
    if op in allowed and carriers not in allowed[op]:
        raise UnsupportedOpError(
            f"the {mode} mode needs the image to reach one operand of {_label(node)} (the "
            f"other one constant: weights); here it reaches inputs {carriers}"
        )
    return kind


class LRPPropagation(Propagation):
    """LRP: relevance flows; see the module doc for the rule of each kind of op."""

    def __init__(self, options: LRP, values: Mapping[str, np.ndarray], bounds: dict) -> None:
        self.options = options
        self.mode = options.mode
        self.values = values
        #: tensor -> (low, high) for the z^B rule: the input and its reshapes
        self.bounds = bounds

    def seed(self, name: str, cotangent: np.ndarray) -> np.ndarray:
        """The seeded relevance: cotangent x value (the target's score on its element)."""
        return cotangent * self.values[name]

    def result(self, name: str, signal: np.ndarray) -> np.ndarray:
        return signal

    def vjp(self, rule: OpRule, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        kind = self._kind(call)
        if kind == "routing":
            return list(rule.vjp(call, grads))
        if kind == "activation":
            return [grads[0] if call.needs[0] else None] + [None] * (len(call.inputs) - 1)
        if kind == "weighted":
            return self._weighted(rule, call, grads)
        return self._z_rule(rule, call, grads)

    def _z_rule(self, rule: OpRule, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        """R_i = x_i * VJP_i(R / stab(y)): the epsilon rule of any op affine in its signal
        inputs (constant inputs such as a bias absorb their share)."""
        relevance = grads[0]
        assert relevance is not None
        y = call.outputs[0] if call.outputs else rule.forward(call)[0]
        scaled = relevance / stabilize(y.astype(relevance.dtype, copy=False), self.options.epsilon)
        parts = rule.vjp(call, [scaled, *grads[1:]])
        return [
            x * part if need and part is not None else None
            for x, part, need in zip(call.inputs, parts, call.needs)
        ]

    def _weighted(self, rule: OpRule, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        data = self._carriers(call)[0]
        weight = 1 if call.node.op_type in ("Conv", "ConvTranspose") else 1 - data
        if self.options.input_rule == "zbox" and call.node.input[data] in self.bounds:
            return self._zbox(rule, call, grads, data, weight)
        if self.options.rule == "epsilon":
            return self._z_rule(rule, call, grads)
        relevance = grads[0]
        assert relevance is not None
        w = call.inputs[weight]  # modified in the pass's precision (float64 checks stay exact)
        w = w.astype(np.result_type(w.dtype, relevance.dtype), copy=False)
        if self.options.rule == "gamma":
            modified = w + self.options.gamma * np.maximum(w, 0)
        else:  # alpha1-beta0
            modified = np.maximum(w, 0)
        return self._z_rule(rule, _with_inputs(call, {weight: modified}), grads)

    def _zbox(
        self, rule: OpRule, call: NodeCall, grads: Sequence[Grad], data: int, weight: int
    ) -> list[Grad]:
        """z^B (Montavon et al. 2017, 2019): R = x c - l c+ - h c-, z = xW - lW+ - hW-."""
        relevance = grads[0]
        assert relevance is not None
        x, w = call.inputs[data], call.inputs[weight]
        w = w.astype(np.result_type(w.dtype, relevance.dtype), copy=False)
        low, high = self.bounds[call.node.input[data]]
        no_bias = {2: None} if len(call.inputs) > 2 else {}
        terms = [
            (x, w, 1.0),
            (low, np.maximum(w, 0), -1.0),
            (high, np.minimum(w, 0), -1.0),
        ]
        calls = [_with_inputs(call, {data: a, weight: v, **no_bias}) for a, v, _ in terms]
        z = sum(sign * rule.forward(c)[0] for c, (_, _, sign) in zip(calls, terms))
        assert isinstance(z, np.ndarray)
        scaled = relevance / stabilize(z.astype(relevance.dtype, copy=False), self.options.epsilon)
        total = np.zeros_like(x, dtype=relevance.dtype)
        for c, (a, _, sign) in zip(calls, terms):
            part = rule.vjp(c, [scaled, *grads[1:]])[data]
            assert part is not None
            total = total + sign * a * part
        out: list[Grad] = [None] * len(call.inputs)
        out[data] = total
        return out


class DeepLiftPropagation(Propagation):
    """DeepLIFT Rescale: multipliers flow; contributions ``m * (x - x0)`` come out."""

    mode: RelevanceMode = "deeplift"

    def __init__(
        self, values: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray]
    ) -> None:
        self.values = values
        self.references = references

    def seed(self, name: str, cotangent: np.ndarray) -> np.ndarray:
        return cotangent

    def result(self, name: str, signal: np.ndarray) -> np.ndarray:
        """Contributions: multiplier x (value - reference value)."""
        return signal * (self.values[name] - self.references[name])

    def vjp(self, rule: OpRule, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        kind = self._kind(call)
        if kind in ("routing", "weighted", "linear"):
            return list(rule.vjp(call, grads))
        g = grads[0]
        assert g is not None
        node = call.node
        x, y = call.inputs[0], call.outputs[0]
        x0, y0 = self.references[node.input[0]], self.references[node.output[0]]
        dx = (x - x0).astype(g.dtype, copy=False)
        gradient = rule.vjp(call, grads)[0]
        assert gradient is not None
        if kind == "activation":  # Rescale
            moved = g * (y - y0)
        else:  # max: the input's argmax takes max(y, y0) - y0, the baseline's y - max(y, y0)
            top = np.minimum(y, y0) if node.op_type == "ReduceMin" else np.maximum(y, y0)
            reference = replace(call, inputs=[x0, *call.inputs[1:]], outputs=[y0])
            first = rule.vjp(call, [g * (top - y0), *grads[1:]])[0]
            second = rule.vjp(reference, [g * (y - top), *grads[1:]])[0]
            assert first is not None and second is not None
            moved = first + second
        flat = np.abs(dx) < DEEPLIFT_EPS
        ratio = np.divide(moved, dx, out=np.zeros_like(gradient), where=~flat)
        return [np.where(flat, gradient, ratio)] + [None] * (len(call.inputs) - 1)


def _with_inputs(call: NodeCall, changes: Mapping[int, np.ndarray | None]) -> NodeCall:
    """A copy of ``call`` with some inputs replaced (its outputs dropped: they change)."""
    inputs = list(call.inputs)
    for k, value in changes.items():
        inputs[k] = value
    return replace(call, inputs=inputs, outputs=[])


def input_bounds(
    nodes: Sequence[tuple], source: str, values: Mapping[str, np.ndarray], options: LRP, opset: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The z^B bounds of the source and of the tensors routing ops make from it alone
    (a Flatten or Pad before the first layer): tensor -> (low, high) shaped like it."""
    x = values[source]
    try:
        low = np.broadcast_to(np.asarray(options.low, x.dtype), x.shape)
        high = np.broadcast_to(np.asarray(options.high, x.dtype), x.shape)
    except ValueError:
        raise InputError(
            f"the z-box bounds (low {np.asarray(options.low).shape}, high "
            f"{np.asarray(options.high).shape}) "
            f"must broadcast to the input {x.shape}"
        ) from None
    bounds = {source: (low, high)}
    for node, rule in nodes:
        if node.op_type not in ROUTING or not node.input or node.input[0] not in bounds:
            continue
        if any(i in bounds for i in node.input[1:]) or len(node.output) != 1:
            continue
        pair = []
        for bound in bounds[node.input[0]]:
            inputs = [bound, *(values.get(i) if i else None for i in node.input[1:])]
            pair.append(rule.forward(make_call(node, inputs, opset=opset))[0])
        bounds[node.output[0]] = (pair[0], pair[1])
    if not any(
        node.op_type in WEIGHTED and any(i in bounds for i in node.input) for node, _ in nodes
    ):
        raise InputError(
            "input_rule='zbox' found no Conv / ConvTranspose / Gemm / MatMul reading the input "
            "(directly or through reshapes); use input_rule='same'"
        )
    return bounds


def propagation(
    options: Relevance,
    nodes: Sequence[tuple[onnx.NodeProto, OpRule]],
    source: str,
    values: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray] | None,
    opset: int,
    carriers: set[str],
) -> Propagation:
    """The walker's :class:`Propagation` for a relevance mode over the planned ``nodes``
    (every node checked first: an op without a rule raises before any work).

    Args:
        options: the mode and its parameters.
        nodes: the planned (node, rule) pairs in topological order.
        source: the tensor the pass ends at (the model input).
        values: forward values of every tensor on the path.
        references: DeepLIFT: the same tensors' values on the baseline.
        opset: the model's default-domain opset.
        carriers: tensors the signal flows through (from the source to the seeds).

    Raises:
        UnsupportedOpError: a node without a rule in this mode (names the op and node).
        InputError: DeepLIFT without reference values, or z-box bounds that do not fit.
    """
    for node, rule in nodes:
        needs = [
            bool(name) and name in carriers and k not in rule.constant_inputs
            for k, name in enumerate(node.input)
        ]
        op_kind(options.mode, node, needs)
    if isinstance(options, DeepLift):
        if references is None:
            raise InputError("the deeplift mode needs the baseline's forward values (references=)")
        return DeepLiftPropagation(values, references)
    bounds = (
        input_bounds(nodes, source, values, options, opset) if options.input_rule == "zbox" else {}
    )
    return LRPPropagation(options, values, bounds)


__all__ = [
    "ACTIVATIONS",
    "DEEPLIFT_EPS",
    "LINEAR",
    "LRP",
    "MAXIMA",
    "OP_KINDS",
    "ROUTING",
    "UNSUPPORTED",
    "WEIGHTED",
    "DeepLift",
    "DeepLiftPropagation",
    "LRPPropagation",
    "LRPRule",
    "Propagation",
    "Relevance",
    "input_bounds",
    "op_kind",
    "propagation",
    "relevance_options",
    "stabilize",
]
