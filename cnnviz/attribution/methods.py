"""The method registry: one :class:`MethodSpec` per technique, read by :func:`explain`, the
``cnnviz explain`` command, the report and the quality table.

A spec names the technique as the CLI and the report do, gives its title and paper, its
family, the function (every one satisfies :class:`~.base.Method`), the options of
:func:`explain` it takes (``layer``, ``precision``) and its own tuning parameters
(:class:`Parameter`: occlusion's ``window`` and ``stride``, SmoothGrad's ``samples`` and
``sigma``...), which :func:`explain` and ``cnnviz explain`` (one flag each) offer without code
per method: an option or parameter a method does not take is an error naming it, never
silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
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
from .compiled import (
    CompiledMethod,
    compile_cam,
    compile_deconvnet,
    compile_gradcam,
    compile_gradcam_pp,
    compile_guided,
    compile_guided_gradcam,
    compile_hirescam,
    compile_integrated_gradients,
    compile_layercam,
    compile_saliency,
    compile_smoothgrad,
    compile_xgradcam,
)
from .deeplift import deeplift
from .drilldown import drilldown
from .gradient_shap import gradient_shap
from .guided import deconvnet, guided_backprop
from .integrated_gradients import integrated_gradients
from .kernel_shap import kernel_shap
from .lime import lime
from .lrp import lrp_alphabeta, lrp_epsilon, lrp_gamma
from .occlusion import occlusion
from .rise import rise
from .saliency import saliency
from .smoothgrad import sigma_value, smoothgrad

#: the options :func:`explain` passes on, each with what a method without it does instead
OPTIONS = {
    "layer": "explains the input pixels",
    "precision": "runs in float32",
}


@dataclass(frozen=True)
class Parameter:
    """A tuning parameter of a technique, passed to its function as a keyword.

    Attributes:
        name: the keyword (``window``); the CLI flag is ``--`` + name with ``_`` -> ``-``.
        type: ``int``, ``float``, ``str`` or a parser ``text -> value`` that raises
            ValueError (e.g. InputError) with a one-line message on a bad value (what the
            CLI parses the flag with).
        help: what it does, with the default (``occluding square's side in pixels (8)``).
        metavar: how the CLI's help shows the value (default: the name in capitals).
    """

    name: str
    type: Callable[[str], Any]
    help: str
    metavar: str | None = None


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
        parameters: its own tuning parameters (:class:`Parameter`), as keyword parameters
            of ``function``.
    """

    name: str
    title: str
    paper: str
    family: str
    function: Method
    options: frozenset[str] = frozenset()
    parameters: tuple[Parameter, ...] = ()

    def __post_init__(self) -> None:
        unknown = self.options - OPTIONS.keys()
        if unknown:
            raise ValueError(f"{self.name}: unknown options {sorted(unknown)}; known {OPTIONS}")
        clash = {p.name for p in self.parameters} & (OPTIONS.keys() | {"target", "images"})
        if clash:
            raise ValueError(f"{self.name}: parameters {sorted(clash)} clash with explain()'s")

    @property
    def parameter_names(self) -> frozenset[str]:
        """The names of its :attr:`parameters`."""
        return frozenset(p.name for p in self.parameters)

    @property
    def compiled(self) -> CompiledMethod | None:
        """Its ONNX form (:mod:`.compiled`, see :data:`COMPILED`) for
        :func:`~.export.export_explainer`, or None when it cannot be one graph."""
        return COMPILED.get(self.name)


_ZEILER_FERGUS = 'Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"'
_GRADCAM = 'Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks"'
_SHAP = 'Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions"'
_LRP = (
    'Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by '
    'Layer-Wise Relevance Propagation"; Montavon et al. 2019, "Layer-Wise Relevance '
    'Propagation: An Overview"'
)
_EPSILON = Parameter("epsilon", float, "LRP stabiliser, the epsilon rule's epsilon (1e-6)")
_INPUT_RULE = Parameter(
    "input_rule", str, "rule at the layers reading the pixels: zbox or same (zbox)"
)
_WINDOW = (
    Parameter("window", int, "occluding square's side in pixels (8)"),
    Parameter("stride", int, "step between occluded positions in pixels (4)"),
)

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
        smoothgrad,
        parameters=(
            Parameter("samples", int, "noisy copies per image (25)"),
            Parameter(
                "sigma",
                sigma_value,
                "noise std as a fraction of the input range, or auto (default): per image "
                "the largest of 0.2, 0.15, 0.1, 0.05, 0.025 whose noisy copies keep the "
                "model's top-1 class",
                metavar="auto|F",
            ),
        ),
    ),
    MethodSpec(
        "ig",
        "Integrated Gradients",
        'Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"',
        "gradient",
        integrated_gradients,
        parameters=(
            Parameter("steps", int, "Riemann steps from the baseline (64)"),
            Parameter("baseline", str, "path start: zeros, black or blur (zeros)"),
            Parameter("blur_sigma", float, "Gaussian sigma of the blur baseline, pixels (side/16)"),
        ),
    ),
    MethodSpec(
        "occlusion",
        "occlusion",
        _ZEILER_FERGUS,
        "perturbation",
        occlusion,
        frozenset({"precision"}),
        _WINDOW,
    ),
    MethodSpec(
        "occlusion-drilldown",
        "occlusion drill-down",
        'Nakandala, Kumar & Papakonstantinou 2019, "Incremental and Approximate Inference '
        'for Faster Occlusion-based Deep CNN Explanations"',
        "perturbation",
        drilldown,
        frozenset({"precision"}),
        _WINDOW,
    ),
    MethodSpec(
        "lime",
        "LIME",
        'Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?"',
        "perturbation",
        lime,
        parameters=(
            Parameter("samples", int, "perturbed images per image (500)"),
            Parameter("segments", int, "superpixels (49)"),
        ),
    ),
    # RISE, KernelSHAP, GradientSHAP (issue 17)
    MethodSpec(
        "rise",
        "RISE",
        'Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of '
        'Black-box Models"',
        "perturbation",
        rise,
        parameters=(
            Parameter("masks", int, "random masks per image (2000)"),
            Parameter("cells", int, "mask grid cells a side (7)"),
        ),
    ),
    MethodSpec(
        "kernelshap",
        "KernelSHAP",
        _SHAP,
        "perturbation",
        kernel_shap,
        parameters=(
            Parameter("samples", int, "perturbed images per image (500)"),
            Parameter("segments", int, "superpixels (49)"),
        ),
    ),
    MethodSpec(
        "gradientshap",
        "GradientSHAP",
        _SHAP,
        "gradient",
        gradient_shap,
        parameters=(
            Parameter("n_samples", int, "gradient samples per image (32)"),
            Parameter("stdevs", float, "noise standard deviation, input units (0)"),
        ),
    ),
    # DeepLIFT and LRP: relevance modes of the engine's backward pass (issue 17)
    MethodSpec(
        "deeplift",
        "DeepLIFT",
        'Shrikumar, Greenside & Kundaje 2017, "Learning Important Features Through '
        'Propagating Activation Differences"',
        "gradient",
        deeplift,
        parameters=(Parameter("baseline", str, "reference input: zeros, black or blur (zeros)"),),
    ),
    MethodSpec(
        "lrp-epsilon",
        "LRP-epsilon",
        _LRP,
        "gradient",
        lrp_epsilon,
        parameters=(_EPSILON, _INPUT_RULE),
    ),
    MethodSpec(
        "lrp-gamma",
        "LRP-gamma",
        _LRP,
        "gradient",
        lrp_gamma,
        parameters=(
            Parameter("gamma", float, "weight on positive weights (0.25)"),
            _EPSILON,
            _INPUT_RULE,
        ),
    ),
    MethodSpec(
        "lrp-alphabeta",
        "LRP-alpha1-beta0",
        _LRP,
        "gradient",
        lrp_alphabeta,
        parameters=(_EPSILON, _INPUT_RULE),
    ),
)

#: the compiled form (one ONNX graph) of each method that has one, by name; perturbation
#: methods (many forwards of perturbed images) and the synthesis loops have none
COMPILED: dict[str, CompiledMethod] = {
    "saliency": compile_saliency,
    "guided": compile_guided,
    "deconvnet": compile_deconvnet,
    "cam": compile_cam,
    "gradcam": compile_gradcam,
    "guided-gradcam": compile_guided_gradcam,
    "gradcam++": compile_gradcam_pp,
    "xgradcam": compile_xgradcam,
    "layercam": compile_layercam,
    "hirescam": compile_hirescam,
    "smoothgrad": compile_smoothgrad,
    "ig": compile_integrated_gradients,
}

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


def parameters() -> dict[str, Parameter]:
    """Every registered method's tuning parameters by name (the first spec's wins when
    several take one: their name means the same there), in registry order."""
    found: dict[str, Parameter] = {}
    for spec in SPECS:
        for parameter in spec.parameters:
            found.setdefault(parameter.name, parameter)
    return found


def taking(name: str) -> list[str]:
    """The methods that take an option or tuning parameter ``name``."""
    return [s.name for s in SPECS if name in s.options or name in s.parameter_names]


def explain(
    model: Model,
    images: Images,
    method: str = "gradcam",
    target: Any = None,
    *,
    layer: str | None = None,
    precision: str | None = None,
    **tuning: Any,
) -> Attribution:
    """Run a technique by name (a key of :data:`REGISTRY`) with the options it takes:
    ``layer`` for the CAM family (default: its own choice), ``precision`` (``fp32``,
    ``bf16``) for occlusion and its drill-down, and its tuning parameters
    (:attr:`MethodSpec.parameters`: ``window=``, ``stride=``, ``samples=``, ``sigma=``,
    ``steps=``...; None means the method's default).

    Raises:
        InputError: an unknown method, or an option or parameter the method does not take
            (the error names the parameter, e.g. ``layer=``, and the methods that take it).
    """
    spec = method_spec(method)
    given = {"layer": layer, "precision": precision}
    options = {name: value for name, value in given.items() if value is not None}
    for name in (name for name in options if name not in spec.options):
        takers = ", ".join(sorted(taking(name)))
        raise InputError(f"{name}= applies to {takers}; {method!r} {OPTIONS[name]}")
    for name, value in tuning.items():
        if value is None:
            continue
        if name not in spec.parameter_names:
            others = taking(name)
            own = ", ".join(f"{p.name}=" for p in spec.parameters) or "no parameters"
            where = f"applies to {', '.join(others)}" if others else "is no method's parameter"
            raise InputError(f"{name}= {where}; {method!r} takes {own}")
        options[name] = value
    return spec.function(model, images, target, **options)


__all__ = [
    "COMPILED",
    "METHODS",
    "OPTIONS",
    "REGISTRY",
    "SPECS",
    "MethodSpec",
    "Parameter",
    "explain",
    "method_spec",
    "parameters",
    "taking",
    "title",
]
