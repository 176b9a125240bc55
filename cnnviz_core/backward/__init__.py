"""Reverse-mode differentiation of ONNX graphs without torch: NumPy and the native kernels.

    result = gradients(model, batch, target=None, mode="guided")  # the predicted class
    result.grads[model.input_name]   # (N, C, H, W)
    result.scores                    # (N,) the explained scores, from the same forward
    gradients(model, batch, {"logits": one_hot})  # explicit cotangents

See :mod:`.registry` for the op table and how to add a rule.
"""

from . import rules
from .engine import BackwardPlan, Gradients, backward, forward_values, gradients, plan_backward
from .registry import MODES, NodeCall, OpRule, register_rule, rule_for, supported_ops

__all__ = [
    "MODES",
    "BackwardPlan",
    "Gradients",
    "NodeCall",
    "OpRule",
    "backward",
    "forward_values",
    "gradients",
    "plan_backward",
    "register_rule",
    "rule_for",
    "rules",
    "supported_ops",
]
