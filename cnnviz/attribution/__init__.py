"""Attribution: why a model decides, as maps over the input. No torch needed.

One contract for every technique::

    method(model, images, target=None, **options) -> Attribution

    from cnnviz.attribution import gradcam, saliency, smooth
    result = gradcam(model, ["cat.jpg"], target="tabby")
    picture = result.render(0)                      # (H, W, 3) uint8 overlay

Targets: None (predicted class), a class index or label, :class:`Class`,
:class:`Channel`, :class:`Neuron`, or a list with one per image. :data:`REGISTRY` holds one
:class:`MethodSpec` per technique (name, title, paper, family, options) by the name the CLI
and the report use; :data:`METHODS` maps those names to the functions; :func:`explain` runs
one by name.
"""

from __future__ import annotations

from cnnviz_core.targets import (
    Channel,
    Class,
    Neuron,
    ResolvedTarget,
    resolve_targets,
    score_tensor,
)

from . import (  # their report sections register on import (explicitly)
    deploy_report,  # the deployable ONNX file's section (issue 16)
    report,
    segmentation,
)
from .base import Attribution, Images, Method
from .cam import cam, class_activation_map, default_layer, find_cam_head, gradcam, guided_gradcam
from .cam_variants import (
    ablationcam,
    eigencam,
    fullgrad,
    gradcam_pp,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from .deeplift import deeplift
from .drilldown import drilldown
from .gradient_shap import gradient_shap
from .guided import deconvnet, guided_backprop
from .integrated_gradients import integrated_gradients
from .kernel_shap import kernel_shap
from .lime import lime
from .lrp import lrp, lrp_alphabeta, lrp_epsilon, lrp_gamma
from .methods import METHODS, REGISTRY, SPECS, MethodSpec, explain
from .occlusion import occlusion
from .rise import rise
from .saliency import saliency
from .smoothgrad import smooth

__all__ = [
    "METHODS",
    "REGISTRY",
    "SPECS",
    "Attribution",
    "Channel",
    "Class",
    "Images",
    "Method",
    "MethodSpec",
    "Neuron",
    "ResolvedTarget",
    "ablationcam",
    "cam",
    "class_activation_map",
    "deconvnet",
    "deeplift",
    "default_layer",
    "deploy_report",
    "drilldown",
    "eigencam",
    "explain",
    "find_cam_head",
    "fullgrad",
    "gradcam",
    "gradcam_pp",
    "gradient_shap",
    "guided_backprop",
    "guided_gradcam",
    "hirescam",
    "integrated_gradients",
    "kernel_shap",
    "layercam",
    "lime",
    "lrp",
    "lrp_alphabeta",
    "lrp_epsilon",
    "lrp_gamma",
    "occlusion",
    "report",
    "resolve_targets",
    "rise",
    "saliency",
    "score_tensor",
    "scorecam",
    "segmentation",
    "smooth",
    "xgradcam",
]
