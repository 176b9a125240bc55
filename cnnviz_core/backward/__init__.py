"""Reverse-mode differentiation of ONNX graphs without torch: NumPy and the native kernels.

    result = gradients(model, batch, target=None, mode="guided")  # the predicted class
    result.grads[model.input_name]   # (N, C, H, W)
    result.scores                    # (N,) the explained scores, from the same forward
    gradients(model, batch, {"logits": one_hot})  # explicit cotangents
    gradients(model, batch, 3, mode=LRP("gamma", input_rule="zbox", low=lo, high=hi))
    gradients(model, batch, 3, mode=DeepLift(baseline))  # relevance modes (.relevance)

See :mod:`.registry` for the op table and how to add a rule.
"""

from . import rules
from .engine import backward, gradients
from .plan import BackwardPlan, Gradients, forward_values, plan_backward
from .registry import (
    MODES,
    RELEVANCE_MODES,
    NodeCall,
    OpRule,
    register_rule,
    rule_for,
    supported_ops,
)
from .relevance import LRP, DeepLift

__all__ = [
    "LRP",
    "MODES",
    "RELEVANCE_MODES",
    "BackwardPlan",
    "DeepLift",
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
