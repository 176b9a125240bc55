"""ONNX graph -> ``torch.nn.Module``, through an op table of our own.

    from cnnviz_core.torch_bridge import to_torch, relu_mode

    net = to_torch(model)                       # model: a cnnviz_core.Model
    logits = net(x)                             # x: float (N, C, H, W) tensor
    values = net(x, taps=["conv2"])             # dict: outputs and the tapped tensors
    with relu_mode(net, "guided"):              # ReLU-like ops backpropagate as guided
        values["conv2"][:, 3].sum().backward()

The table (:mod:`.ops`) shares its op list with the backward registry
(:mod:`cnnviz_core.backward.registry`): every op with a backward rule has a torch
implementation under the same (op, since opset) key, plus the ops of style-transfer
networks (:data:`STYLE_OPS`) and of shape sub-graphs (:data:`SHAPE_OPS`).

torch is optional: importing this package never imports it; :func:`to_torch` without torch
raises an :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Model
    from .module import OnnxModule

#: what to run when torch is missing
INSTALL_HINT = "pip install 'cnnviz[torch]'"
#: ops of style-transfer networks (fast neural style) besides the backward registry's
STYLE_OPS = ("Affine", "ConvTranspose", "Crop", "ImageScaler", "InstanceNormalization")
#: ops that make shapes and constants (evaluated in torch, or folded at conversion)
SHAPE_OPS = ("Constant", "ConstantOfShape", "Range", "Shape", "Size")


def require_torch() -> Any:
    """The ``torch`` module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError as error:
        raise ImportError(
            f"the torch bridge needs PyTorch, which is not installed: {INSTALL_HINT}"
        ) from error


def to_torch(model: Model, outputs: Sequence[str] | None = None) -> OnnxModule:
    """The model's runnable ONNX graph as a ``torch.nn.Module`` (CPU, float32 weights).

    Args:
        model: a loaded :class:`cnnviz_core.Model`.
        outputs: layer names or aliases the module returns (default: the model's outputs).

    Returns:
        an :class:`~.module.OnnxModule`; ``.to("cuda")`` / ``.double()`` move and cast it.

    Raises:
        ImportError: torch is not installed.
        UnsupportedOpError: a node needed for ``outputs`` has no torch implementation (the
            message names the op and the node).
    """
    require_torch()
    from .module import to_torch as convert

    return convert(model, outputs)


def relu_mode(module: OnnxModule, mode: str) -> Any:
    """Context manager: ReLU-like ops of ``module`` backpropagate as ``gradient`` (true
    gradient), ``guided`` (Springenberg et al. 2015: dy * [x > 0] * [dy > 0]) or ``deconvnet``
    (Zeiler & Fergus 2014: dy * [dy > 0]) inside the block; ``module.relu_mode = mode`` sets
    it for good."""
    require_torch()
    from .module import relu_mode as context

    return context(module, mode)


def gram_matrix(features: Any, norm: float | None = None, *, backend: str = "auto") -> Any:
    """Gram matrices (N, C, H, W) -> (N, C, C) = F F^T / norm (default C * H * W) inside
    autograd, forward and backward on the native kernels (CPU float32; CUDA float32 when built
    with CUDA), ``torch.bmm`` otherwise: see :func:`.gram.gram_matrix`."""
    require_torch()
    from .gram import gram_matrix as gram

    return gram(features, norm, backend=backend)  # type: ignore[arg-type]


def bridge_rules() -> list[tuple[str, int]]:
    """Every (op type, since opset) key of the bridge's op table."""
    require_torch()
    from .ops import registered_ops

    return registered_ops()


__all__ = [
    "INSTALL_HINT",
    "SHAPE_OPS",
    "STYLE_OPS",
    "bridge_rules",
    "gram_matrix",
    "relu_mode",
    "require_torch",
    "to_torch",
]
