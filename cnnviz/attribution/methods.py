"""The method registry: one :class:`MethodSpec` per technique, read by :func:`explain`, the
``cnnviz explain`` command, the report and the quality table.

A spec names the technique as the CLI and the report do, gives its title and paper, its
family, the function (every one satisfies :class:`~.base.Method`) and the options of
:func:`explain` it takes (``layer``, ``precision``): an option a method does not take is an
error naming the parameter, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnviz_core import InputError, Model

from .base import Attribution, Images, Method
from .cam import cam, gradcam, guided_gradcam
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
from .drilldown import drilldown
from .gradient_shap import gradient_shap
from .guided import deconvnet, guided_backprop
from .integrated_gradients import integrated_gradients
from .kernel_shap import kernel_shap
from .lime import lime
from .occlusion import occlusion
from .rise import rise
from .saliency import saliency
from .smoothgrad import smooth

#: the options :func:`explain` passes on, each with what a method without it does instead
OPTIONS = {
    "layer": "explains the input pixels",
    "precision": "runs in float32",
}


@dataclass(frozen=True)
class MethodSpec:
    """One technique as the toolkit lists it.

    Attributes:
        name: the name the CLI, the report and :func:`explain` use (``gradcam``).
        title: how the report and tables title it (``Grad-CAM``).
        paper: where it comes from (authors year, "title").
        family: ``gradient`` (a backward pass), ``cam`` (weighted layer channels) or
            ``perturbation`` (forwards of changed inputs).
        function: the technique, ``function(model, images, target=None, **its options)``.
        options: the options of :data:`OPTIONS` it takes, as keyword parameters.
    """

    name: str
    title: str
    paper: str
    family: str
    function: Method
    options: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.options - OPTIONS.keys()
        if unknown:
            raise ValueError(f"{self.name}: unknown options {sorted(unknown)}; known {OPTIONS}")


_ZEILER_FERGUS = 'Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"'
_GRADCAM = 'Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks"'
_SHAP = 'Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions"'

#: every technique, in the order the CLI lists them
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "saliency",
        "saliency",
        'Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks"',
        "gradient",
        saliency,
    ),
    MethodSpec(
        "guided",
        "guided backprop",
        'Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net"',
        "gradient",
        guided_backprop,
    ),
    MethodSpec("deconvnet", "deconvnet", _ZEILER_FERGUS, "gradient", deconvnet),
    MethodSpec(
        "cam",
        "CAM",
        'Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"',
        "cam",
        cam,
        frozenset({"layer"}),
    ),
    MethodSpec("gradcam", "Grad-CAM", _GRADCAM, "cam", gradcam, frozenset({"layer"})),
    MethodSpec(
        "guided-gradcam", "Guided Grad-CAM", _GRADCAM, "cam", guided_gradcam, frozenset({"layer"})
    ),
    MethodSpec(
        "gradcam++",
        "Grad-CAM++",
        'Chattopadhyay et al. 2018, "Grad-CAM++: Improved Visual Explanations for Deep '
        'Convolutional Networks"',
        "cam",
        gradcam_pp,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "xgradcam",
        "XGrad-CAM",
        'Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation '
        'of CNNs"',
        "cam",
        xgradcam,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "layercam",
        "LayerCAM",
        'Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for '
        'Localization"',
        "cam",
        layercam,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "hirescam",
        "HiResCAM",
        'Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of '
        'convolutional neural networks"',
        "cam",
        hirescam,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "eigencam",
        "Eigen-CAM",
        'Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components"',
        "cam",
        eigencam,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "scorecam",
        "Score-CAM",
        'Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional '
        'Neural Networks"',
        "cam",
        scorecam,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "ablationcam",
        "Ablation-CAM",
        'Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep Convolutional '
        'Network via Gradient-free Localization"',
        "cam",
        ablationcam,
        frozenset({"layer"}),
    ),
    MethodSpec(
        "fullgrad",
        "FullGrad",
        'Srinivas & Fleuret 2019, "Full-Gradient Representation for Neural Network Visualization"',
        "gradient",
        fullgrad,
    ),
    MethodSpec(
        "smoothgrad",
        "SmoothGrad",
        'Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"',
        "gradient",
        smooth(saliency),
    ),
    MethodSpec(
        "ig",
        "Integrated Gradients",
        'Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"',
        "gradient",
        integrated_gradients,
    ),
    MethodSpec(
        "occlusion",
        "occlusion",
        _ZEILER_FERGUS,
        "perturbation",
        occlusion,
        frozenset({"precision"}),
    ),
    MethodSpec(
        "occlusion-drilldown",
        "occlusion drill-down",
        'Nakandala, Kumar & Papakonstantinou 2019, "Incremental and Approximate Inference '
        'for Faster Occlusion-based Deep CNN Explanations"',
        "perturbation",
        drilldown,
        frozenset({"precision"}),
    ),
    MethodSpec(
        "lime",
        "LIME",
        'Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?"',
        "perturbation",
        lime,
    ),
    # RISE, KernelSHAP, GradientSHAP (issue 17)
    MethodSpec(
        "rise",
        "RISE",
        'Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of '
        'Black-box Models"',
        "perturbation",
        rise,
    ),
    MethodSpec("kernelshap", "KernelSHAP", _SHAP, "perturbation", kernel_shap),
    MethodSpec("gradientshap", "GradientSHAP", _SHAP, "gradient", gradient_shap),
)

#: spec by name
REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in SPECS}
#: technique by the name the CLI and the report use
METHODS: dict[str, Method] = {spec.name: spec.function for spec in SPECS}


def method_spec(name: str) -> MethodSpec:
    """The spec of a registered method.

    Raises:
        InputError: an unknown name (the error lists the known ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}") from None


def title(name: str) -> str:
    """The title of a method (its name when it is not registered)."""
    spec = REGISTRY.get(name)
    return spec.title if spec is not None else name


def explain(
    model: Model,
    images: Images,
    method: str = "gradcam",
    target: Any = None,
    *,
    layer: str | None = None,
    precision: str | None = None,
) -> Attribution:
    """Run a technique by name (a key of :data:`REGISTRY`) with the options it takes:
    ``layer`` for the CAM family (default: its own choice), ``precision`` (``fp32``,
    ``bf16``) for occlusion and its drill-down.

    Raises:
        InputError: an unknown method, or an option the method does not take (the error
            names the parameter, e.g. ``layer=``).
    """
    spec = method_spec(method)
    given = {"layer": layer, "precision": precision}
    options = {name: value for name, value in given.items() if value is not None}
    for name in (name for name in options if name not in spec.options):
        takers = ", ".join(sorted(s.name for s in SPECS if name in s.options))
        raise InputError(f"{name}= applies to {takers}; {method!r} {OPTIONS[name]}")
    return spec.function(model, images, target, **options)


__all__ = [
    "METHODS",
    "OPTIONS",
    "REGISTRY",
    "SPECS",
    "MethodSpec",
    "explain",
    "method_spec",
    "title",
]
