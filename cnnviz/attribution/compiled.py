"""Gradient techniques as ONNX nodes: each one's post-processing (saliency's reduction, the CAM
weights and normalisation, Integrated Gradients' path, SmoothGrad's noise) written on top of
the engine's emitted forward and backward (:class:`cnnviz_core.backward.compile.GraphBuilder`).

A compiled method is ``fn(explainer, **options) -> Compiled``: it reads the explainer's input
tensor, forward copy and targets, and returns the graph tensor holding its map, shaped and
normalised as the Python method's ``Attribution.maps``. The registry
(:mod:`.methods`) names the compiled form of each method that has one; :func:`.export.
export_explainer` assembles the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from cnnviz_core import InputError, Model, TargetError
from cnnviz_core.backward.compile import GraphBuilder
from cnnviz_core.backward.emitter import Name
from cnnviz_core.targets import ResolvedTarget

from .cam import default_layer, find_cam_head
from .integrated_gradients import BASELINES, path_points
from .saliency import VARIANTS
from .smoothgrad import sigma_value


@dataclass
class Explainer:
    """What a compiled method builds on.

    Attributes:
        builder: the graph being built (forward copy 1 already in it).
        model: the model (at the builder's opset).
        x: the preprocessed input tensor (N, C, H, W) float32.
        names: forward copy 1: model tensor -> graph tensor.
        classes: int64 (N,) explained classes (None for a channel / neuron target).
        target: the baked resolved target when ``classes`` is None.
        layer: the layer option (CAM family), as given.
    """

    builder: GraphBuilder
    model: Model
    x: Name
    names: dict[str, Name]
    classes: Name | None
    target: ResolvedTarget | None
    layer: str | None = None

    def seeds(self, names: Mapping[str, Name], classes: Name | None) -> dict[str, Name]:
        """The cotangents of the targets on a forward copy ``names`` (``classes`` for that
        copy's batch)."""
        if classes is not None:
            return self.builder.class_seeds(names, classes)
        assert self.target is not None
        return self.builder.target_seeds(names, self.target)

    def input_gradient(
        self, names: Mapping[str, Name], classes: Name | None, mode: str = "gradient"
    ) -> Name:
        """d target / d input (N, C, H, W) on the forward copy ``names``."""
        grads = self.builder.backward(
            names, self.seeds(names, classes), [self.model.input_name], mode
        )
        return grads[self.model.input_name]

    def repeated(self, copies: int) -> tuple[Name, Name | None]:
        """(x repeated ``copies`` times per image, image-major: (N * copies, C, H, W) after the
        caller's own change, the classes likewise): the helpers of IG and SmoothGrad."""
        g = self.builder
        classes = None
        if self.classes is not None:
            grid = g.op("Unsqueeze", self.classes, g.ints([1]))
            n = g.op("Slice", g.shape_of(self.classes), g.ints([0]), g.ints([1]))
            tiled = g.op("Expand", grid, g.op("Concat", n, g.ints([copies]), axis=0))
            classes = g.op("Reshape", tiled, g.ints([-1]))
        return g.op("Unsqueeze", self.x, g.ints([1])), classes


@dataclass
class Compiled:
    """A compiled method's result: the map tensor and what the metadata records."""

    map: Name
    layout: str  # "(N, H, W)" or "(N, C, H, W)"
    layer: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


CompiledMethod = Callable[..., Compiled]


def _per_image_normalize(g: GraphBuilder, maps: Name) -> Name:
    """:func:`~.cam.normalize_maps` in ONNX: min-max per image (N, H, W), constant -> 0."""
    low = g.reduce("ReduceMin", maps, [1, 2])
    span = g.op("Sub", g.reduce("ReduceMax", maps, [1, 2]), low)
    positive = g.op("Greater", span, g.scalar(0.0))
    safe = g.where(positive, span, g.scalar(1.0))
    scaled = g.op("Div", g.op("Sub", maps, low), safe)
    return g.where(positive, scaled, g.scalar(0.0))


def _resize_to_input(g: GraphBuilder, maps: Name, model: Model) -> Name:
    """(N, h, w) -> (N, H, W): bilinear, half-pixel centres, edges clamped
    (:func:`~.base.bilinear_resize`)."""
    height, width = model.input_shape[1:]
    four = g.op("Unsqueeze", maps, g.ints([1]))
    sizes = g.op(
        "Concat",
        g.op("Slice", g.shape_of(four), g.ints([0]), g.ints([2])),
        g.ints([height, width]),
        axis=0,
    )
    resized = g.op(
        "Resize",
        four,
        "",
        "",
        sizes,
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )
    return g.op("Squeeze", resized, g.ints([1]))


# --------------------------------------------------------------------- gradient methods


def compile_saliency(e: Explainer, *, variant: str = "abs") -> Compiled:
    """:func:`~.saliency.saliency`: max |grad| over channels, sum of grad, or sum of
    grad x input."""
    if variant not in VARIANTS:
        raise InputError(f"unknown saliency variant {variant!r}; choose one of {VARIANTS}")
    return Compiled(_saliency_map(e, e.names, e.classes, e.x, variant), "(N, H, W)")


def _saliency_map(
    e: Explainer, names: Mapping[str, Name], classes: Name | None, x: Name, variant: str
) -> Name:
    g = e.builder
    grad = e.input_gradient(names, classes)
    if variant == "abs":
        return g.reduce("ReduceMax", g.op("Abs", grad), [1], keepdims=False)
    if variant == "signed":
        return g.reduce_sum(grad, [1], keepdims=False)
    return g.reduce_sum(g.mul(grad, x), [1], keepdims=False)


def compile_guided(e: Explainer) -> Compiled:
    """:func:`~.guided.guided_backprop`: the guided input gradient (N, C, H, W)."""
    return Compiled(e.input_gradient(e.names, e.classes, "guided"), "(N, C, H, W)")


def compile_deconvnet(e: Explainer) -> Compiled:
    """:func:`~.guided.deconvnet`: the deconvnet reconstruction (N, C, H, W)."""
    return Compiled(e.input_gradient(e.names, e.classes, "deconvnet"), "(N, C, H, W)")


def compile_integrated_gradients(
    e: Explainer, *, steps: int = 64, baseline: str = "zeros", rule: str = "middle"
) -> Compiled:
    """:func:`~.integrated_gradients.integrated_gradients`: every (image, step) path point
    of the Riemann sum in one batch (N * steps) through a second forward copy; the targets
    are the clean images' (as the Python method resolves them)."""
    g, model = e.builder, e.model
    if steps < 1:
        raise InputError(f"integrated gradients needs steps >= 1; got {steps}")
    alphas, weights = path_points(steps, rule)
    if baseline == "zeros":
        base = np.zeros((1, 1, *model.input_shape), np.float32)
    elif baseline == "black":
        black = np.zeros((*model.input_shape[1:], 3), np.uint8)
        base = model.prepare([black])[None]
    else:
        raise InputError(
            f"a compiled integrated gradients takes baseline 'zeros' or 'black' (of {BASELINES}); "
            f"got {baseline!r}: 'blur' and arrays run in the engine (cnnviz.explain)"
        )
    count = len(alphas)
    x5, classes = e.repeated(count)
    base_c = g.const(base, hint="baseline")
    a = g.const(alphas.astype(np.float32).reshape(1, -1, 1, 1, 1), hint="alphas")
    delta = g.op("Sub", x5, base_c)  # (N, 1, C, H, W)
    path = g.op("Add", base_c, g.mul(a, delta))  # (N, steps, C, H, W)
    flat = g.op("Reshape", path, g.ints([-1, *model.input_shape]))
    names = g.forward(flat)
    grads = e.input_gradient(names, classes)
    per_image = g.op("Reshape", grads, g.ints([-1, count, *model.input_shape]))
    w = g.const(weights.astype(np.float32).reshape(1, -1, 1, 1, 1), hint="ig_weights")
    total = g.reduce_sum(g.mul(per_image, w), [1], keepdims=True)
    attributions = g.mul(delta, total)  # (N, 1, C, H, W)
    maps = g.reduce_sum(attributions, [1, 2], keepdims=False)
    notes = {"cnnviz.steps": str(steps), "cnnviz.baseline": baseline, "cnnviz.rule": rule}
    return Compiled(maps, "(N, H, W)", notes=notes)


def smoothgrad_noise(model: Model, samples: int = 25, seed: int = 0) -> np.ndarray:
    """The noise a compiled SmoothGrad bakes in: (samples, C, H, W) float32 standard normal
    from ``numpy.random.default_rng(seed)``, the same for every image (the Python method
    seeds each image by its content, which a graph cannot; scale it by
    ``Preprocess.span * sigma`` per channel to get the added noise)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, *model.input_shape), dtype=np.float32)


def compile_smoothgrad(
    e: Explainer, *, samples: int = 25, sigma: float | str = 0.15, seed: int = 0
) -> Compiled:
    """:func:`~.smoothgrad.smoothgrad` (saliency ``abs`` averaged over noisy copies): the
    noise is a baked initializer (see :func:`smoothgrad_noise`): every runtime then adds the
    same noise (RandomNormalLike's stream differs between onnxruntime, OpenVINO and the
    reference evaluator, so the maps would too). Targets are the clean images'.

    ``sigma`` is a fixed number here, 0.15 (the paper's middle) by default: the Python
    method's default ``"auto"`` chooses per image by probing the model, which one graph
    does not do, so ``"auto"`` is an InputError naming the alternative (a number; read
    the one auto picks on a sample image with :func:`~.smoothgrad.auto_sigma`)."""
    g, model = e.builder, e.model
    if isinstance(sigma, str) and sigma.strip().lower() == "auto":
        raise InputError(
            "sigma='auto' cannot be compiled: the graph adds the same baked noise to every "
            "image and cannot choose sigma per image; pass a number (e.g. sigma=0.05; "
            "cnnviz.attribution.smoothgrad.auto_sigma(model, sample_image).sigmas tells the "
            "one auto picks on a sample image)"
        )
    sigma = float(sigma_value(sigma))
    if samples < 1:
        raise InputError(f"smoothgrad needs samples >= 1; got {samples}")
    scale = (model.preprocess.span * sigma).astype(np.float32)[:, None, None]
    noise = (smoothgrad_noise(model, samples, seed) * scale).astype(np.float32)
    x5, classes = e.repeated(samples)
    noisy = g.op("Add", x5, g.const(noise[None], hint="noise"))
    flat = g.op("Reshape", noisy, g.ints([-1, *model.input_shape]))
    names = g.forward(flat)
    maps = _saliency_map(e, names, classes, flat, "abs")
    per_image = g.op("Reshape", maps, g.ints([-1, samples, *model.input_shape[1:]]))
    notes = {
        "cnnviz.samples": str(samples),
        "cnnviz.sigma": str(sigma),
        "cnnviz.noise": (
            f"baked initializer: numpy.random.default_rng({seed}).standard_normal((samples, C, "
            "H, W), float32) x Preprocess.span x sigma, the same for every image: every "
            "runtime adds the same noise (RandomNormalLike's stream is runtime-specific)"
        ),
    }
    return Compiled(
        g.reduce("ReduceMean", per_image, [1], keepdims=False), "(N, H, W)", notes=notes
    )


# -------------------------------------------------------------------------- CAM family


def _cam_map(e: Explainer, tensor: Name, weights: Name, relu: bool, normalize: bool) -> Name:
    """The CAM template (:func:`~.cam.class_activation_map`) on (N, K) channel weights."""
    g = e.builder
    w = g.op("Unsqueeze", weights, g.ints([2, 3]))
    low = g.reduce_sum(g.mul(w, tensor), [1], keepdims=False)
    if relu:
        low = g.op("Relu", low)
    maps = _resize_to_input(g, low, e.model)
    return _per_image_normalize(g, maps) if normalize else maps


def _gradcam(e: Explainer, layer: str | None, relu: bool, normalize: bool) -> tuple[Name, str]:
    g, model = e.builder, e.model
    chosen = layer or default_layer(model)
    tensor = model.tensor_name(chosen)
    grads = g.backward(e.names, e.seeds(e.names, e.classes), [tensor])[tensor]
    weights = g.reduce("ReduceMean", grads, [2, 3], keepdims=False)
    return _cam_map(e, e.names[tensor], weights, relu, normalize), tensor


def compile_gradcam(e: Explainer, *, relu: bool = True, normalize: bool = True) -> Compiled:
    """:func:`~.cam.gradcam`: channel weights = the layer gradient's spatial mean."""
    maps, tensor = _gradcam(e, e.layer, relu, normalize)
    return Compiled(maps, "(N, H, W)", tensor)


def compile_guided_gradcam(e: Explainer) -> Compiled:
    """:func:`~.cam.guided_gradcam`: guided backprop x the upsampled Grad-CAM."""
    g = e.builder
    coarse, tensor = _gradcam(e, e.layer, True, True)
    fine = e.input_gradient(e.names, e.classes, "guided")
    return Compiled(g.mul(fine, g.op("Unsqueeze", coarse, g.ints([1]))), "(N, C, H, W)", tensor)


def compile_cam(e: Explainer, *, relu: bool = True, normalize: bool = True) -> Compiled:
    """:func:`~.cam.cam`: the linear head's weights of the class (no backward pass)."""
    g, model = e.builder, e.model
    head = find_cam_head(model)
    if e.layer is not None and model.tensor_name(e.layer) != head.layer:
        raise InputError(
            f"CAM is defined at the layer the global pooling reads ({head.layer!r}), not "
            f"{e.layer!r}; use gradcam for other layers"
        )
    if e.classes is None:
        assert e.target is not None
        raise TargetError(
            f"CAM explains class scores only; got the target {e.target.label}. Use gradcam "
            "for channels and neurons"
        )
    if head.weights is None:
        _, values = g.probe([head.layer])
        channels = values[head.layer].shape[1]
        weights = g.op(
            "OneHot", e.classes, g.const(channels, np.int64, "depth"), g.const([0.0, 1.0]), axis=-1
        )
    else:
        weights = g.op("Gather", g.const(head.weights, hint="cam_weights"), e.classes, axis=0)
    maps = _cam_map(e, e.names[head.layer], weights, relu, normalize)
    return Compiled(maps, "(N, H, W)", head.layer)


def options_of(fn: CompiledMethod) -> tuple[str, ...]:
    """The keyword options a compiled method takes."""
    code = fn.__code__
    return code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]


__all__ = [
    "Compiled",
    "CompiledMethod",
    "Explainer",
    "options_of",
    "smoothgrad_noise",
]
