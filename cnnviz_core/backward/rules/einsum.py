"""The Einsum rule: the contractions attention and hybrid-CNN blocks write (batched matmuls
such as ``bhid,bhjd->bhij``, ``...ij,...jk->...ik``, reductions and outer products).

The VJP of operand i is itself an einsum: the output's cotangent contracted with the other
operands onto operand i's indices, broadcast back over indices only operand i has (those the
forward summed). Equations with a repeated index inside one term (diagonals, traces) or with
size-1 broadcasting between operands raise :class:`UnsupportedOpError` naming the equation.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...errors import UnsupportedOpError
from ...graph import attributes
from ...model import Model
from ..registry import Grad, NodeCall, OpRule, register_rule

if TYPE_CHECKING:
    from ..emitter import Emitter

_ELLIPSIS = "..."


def einsum_terms(
    equation: str, shapes: Sequence[Sequence[int]], node: str = ""
) -> tuple[list[str], str]:
    """(one subscript string per operand, the output's) with ``...`` spelled out as letters and
    an implicit output (no ``->``) made explicit (ellipsis first, then the indices that occur
    once, sorted). Raises :class:`UnsupportedOpError` for what the rule does not cover."""

    def refuse(why: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"Einsum node {node!r} with equation {equation!r}: {why}; the backward pass covers "
            "contractions without repeated indices in one term (batched matmul forms such as "
            "'bhid,bhjd->bhij'); rewrite the model with matmul / transpose instead"
        )

    compact = equation.replace(" ", "")
    left, arrow, right = compact.partition("->")
    terms = left.split(",")
    if len(terms) != len(shapes):
        raise refuse(f"{len(terms)} terms for {len(shapes)} operands")
    letters = set(compact) - set(".,->")
    if not all(c in string.ascii_letters for c in letters):
        raise refuse("indices must be letters")
    free = [c for c in string.ascii_letters if c not in letters]
    ranks = []
    for term, shape in zip(terms, shapes):
        named = len(term.replace(_ELLIPSIS, ""))
        ranks.append(len(shape) - named if _ELLIPSIS in term else 0)
        if ranks[-1] < 0 or (_ELLIPSIS not in term and named != len(shape)):
            raise refuse(f"term {term!r} does not match an operand of rank {len(shape)}")
    ellipsis = "".join(free[: max(ranks, default=0)])
    spelled = [t.replace(_ELLIPSIS, ellipsis[len(ellipsis) - r :]) for t, r in zip(terms, ranks)]
    if arrow:
        output = right.replace(_ELLIPSIS, ellipsis)
    else:
        counts = "".join(t.replace(_ELLIPSIS, "") for t in terms)
        output = ellipsis + "".join(sorted(c for c in set(counts) if counts.count(c) == 1))
    sizes: dict[str, int] = {}
    for term, shape in zip(spelled, shapes):
        if len(set(term)) != len(term):
            raise refuse(f"repeated index in term {term!r} (a diagonal or trace)")
        for c, n in zip(term, shape):
            if sizes.setdefault(c, int(n)) != int(n):
                raise refuse(f"index {c!r} has sizes {sizes[c]} and {n} (broadcasting)")
    if len(set(output)) != len(output) or not set(output) <= set(sizes):
        raise refuse(f"output {output!r} repeats an index or names one no operand has")
    return spelled, output


@register_rule("Einsum", since=12)
class Einsum(OpRule):
    """y = einsum(equation, *inputs); each operand's cotangent is an einsum of dy and the
    others (see the module docstring)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        terms, output = self._terms(call)
        spec = ",".join(terms) + "->" + output
        return [np.asarray(np.einsum(spec, *call.inputs, optimize=True))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        terms, output = self._terms(call)
        out: list[Grad] = []
        for i, (term, x, need) in enumerate(zip(terms, call.inputs, call.needs)):
            if not need:
                out.append(None)
                continue
            others = [t for j, t in enumerate(terms) if j != i]
            operands = [v.astype(dy.dtype, copy=False) for j, v in enumerate(call.inputs) if j != i]
            reached = set(output).union(*others)
            kept = "".join(c for c in term if c in reached)
            spec = ",".join([output, *others]) + "->" + kept
            g = np.asarray(np.einsum(spec, dy, *operands, optimize=True))
            summed = [k for k, c in enumerate(term) if c not in reached]
            if summed:  # indices only this operand has: the forward summed them
                g = np.broadcast_to(np.expand_dims(g, summed), np.shape(x))
            out.append(np.ascontiguousarray(g, dtype=dy.dtype))
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        terms, output = self._terms(call)
        out: list[str | None] = []
        for i, (term, need) in enumerate(zip(terms, call.needs)):
            if not need:
                out.append(None)
                continue
            others = [t for j, t in enumerate(terms) if j != i]
            operands = [n for j, n in enumerate(call.node.input) if j != i]
            reached = set(output).union(*others)
            kept = "".join(c for c in term if c in reached)
            spec = ",".join([output, *others]) + "->" + kept
            grad = g.op("Einsum", dy, *operands, equation=spec)
            summed = [k for k, c in enumerate(term) if c not in reached]
            if summed:
                grad = g.op("Unsqueeze", grad, g.ints(summed))
                grad = g.op("Expand", grad, g.shape_of(call.node.input[i]))
            out.append(grad)
        return out

    def check(self, node: onnx.NodeProto, model: Model) -> None:
        """Refuse at planning an equation the rule does not cover (with static shapes when
        shape inference knows them, else the equation's structure alone)."""
        equation = attributes(node)["equation"]
        shapes: list[Sequence[int] | None] = [
            model.tensor_shape(name, 1) if name else None for name in node.input
        ]
        if any(shape is None for shape in shapes):  # shapes unknown: one size per index
            terms = equation.replace(" ", "").partition("->")[0].split(",")
            named = [term.replace(_ELLIPSIS, "") for term in terms]
            shapes = [[1] * len(term) for term in named] if len(named) == len(shapes) else shapes
            shapes = [shape or [] for shape in shapes]
            equation = equation.replace(_ELLIPSIS, "")
        einsum_terms(equation, [list(shape or []) for shape in shapes], node.name)

    @staticmethod
    def _terms(call: NodeCall) -> tuple[list[str], str]:
        return einsum_terms(
            call.attrs["equation"], [np.shape(x) for x in call.inputs], call.node.name
        )
