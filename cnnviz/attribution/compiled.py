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
from .perturbation import blur_sigma_for
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
    e: Explainer,
    *,
    steps: int = 64,
    baseline: str | np.ndarray = "zeros",
    rule: str = "middle",
    blur_sigma: float | None = None,
) -> Compiled:
    """:func:`~.integrated_gradients.integrated_gradients`: every (image, step) path point
    of the Riemann sum in one batch (N * steps) through a second forward copy; the targets
    are the clean images' (as the Python method resolves them). ``baseline``: ``zeros``,
    ``black``, ``blur`` (each image blurred in the graph: :func:`_blurred`) or one image as
    an array, (C, H, W) or (1, C, H, W) or broadcastable to it, baked as an initializer."""
    g, model = e.builder, e.model
    if steps < 1:
        raise InputError(f"integrated gradients needs steps >= 1; got {steps}")
    is_blur = isinstance(baseline, str) and baseline == "blur"
    if blur_sigma is not None and not is_blur:
        kind = "an array" if isinstance(baseline, np.ndarray) else repr(baseline)
        raise InputError(f"blur_sigma= applies to baseline='blur'; got the baseline {kind}")
    alphas, weights = path_points(steps, rule)
    count = len(alphas)
    x5, classes = e.repeated(count)
    notes = {"cnnviz.steps": str(steps), "cnnviz.rule": rule}
    if isinstance(baseline, np.ndarray):
        base_c = g.const(_baseline_array(baseline, model), hint="baseline")
        notes["cnnviz.baseline"] = f"array {tuple(baseline.shape)} (baked initializer)"
    elif is_blur:
        sigma = blur_sigma_for(model.input_shape[1:], blur_sigma)
        base_c = g.op("Unsqueeze", _blurred(g, e.x, model, sigma), g.ints([1]))
        notes["cnnviz.baseline"] = "blur"
        notes["cnnviz.blur_sigma"] = repr(float(sigma))
    elif baseline in ("zeros", "black"):
        if baseline == "zeros":
            base = np.zeros((1, 1, *model.input_shape), np.float32)
        else:
            black = np.zeros((*model.input_shape[1:], 3), np.uint8)
            base = model.prepare([black])[None]
        base_c = g.const(base, hint="baseline")
        notes["cnnviz.baseline"] = baseline
    else:
        raise InputError(
            f"unknown baseline {baseline!r}; choose one of {BASELINES} or a (C, H, W) array"
        )
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
    return Compiled(maps, "(N, H, W)", notes=notes)


def _baseline_array(baseline: np.ndarray, model: Model) -> np.ndarray:
    """A user's baseline image as a (1, 1, C, H, W)-broadcastable float32 initializer
    (:func:`~.integrated_gradients.make_baseline` broadcasts it to the batch)."""
    image = (1, *model.input_shape)
    try:
        fits = baseline.ndim <= 4 and np.broadcast_shapes(baseline.shape, image) == image
    except ValueError:
        fits = False
    if not fits:
        batch = baseline.ndim == 4 and baseline.shape[0] > 1
        why = ": one baseline for every image, a graph's batch size is not fixed" if batch else ""
        raise InputError(
            f"baseline= array must be one preprocessed image, shape (C, H, W) = "
            f"{model.input_shape} or (1, C, H, W) (or broadcastable to it, e.g. (C, 1, 1)); "
            f"got {baseline.shape}{why}"
        )
    array = np.asarray(baseline, np.float32)
    return array.reshape((1,) * (5 - array.ndim) + array.shape)


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """:func:`~.perturbation.gaussian_blur` along one axis of ``size`` as a (size, size)
    float32 matrix ``M`` (``y_i = sum_j M_ij x_j``): the same float32 taps (radius
    ceil(3 sigma)) and borders (reflected without repeating the edge, as numpy's
    ``reflect``, or the edge repeated when the axis is not longer than the radius)."""
    if sigma <= 0:
        return np.eye(size, dtype=np.float32)
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    matrix = np.zeros((size, size), np.float64)
    for i in range(size):
        for k, tap in enumerate(taps):
            j = i + k - radius
            if size > radius:  # numpy's reflect: -1 -> 1, size -> size - 2
                j = -j if j < 0 else 2 * (size - 1) - j if j >= size else j
            else:
                j = min(max(j, 0), size - 1)
            matrix[i, j] += float(tap)
    return matrix.astype(np.float32)


def _blurred(g: GraphBuilder, x: Name, model: Model, sigma: float) -> Name:
    """Each image of ``x`` (N, C, H, W) Gaussian-blurred as
    :func:`~.perturbation.gaussian_blur` blurs it (rows, then columns): one MatMul per axis
    with :func:`blur_matrix` (the borders are in the matrix, no Pad)."""
    if sigma <= 0:
        return x
    height, width = model.input_shape[1:]
    rows = g.axis_matmul(x, 4, 2, blur_matrix(height, sigma))
    return g.axis_matmul(rows, 4, 3, blur_matrix(width, sigma))


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
    return _cam_finish(e, g.reduce_sum(g.mul(w, tensor), [1], keepdims=False), relu, normalize)


def _elementwise_cam_map(
    e: Explainer, tensor: Name, weights: Name, relu: bool, normalize: bool
) -> Name:
    """The CAM template on (N, K, h, w) element-wise weights (LayerCAM, HiResCAM):
    ``sum_k w_kij A_kij``."""
    g = e.builder
    return _cam_finish(
        e, g.reduce_sum(g.mul(weights, tensor), [1], keepdims=False), relu, normalize
    )


def _cam_finish(e: Explainer, low: Name, relu: bool, normalize: bool) -> Name:
    """The template's tail on the (N, h, w) layer map: ReLU, upsampling, normalisation."""
    g = e.builder
    if relu:
        low = g.op("Relu", low)
    maps = _resize_to_input(g, low, e.model)
    return _per_image_normalize(g, maps) if normalize else maps


def _layer_gradient(e: Explainer, layer: str | None) -> tuple[str, Name, Name]:
    """(the layer's model tensor, its activations A, the target's gradient w.r.t. A), both
    (N, K, h, w) graph tensors, at ``layer`` or :func:`~.cam.default_layer`."""
    g, model = e.builder, e.model
    tensor = model.tensor_name(layer or default_layer(model, e.target))
    grads = g.backward(e.names, e.seeds(e.names, e.classes), [tensor])[tensor]
    return tensor, e.names[tensor], grads


def _gradcam(e: Explainer, layer: str | None, relu: bool, normalize: bool) -> tuple[Name, str]:
    g = e.builder
    tensor, activations, grads = _layer_gradient(e, layer)
    weights = g.reduce("ReduceMean", grads, [2, 3], keepdims=False)
    return _cam_map(e, activations, weights, relu, normalize), tensor


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


def compile_gradcam_pp(e: Explainer, *, relu: bool = True, normalize: bool = True) -> Compiled:
    """:func:`~.cam_variants.gradcam_pp` (Grad-CAM++, Chattopadhay et al. 2018): channel
    weights ``w_k = sum_ij alpha_kij ReLU(g_kij)``, ``alpha = g^2 / (2 g^2 + S_k g^3)`` with
    ``S_k = sum_ab A_kab`` (0 where the denominator is 0). Written as the equal
    ``ReLU(g) / (2 + S_k g)`` where ``g > 0`` and ``2 + S_k g != 0``, else 0: the Python
    weights are float64, and in float32 ``g^2`` and ``g^3`` underflow for small gradients
    where the quotient does not."""
    g = e.builder
    tensor, activations, grads = _layer_gradient(e, e.layer)
    total = g.reduce_sum(activations, [2, 3], keepdims=True)  # S (N, K, 1, 1)
    denominator = g.op("Add", g.scalar(2.0), g.mul(total, grads))
    defined = g.op(
        "And",
        g.op("Greater", grads, g.scalar(0.0)),
        g.op("Not", g.op("Equal", denominator, g.scalar(0.0))),
    )
    safe = g.where(defined, denominator, g.scalar(1.0))
    terms = g.masked(g.op("Div", g.op("Relu", grads), safe), defined)
    weights = g.reduce_sum(terms, [2, 3], keepdims=False)
    return Compiled(_cam_map(e, activations, weights, relu, normalize), "(N, H, W)", tensor)


def compile_xgradcam(e: Explainer, *, relu: bool = True, normalize: bool = True) -> Compiled:
    """:func:`~.cam_variants.xgradcam` (XGrad-CAM, Fu et al. 2020): channel weights
    ``w_k = sum_ij g_kij A_kij / sum_ij A_kij`` (0 where the activations sum to 0)."""
    g = e.builder
    tensor, activations, grads = _layer_gradient(e, e.layer)
    total = g.reduce_sum(activations, [2, 3], keepdims=False)
    weighted = g.reduce_sum(g.mul(grads, activations), [2, 3], keepdims=False)
    nonzero = g.op("Not", g.op("Equal", total, g.scalar(0.0)))
    weights = g.masked(g.op("Div", weighted, g.where(nonzero, total, g.scalar(1.0))), nonzero)
    return Compiled(_cam_map(e, activations, weights, relu, normalize), "(N, H, W)", tensor)


def compile_layercam(e: Explainer, *, relu: bool = True, normalize: bool = True) -> Compiled:
    """:func:`~.cam_variants.layercam` (LayerCAM, Jiang et al. 2021): element-wise weights
    ``ReLU(g)`` (N, K, h, w): ``map = sum_k ReLU(g_k) A_k``."""
    g = e.builder
    tensor, activations, grads = _layer_gradient(e, e.layer)
    maps = _elementwise_cam_map(e, activations, g.op("Relu", grads), relu, normalize)
    return Compiled(maps, "(N, H, W)", tensor)


def compile_hirescam(e: Explainer, *, relu: bool = True, normalize: bool = True) -> Compiled:
    """:func:`~.cam_variants.hirescam` (HiResCAM, Draelos & Carin 2020): element-wise weights
    ``g`` (N, K, h, w): ``map = sum_k g_k A_k``."""
    tensor, activations, grads = _layer_gradient(e, e.layer)
    maps = _elementwise_cam_map(e, activations, grads, relu, normalize)
    return Compiled(maps, "(N, H, W)", tensor)


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
