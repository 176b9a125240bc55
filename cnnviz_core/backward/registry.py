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

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..graph import attributes

#: backward modes for ReLU-like ops (everything else has one true gradient)
MODES = ("gradient", "guided", "deconvnet")

Grad = np.ndarray | None


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
        device: where the model runs ("cpu", "cuda", "cuda:N"): rules pass it to the kernels,
            which run their CUDA twins on a CUDA device.
    """

    node: onnx.NodeProto
    attrs: dict
    inputs: list[Any]  # np.ndarray, or None for an omitted optional input
    outputs: list[np.ndarray] = field(default_factory=list)
    needs: list[bool] = field(default_factory=list)
    mode: str = "gradient"
    opset: int = 13
    device: str = "cpu"


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


_RULES: dict[str, list[tuple[int, OpRule]]] = {}


def register_rule(op_type: str, since: int = 1):
    """Class decorator: register an :class:`OpRule` for ``op_type`` from opset ``since`` on."""

    def decorate(cls: type[OpRule]) -> type[OpRule]:
        versions = _RULES.setdefault(op_type, [])
        if any(v == since for v, _ in versions):
            raise ValueError(f"a rule for {op_type} since opset {since} is already registered")
        bisect.insort(versions, (since, cls()), key=lambda item: item[0])
        return cls

    return decorate


def rule_for(op_type: str, opset: int) -> OpRule | None:
    """The rule that applies to ``op_type`` at ``opset``, or None when there is none."""
    versions = _RULES.get(op_type, [])
    applicable = [rule for since, rule in versions if since <= opset]
    return applicable[-1] if applicable else None


def supported_ops() -> list[str]:
    """Op types that have at least one rule."""
    return sorted(_RULES)


def registered_rules() -> list[tuple[str, int]]:
    """Every registered (op type, since opset) key (the tests check each one has a case)."""
    return sorted((op, since) for op, versions in _RULES.items() for since, _ in versions)


def make_call(
    node: onnx.NodeProto,
    inputs: list,
    mode: str = "gradient",
    opset: int = 13,
    device: str = "cpu",
):
    """A :class:`NodeCall` for ``node`` with these input values (attributes decoded)."""
    return NodeCall(node, attributes(node), inputs, mode=mode, opset=opset, device=device)
