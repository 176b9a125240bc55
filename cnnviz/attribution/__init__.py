"""Attribution: why a model decides, as maps over the input. No torch needed.

One contract for every technique::

    method(model, images, target=None, **options) -> Attribution

    from cnnviz.attribution import gradcam, saliency, smooth
    result = gradcam(model, ["cat.jpg"], target="tabby")
    picture = result.render(0)                      # (H, W, 3) uint8 overlay

Targets: None (predicted class), a class index or label, :class:`Class`,
:class:`Channel`, :class:`Neuron`, or a list with one per image. :data:`METHODS` maps the
names the CLI and the report use to the techniques.
"""

from __future__ import annotations

from typing import Any

from cnnviz_core import InputError, Model
from cnnviz_core.targets import (
    Channel,
    Class,
    Neuron,
    ResolvedTarget,
    resolve_targets,
    score_tensor,
)

from .base import Attribution, Images, Method
from .cam import cam, class_activation_map, default_layer, find_cam_head, gradcam, guided_gradcam
from .drilldown import drilldown
from .guided import deconvnet, guided_backprop
from .integrated_gradients import integrated_gradients
from .lime import lime
from .occlusion import occlusion
from .saliency import saliency
from .smoothgrad import smooth

#: technique by the name the CLI and the report use
METHODS: dict[str, Method] = {
    "saliency": saliency,
    "guided": guided_backprop,
    "deconvnet": deconvnet,
    "cam": cam,
    "gradcam": gradcam,
    "guided-gradcam": guided_gradcam,
    "smoothgrad": smooth(saliency),
    "ig": integrated_gradients,
    "occlusion": occlusion,
    "occlusion-drilldown": drilldown,
    "lime": lime,
}
#: methods that take ``layer=``
LAYER_METHODS = frozenset({"cam", "gradcam", "guided-gradcam"})
#: methods that take ``precision=`` (approximate bf16 forwards, error reported)
PRECISION_METHODS = frozenset({"occlusion", "occlusion-drilldown"})


def explain(
    model: Model,
    images: Images,
    method: str = "gradcam",
    target: Any = None,
    *,
    layer: str | None = None,
    precision: str | None = None,
) -> Attribution:
    """Run a technique by name (a key of :data:`METHODS`); ``layer`` only for the CAM
    family (default: its own choice), ``precision`` (``fp32``, ``bf16``) only for
    :data:`PRECISION_METHODS`."""
    try:
        technique = METHODS[method]
    except KeyError:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}") from None
    if layer is not None and method not in LAYER_METHODS:
        raise InputError(
            f"--layer applies to {', '.join(sorted(LAYER_METHODS))}; {method!r} explains "
            "the input pixels"
        )
    if precision is not None and method not in PRECISION_METHODS:
        raise InputError(
            f"--precision applies to {', '.join(sorted(PRECISION_METHODS))}; {method!r} runs "
            "in float32"
        )
    options: dict[str, Any] = {"layer": layer} if layer is not None else {}
    if precision is not None:
        options["precision"] = precision
    return technique(model, images, target, **options)


# the report sections register on import (explicitly, here)
from . import report, segmentation  # noqa: E402

__all__ = [
    "LAYER_METHODS",
    "METHODS",
    "PRECISION_METHODS",
    "Attribution",
    "Channel",
    "Class",
    "Method",
    "Neuron",
    "ResolvedTarget",
    "cam",
    "class_activation_map",
    "deconvnet",
    "default_layer",
    "drilldown",
    "explain",
    "find_cam_head",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
    "integrated_gradients",
    "lime",
    "occlusion",
    "report",
    "resolve_targets",
    "saliency",
    "score_tensor",
    "segmentation",
    "smooth",
]
