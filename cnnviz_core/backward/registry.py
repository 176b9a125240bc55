"""The op table of the backward pass: one rule per ONNX operator, forward and VJP together.

A rule is registered explicitly, once per (op type, first opset it applies to)::

    @register_rule("Relu")
    class Relu(OpRule):
        def forward(self, call):             # NumPy, any float dtype (tests run it in float64)
            return [np.maximum(call.inputs[0], 0)]

        def vjp(self, call, grads):          # grads: one cotangent (or None) per output
            return [relu_backward(call.inputs[0], grads[0], call.mode)]

The engine resolves the rule for a model's opset (the newest rule whose ``since`` is at most
the opset), so opset-dependent semantics (ReduceMean axes as an attribute, then an input)
live in separate rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx

from ..errors import InputError
from ..graph import attributes
from ..model import Model, SessionFactory
from ..registry import VersionedRegistry

if TYPE_CHECKING:
    from .emitter import Emitter

#: a backward mode: differs from the gradient at ReLU-like ops only (everything else has one
#: true gradient): guided backprop (Springenberg et al. 2015), deconvnet (Zeiler & Fergus 2014)
Mode = Literal["gradient", "guided", "deconvnet"]
MODES: tuple[Mode, ...] = ("gradient", "guided", "deconvnet")
#: relevance modes (see :mod:`.relevance`): the rule at Conv/Gemm/MatMul, activations and pooling
#: is DeepLIFT's Rescale (Shrikumar et al. 2017) or LRP's (Bach et al. 2015); rules see "gradient"
RelevanceMode = Literal["deeplift", "lrp-epsilon", "lrp-gamma", "lrp-alphabeta"]
RELEVANCE_MODES: tuple[RelevanceMode, ...] = (
    "deeplift",
    "lrp-epsilon",
    "lrp-gamma",
    "lrp-alphabeta",
)

Grad = np.ndarray | None


def backward_mode(mode: str) -> Mode:
    """``mode`` checked to be one of :data:`MODES`; raises :class:`InputError` naming them."""
    for known in MODES:
        if mode == known:
            return known
    raise InputError(f"unknown backward (ReLU) mode {mode!r}; choose one of {', '.join(MODES)}")


@dataclass
class NodeCall:
    """One node evaluated: what a rule's forward and VJP read.

    Attributes:
        node: the ONNX node.
        attrs: its attributes as Python values.
        inputs: forward input values in node order (None for an omitted optional input).
        outputs: forward output values (empty while the forward itself runs).
        needs: for each input, whether the pass needs its gradient (data, not weights).
        mode: ``gradient``, ``guided`` or ``deconvnet`` (only ReLU-like rules read it).
        opset: the model's default-domain opset.
        sessions: makes the onnxruntime sessions a VJP runs (float32 adjoints): the model's
            factory in a backward pass, so they run on its device; CPU for a call made
            outside one.
            Rules hand its device to the kernels, which run their CUDA twins on a GPU.
    """

    node: onnx.NodeProto
    attrs: dict
    inputs: list[Any]  # np.ndarray, or None for an omitted optional input
    outputs: list[np.ndarray] = field(default_factory=list)
    needs: list[bool] = field(default_factory=list)
    mode: Mode = "gradient"
    opset: int = 13
    sessions: SessionFactory = field(default_factory=SessionFactory)

    @property
    def device(self) -> str:
        """Where the model runs (the factory's device): rules hand it to the kernels."""
        return self.sessions.device


class OpRule:
    """Forward and vector-Jacobian product of one ONNX operator (subclass and register)."""

    #: input positions that never carry a gradient (shapes, axes, indices)
    constant_inputs: tuple[int, ...] = ()
    #: whether the VJP reads the values (not only the shapes) of the non-constant inputs /
    #: of the outputs; tensors no rule reads are not fetched from onnxruntime (exposing a
    #: tensor costs a copy and blocks fusions), the rule then sees a zero-cost placeholder
    #: of the right shape
    reads_inputs: bool = True
    reads_outputs: bool = True

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        """The op's outputs computed in NumPy (used by float64 tests and reference runs)."""
        raise NotImplementedError

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        """Cotangents of the inputs (None where ``call.needs`` is False) given those of the
        outputs (None for an output nothing downstream uses)."""
        raise NotImplementedError

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """The VJP as ONNX nodes: ``grads`` are the graph tensors holding the outputs'
        cotangents (None for an unused output); write nodes with ``g`` (an
        :class:`~.emitter.Emitter`) and return the input cotangents' tensor names (None where
        ``call.needs`` is False). ``call.node`` names the graph's tensors; ``call.inputs`` /
        ``call.outputs`` hold a probe forward's values (shapes; constant inputs' values)."""
        raise NotImplementedError

    def check(self, node: onnx.NodeProto, model: Model) -> None:
        """Raise :class:`~cnnviz_core.errors.UnsupportedOpError` naming the node when this
        rule cannot differentiate it (an attribute form it does not cover); the planner
        calls it before any work. Default: every node of the op is covered."""


#: the backward pass's op table: one rule instance per (op type, since opset)
RULES: VersionedRegistry[OpRule] = VersionedRegistry("backward rule")


def register_rule(op_type: str, since: int = 1) -> Callable[[type[OpRule]], type[OpRule]]:
    """Class decorator: register an :class:`OpRule` for ``op_type`` from opset ``since`` on
    (a second rule for the same key raises :class:`ValueError`)."""

    def decorate(cls: type[OpRule]) -> type[OpRule]:
        RULES.add(op_type, since, cls())
        return cls

    return decorate


def rule_for(op_type: str, opset: int) -> OpRule | None:
    """The rule that applies to ``op_type`` at ``opset``, or None when there is none."""
    return RULES.get(op_type, opset)


def supported_ops() -> list[str]:
    """Op types that have at least one rule."""
    return RULES.op_types()


def registered_rules() -> list[tuple[str, int]]:
    """Every registered (op type, since opset) key (the tests check each one has a case)."""
    return RULES.keys()


def make_call(
    node: onnx.NodeProto,
    inputs: list,
    mode: Mode = "gradient",
    opset: int = 13,
    sessions: SessionFactory | None = None,
) -> NodeCall:
    """A :class:`NodeCall` for ``node`` with these input values (attributes decoded)."""
    return NodeCall(
        node,
        attributes(node),
        inputs,
        mode=mode,
        opset=opset,
        sessions=sessions or SessionFactory(),
    )
