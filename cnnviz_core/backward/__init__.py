"""Reverse-mode differentiation of ONNX graphs without torch: NumPy and the native kernels.

    grads = gradients(model, batch, {"logits": one_hot}, mode="guided")
    grads[model.input_name]          # (N, C, H, W)

See :mod:`.registry` for the op table and how to add a rule.
"""

from . import rules
from .engine import BackwardPlan, backward, forward_values, gradients, plan_backward
from .registry import MODES, NodeCall, OpRule, register_rule, rule_for, supported_ops

__all__ = [
    "MODES",
    "BackwardPlan",
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
