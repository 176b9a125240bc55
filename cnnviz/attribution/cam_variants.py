"""The CAM variants on :func:`~.cam.class_activation_map`'s template: each supplies only its
weights of the layer's activations ``A`` (N, K, h, w); the template runs the model, upsamples,
applies the ReLU and normalises. ``g`` is the gradient of the target w.r.t. ``A``.

- :func:`gradcam_pp`: Grad-CAM++ (Chattopadhyay et al. 2018), the paper's closed form for an
  exponential of the score: ``w_k = sum_ij alpha_kij ReLU(g_kij)`` with
  ``alpha = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where ``g`` is 0);
- :func:`xgradcam`: XGrad-CAM (Fu et al. 2020), ``w_k = sum_ij g_kij A_kij / sum_ij A_kij``;
- :func:`layercam`: LayerCAM (Jiang et al. 2021), element-wise weights ``ReLU(g)``;
- :func:`hirescam`: HiResCAM (Draelos & Carin 2020), element-wise weights ``g``;
- :func:`eigencam`: Eigen-CAM (Muhammad & Yeasin 2020), class-agnostic: the projection of
  the (h w, K) activation matrix on its first right singular vector (the paper's SVD, no
  centering), its sign chosen so the vector sums to >= 0 (the projection then correlates
  positively with the summed activations);
- :func:`scorecam`: Score-CAM (Wang et al. 2020): each channel, min-max normalised at the
  layer's resolution and upsampled, masks the input; ``w = softmax_k`` of the masked
  inputs' target scores (as torch-cam and pytorch-grad-cam do); the masked copies run
  batched through :meth:`Model.run` in chunks of the model's ``max_batch``;
- :func:`ablationcam`: Ablation-CAM (Desai & Ramaswamy 2020), ``w_k = (y - y_k) / y`` with
  ``y_k`` the target score when channel ``k`` of the layer is zeroed; the ablated copies of
  the layer's activations run through the rest of the graph only
  (:class:`~cnnviz_core.downstream.Downstream`), batched to the memory budget;
- :func:`fullgrad`: FullGrad (Srinivas & Fleuret 2019), not a one-layer map: the input
  gradient x input plus every conv layer's bias gradient (gradient at its output x its
  bias), each ``|.|``, min-max normalised per image, upsampled and summed over channels.

Every function: ``method(model, images, target=None, *, layer=None, relu=True,
normalize=True) -> Attribution`` with (N, H, W) maps (see :func:`~.cam.gradcam`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnviz_core import Model, backward
from cnnviz_core.detection import box_position
from cnnviz_core.downstream import Downstream
from cnnviz_core.targets import ResolvedTarget, TargetLike

from .base import Attribution, Images, bilinear_resize, make_attribution
from .cam import WeightFn, class_activation_map, default_layer, normalize_maps


def _variant(
    model: Model,
    images: Images,
    target: TargetLike | list,
    layer: str | None,
    weights: WeightFn,
    method: str,
    gradients: bool,
    relu: bool,
    normalize: bool,
) -> Attribution:
    return class_activation_map(
        model,
        images,
        target,
        layer=layer or default_layer(model, target),
        weights=weights,
        method=method,
        gradients=gradients,
        relu=relu,
        normalize=normalize,
    )


# ------------------------------------------------------------------ gradient-weighted


def gradcam_pp_weights(
    activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
) -> np.ndarray:
    """Grad-CAM++'s channel weights (N, K) (float64 inside)."""
    assert grads is not None
    g = grads.astype(np.float64)
    g2 = g * g
    denominator = 2 * g2 + activations.sum(axis=(2, 3), dtype=np.float64)[..., None, None] * g2 * g
    alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=denominator != 0)
    return (alpha * np.maximum(g, 0)).sum(axis=(2, 3))


def xgradcam_weights(
    activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
) -> np.ndarray:
    """XGrad-CAM's channel weights (N, K): the activation-weighted mean of the gradient
    (0 for a channel whose activations sum to 0)."""
    assert grads is not None
    total = activations.sum(axis=(2, 3), dtype=np.float64)
    weighted = (grads.astype(np.float64) * activations).sum(axis=(2, 3))
    return np.divide(weighted, total, out=np.zeros_like(total), where=total != 0)


def layercam_weights(
    activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
) -> np.ndarray:
    """LayerCAM's element-wise weights (N, K, h, w): the positive gradient."""
    assert grads is not None
    return np.maximum(grads, 0)


def hirescam_weights(
    activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
) -> np.ndarray:
    """HiResCAM's element-wise weights (N, K, h, w): the gradient itself."""
    assert grads is not None
    return grads


def gradcam_pp(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """Grad-CAM++ (Chattopadhyay et al. 2018, "Grad-CAM++: Improved Visual Explanations for
    Deep Convolutional Networks") on ``layer`` (default: :func:`~.cam.default_layer`)."""
    return _variant(
        model, images, target, layer, gradcam_pp_weights, "gradcam++", True, relu, normalize
    )


def xgradcam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM") on ``layer``."""
    return _variant(
        model, images, target, layer, xgradcam_weights, "xgradcam", True, relu, normalize
    )


def layercam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """LayerCAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps
    for Localization") on ``layer``: works on shallow layers too."""
    return _variant(
        model, images, target, layer, layercam_weights, "layercam", True, relu, normalize
    )


def hirescam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks") on ``layer``."""
    return _variant(
        model, images, target, layer, hirescam_weights, "hirescam", True, relu, normalize
    )


# ------------------------------------------------------------------------- Eigen-CAM


def eigencam_weights(
    activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
) -> np.ndarray:
    """Eigen-CAM's channel weights (N, K): per image, the first right singular vector of
    the (h w, K) activations (float64), signed to sum to >= 0."""
    n, k = activations.shape[:2]
    weights = np.zeros((n, k), np.float64)
    for i in range(n):
        matrix = activations[i].reshape(k, -1).T.astype(np.float64)
        vector = np.linalg.svd(matrix, full_matrices=False)[2][0]
        weights[i] = -vector if vector.sum() < 0 else vector
    return weights


def eigencam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal
    Components") on ``layer``: class-agnostic (the target is resolved and recorded, the
    map does not depend on it); no backward pass. The singular vector's sign is free: for a
    box target it is the one that makes the map positive at the box's own grid cell (on a
    page of text the first component is the background, and "sums to >= 0" picks it)."""

    def weights(
        activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
    ) -> np.ndarray:
        w = eigencam_weights(activations, grads, targets)
        for i, t in enumerate(targets):
            cell = box_position(model, t, activations.shape[2:]) if t.kind == "box" else None
            if cell is not None and activations[i][:, cell[0], cell[1]] @ w[i] < 0:
                w[i] = -w[i]
        return w

    return _variant(model, images, target, layer, weights, "eigencam", False, relu, normalize)


# ------------------------------------------------------------------------- Score-CAM


def channel_masks(activations: np.ndarray) -> np.ndarray:
    """(N, K, h, w) activations -> each channel min-max normalised to [0, 1] (constant
    channels give 0), float32."""
    n, k = activations.shape[:2]
    flat = activations.reshape(n, k, -1).astype(np.float64)
    low = flat.min(axis=2, keepdims=True)
    span = flat.max(axis=2, keepdims=True) - low
    masks = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return masks.reshape(activations.shape).astype(np.float32)


def scorecam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks") on ``layer``: N x K masked forwards, batched."""
    batch = model.prepare(images)
    size = batch.shape[2:]

    def score_weights(
        activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
    ) -> np.ndarray:
        n, k = activations.shape[:2]
        masks = channel_masks(activations)
        tensors = sorted({t.tensor for t in targets})
        scores = np.zeros((n, k), np.float64)
        total = n * k
        step = min(model.max_batch, total)
        buffer = np.empty((step, *batch.shape[1:]), batch.dtype)  # reused: no page faults
        for begin in range(0, total, step):
            rows = np.arange(begin, min(begin + step, total))
            image, channel = rows // k, rows % k
            upsampled = bilinear_resize(masks[image, channel], size)[:, None]
            masked = buffer[: len(rows)]
            # rows are sorted by image: one slice of the chunk per image
            spans = [(i, slice(*np.searchsorted(image, [i, i + 1]))) for i in np.unique(image)]
            for i, mine in spans:
                np.multiply(upsampled[mine], batch[i], out=masked[mine])
            values = model.run(masked, taps=tensors, outputs=False)
            for i, mine in spans:
                t = targets[i]
                scores[i, channel[mine]] = t.values(values[t.tensor][mine])
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return weights / weights.sum(axis=1, keepdims=True)

    return _variant(model, batch, target, layer, score_weights, "scorecam", False, relu, normalize)


# ---------------------------------------------------------------------- Ablation-CAM


def ablationcam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization") on ``layer``: per image, K
    forwards of the graph after ``layer`` with one channel zeroed each. A target the layer
    does not reach gets zero weights (ablating changes nothing); ``w_k = y - y_k`` when
    ``y`` is 0."""
    batch = model.prepare(images)
    layer = layer or default_layer(model, target)

    def ablation_weights(
        activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
    ) -> np.ndarray:
        n, k = activations.shape[:2]
        rest = Downstream.of(model, layer, [t.tensor for t in targets])
        base = rest.base(batch)
        weights = np.zeros((n, k), np.float64)
        for i, t in enumerate(targets):
            if t.tensor not in rest.outputs:
                continue
            mine = {name: value[i : i + 1] for name, value in base.items()}
            score = t.values(mine[t.tensor])[0]
            ablated_scores = np.empty(k, np.float64)
            for begin in range(0, k, rest.max_batch):
                channels = np.arange(begin, min(begin + rest.max_batch, k))
                ablated = np.repeat(activations[i : i + 1], len(channels), axis=0)
                ablated[np.arange(len(channels)), channels] = 0
                ablated_scores[channels] = t.values(rest.run(ablated, mine)[t.tensor])
            drop = score - ablated_scores
            weights[i] = drop / score if score != 0 else drop
        return weights

    return _variant(
        model, batch, target, layer, ablation_weights, "ablationcam", False, relu, normalize
    )


# -------------------------------------------------------------------------- FullGrad


def conv_biases(model: Model) -> dict[str, np.ndarray]:
    """Each Conv's output tensor -> its constant bias (K,), in graph order (convs without a
    bias have no bias gradient)."""
    constants = model.constants
    return {
        node.output[0]: constants[node.input[2]].astype(np.float32)
        for node in model.runnable.graph.node
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] in constants
    }


def fullgrad_part(values: np.ndarray) -> np.ndarray:
    """FullGrad's post-processing of one (N, C, h, w) term: ``|.|``, then min-max over each
    image's (C, h, w) (a constant term gives 0)."""
    flat = np.abs(values.astype(np.float64)).reshape(len(values), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    return np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0).reshape(
        values.shape
    )


def fullgrad(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    normalize: bool = True,
) -> Attribution:
    """FullGrad (Srinivas & Fleuret 2019, "Full-Gradient Representation for Neural Network
    Visualization"): one backward pass for the input and every conv output.

    Returns:
        (N, H, W) maps (min-max to [0, 1] when ``normalize``), extras ``input_term`` and
        ``bias_terms`` (N, H, W) before the final normalisation.
    """
    batch = model.prepare(images)
    biases = conv_biases(model)
    result = backward.gradients(model, batch, target, wrt=list(biases))
    size = batch.shape[2:]
    inputs = fullgrad_part(result.grads[model.input_name] * batch).sum(axis=1)
    bias_terms = np.zeros((len(batch), *size), np.float64)
    for name, bias in biases.items():
        part = fullgrad_part(result.grads[name] * bias[None, :, None, None]).sum(axis=1)
        bias_terms += bilinear_resize(part.astype(np.float32), size)
    maps = inputs + bias_terms
    if normalize:
        maps = normalize_maps(maps)
    return make_attribution(
        maps,
        "fullgrad",
        result.targets,
        {"normalize": normalize, "conv_layers": len(biases)},
        model,
        batch,
        extras={
            "input_term": inputs.astype(np.float32),
            "bias_terms": bias_terms.astype(np.float32),
        },
        gradients=True,
    )


__all__ = [
    "ablationcam",
    "channel_masks",
    "eigencam",
    "eigencam_weights",
    "fullgrad",
    "gradcam_pp",
    "gradcam_pp_weights",
    "hirescam",
    "hirescam_weights",
    "layercam",
    "layercam_weights",
    "scorecam",
    "xgradcam",
    "xgradcam_weights",
]
