"""The CAM family as one template: class activation maps weight a conv layer's channels.

    map(x) = normalise(upsample(ReLU(sum_k w_k A_k)))

The template (:func:`class_activation_map`) runs the model, collects the layer's
activations ``A`` (and their gradients when the variant needs them), upsamples bilinearly
to the input size, applies the ReLU and normalises each map to [0, 1] (min-max, as
pytorch-grad-cam does). Each variant supplies only its channel weights ``w``:

- :func:`cam`: CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative
  Localization"): the weights of the linear layer after global average pooling, or for a
  model whose last conv already has one channel per class (SqueezeNet's conv10), that
  channel alone;
- :func:`gradcam`: Grad-CAM (Selvaraju et al. 2017): the spatial mean of the gradient of
  the target w.r.t. each channel, on any conv layer;
- :func:`guided_gradcam`: Guided Grad-CAM, guided backprop x upsampled Grad-CAM;
- :mod:`.cam_variants`: Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM, Score-CAM and
  Ablation-CAM on this template.

For a GAP + linear head, CAM and Grad-CAM at the pooled layer are equal up to a positive
factor (1 / (h w)), hence equal after normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from cnnviz_core import InputError, Model, TargetError, UnsupportedOpError, backward
from cnnviz_core import graph as onnx_graph
from cnnviz_core.detection import Box, box_feature_map
from cnnviz_core.graph import RESHAPE_OPS
from cnnviz_core.targets import (
    ResolvedTarget,
    TargetLike,
    resolve_known,
    resolve_target,
    resolve_targets,
    score_tensor,
    seed_tensors,
    tensor_shape,
)

from .base import Attribution, Images, bilinear_resize, make_attribution
from .guided import guided_backprop

#: the weights of a variant: (activations (N, K, h, w), gradients or None, targets) ->
#: (N, K) channel weights, or (N, K, h, w) element-wise ones (LayerCAM, HiResCAM)
WeightFn = Callable[[np.ndarray, np.ndarray | None, Sequence[ResolvedTarget]], np.ndarray]


def default_layer(model: Model, target: Any = None) -> str:
    """The last layer with spatial extent (a 4-D output larger than 1x1, not a Transpose: a
    channels-last export's NHWC copy before its flatten is no map): the usual Grad-CAM
    layer, just before global pooling. Shapes left symbolic by the export (a model
    that accepts any image size) come from a probe forward at the preprocessing size.

    For :class:`~cnnviz_core.detection.Box` targets: the feature map that feeds the box's
    head (:func:`~cnnviz_core.detection.box_feature_map`). On a multi-scale detector the
    last spatial map belongs to one grid only (YOLOX's stride 32): a box of another grid
    does not depend on it, so its Grad-CAM there is all zero.

    Raises:
        InputError: no spatial layer, or box targets of one batch fed by different maps.
    """
    boxes = [
        resolve_target(model, t)
        for t in (target if isinstance(target, (list, tuple)) else [target])
        if isinstance(t, Box) or (isinstance(t, ResolvedTarget) and t.kind == "box")
    ]
    feeding = list(dict.fromkeys(box_feature_map(model, t) for t in boxes))
    if len(feeding) > 1:
        raise InputError(
            "the box targets of this batch are fed by different feature maps "
            f"({', '.join(map(str, feeding))}): explain them one at a time, or name one map "
            "with layer="
        )
    if feeding and feeding[0] is not None:
        return feeding[0]
    for layer in reversed(model.layers):
        shape = model.layer_shape(layer.name)
        if (
            shape is not None
            and len(shape) == 4
            and layer.op_type not in RESHAPE_OPS
            and layer.op_type != "Transpose"  # axes 2, 3 of a permuted map are not H, W
            and all(isinstance(d, int) for d in shape[2:])
            and shape[2] * shape[3] > 1
        ):
            return layer.name
    raise InputError(
        f"model {model.name!r} has no layer with a spatial map (N, C, H, W larger than 1x1) "
        "for a class activation map; name one with layer="
    )


def class_activation_map(
    model: Model,
    images: Images,
    target: Any,
    *,
    layer: str,
    weights: WeightFn,
    method: str,
    gradients: bool,
    relu: bool = True,
    normalize: bool = True,
    options: dict[str, Any] | None = None,
) -> Attribution:
    """The CAM template (see the module doc); ``weights`` is the variant's part.

    Returns:
        An :class:`~.base.Attribution` with (N, H, W) maps in [0, 1] (when
        ``normalize``), extras ``layer_maps`` (N, h, w) before upsampling and
        ``weights`` (N, K) or (N, K, h, w).
    """
    batch = model.prepare(images)
    tensor = model.tensor_name(layer)
    grads: np.ndarray | None
    if gradients:
        result = backward.gradients(model, batch, target, wrt=[tensor])
        activations, grads, targets = result.values[tensor], result.grads[tensor], result.targets
    else:  # one forward run: the layer and the targets' tensors (the predicted class)
        known = resolve_known(model, batch, target)
        taps = list(dict.fromkeys([tensor, *seed_tensors(model, known)]))
        values = model.run(batch, taps=taps, outputs=False)
        activations, grads = values[tensor], None
        targets = resolve_targets(model, batch, known, values)
    if activations.ndim != 4:
        raise InputError(
            f"{method} needs a layer with a spatial map (N, C, H, W); {layer!r} has shape "
            f"{activations.shape}"
        )
    w = np.asarray(weights(activations, grads, targets), np.float32)
    if w.shape == activations.shape:  # element-wise weights
        low = np.einsum("nkhw,nkhw->nhw", w, activations, optimize=True)
    else:
        low = np.einsum("nk,nkhw->nhw", w, activations, optimize=True)
    if relu:
        low = np.maximum(low, 0)
    maps = bilinear_resize(low, batch.shape[2:])
    if normalize:
        maps = normalize_maps(maps)
    return make_attribution(
        maps,
        method,
        targets,
        {"layer": tensor, "relu": relu, "normalize": normalize, **(options or {})},
        model,
        batch,
        extras={"layer_maps": low.astype(np.float32), "weights": w},
        gradients=gradients,
    )


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] per image; a constant map becomes zeros."""
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1)[:, None, None]
    span = (flat.max(axis=1) - flat.min(axis=1))[:, None, None]
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


# ------------------------------------------------------------------------------ Grad-CAM


def gradcam_weights(
    activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
) -> np.ndarray:
    """Grad-CAM's weights: the gradient averaged over each channel's map."""
    assert grads is not None
    return grads.mean(axis=(2, 3))


def gradcam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """Grad-CAM (Selvaraju et al. 2017) on ``layer`` (default: :func:`default_layer`).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency`.
        layer: a conv layer (name or alias) with a spatial map (default: the last one;
            for a box target, the map that feeds the box's head).
        relu: keep only the positive evidence (the paper's ReLU).
        normalize: min-max each map to [0, 1].

    Returns:
        (N, H, W) maps, upsampled bilinearly to the input size.
    """
    return class_activation_map(
        model,
        images,
        target,
        layer=layer or default_layer(model, target),
        weights=gradcam_weights,
        method="gradcam",
        gradients=True,
        relu=relu,
        normalize=normalize,
    )


def guided_gradcam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
) -> Attribution:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop (N, C, H, W) times the
    upsampled Grad-CAM, channel by channel."""
    batch = model.prepare(images)
    coarse = gradcam(model, batch, target, layer=layer)
    fine = guided_backprop(model, batch, coarse.targets)
    return make_attribution(
        fine.maps * coarse.maps[:, None],
        "guided-gradcam",
        coarse.targets,
        coarse.options,
        model,
        batch,
        extras={"gradcam": coarse.maps, "guided": fine.maps},
        gradients=True,
    )


# ----------------------------------------------------------------------------------- CAM


@dataclass(frozen=True)
class CamHead:
    """Where CAM reads a model: the layer fed to global average pooling, and the linear
    layer's weights (classes, K) after it (None: one channel per class, identity)."""

    layer: str
    weights: np.ndarray | None


def find_cam_head(model: Model) -> CamHead:
    """Walk the graph back from the class scores: linear (Gemm/MatMul[+Add]) <- reshapes
    <- global average pooling (GlobalAveragePool, ReduceMean over H, W) <- the layer; or
    global average pooling of a layer with one channel per class.

    Raises:
        UnsupportedOpError: the head is something else (the message says what was found).
    """
    nodes = model.runnable.graph.node
    producers = {o: n for n in nodes for o in n.output}
    constants = model.constants
    scores = score_tensor(model)

    def walk(name: str) -> onnx.NodeProto | None:
        node = producers.get(name)
        while node is not None and node.op_type in RESHAPE_OPS:
            node = producers.get(node.input[0])
        return node

    def why(found: onnx.NodeProto | None, wanted: str) -> UnsupportedOpError:
        what = f"{found.op_type} node {found.name or found.output[0]!r}" if found else "the input"
        return UnsupportedOpError(
            f"CAM needs a head of global average pooling + one linear layer, or a last conv "
            f"with one channel per class before global average pooling; in model "
            f"{model.name!r} the class scores {scores!r} come from {what} where {wanted} was "
            "expected. Use gradcam, which works on any conv layer"
        )

    node = walk(scores)
    weights: np.ndarray | None = None
    if node is not None and node.op_type in ("Gemm", "MatMul", "Add"):
        linear = node
        bias_free = linear
        if linear.op_type == "Add":
            data = [i for i in linear.input if i not in constants]
            matmul = producers.get(data[0]) if len(data) == 1 else None
            if matmul is None or matmul.op_type != "MatMul":
                raise why(linear, "a MatMul plus a constant bias")
            bias_free = matmul
        attrs = onnx_graph.attributes(bias_free)
        a, b = bias_free.input[0], bias_free.input[1]
        if b not in constants or a in constants or attrs.get("transA", 0):
            raise why(bias_free, "a linear layer with constant weights")
        matrix = constants[b].astype(np.float32) * float(attrs.get("alpha", 1.0))
        weights = matrix if attrs.get("transB", 0) else matrix.T  # (classes, K)
        node = walk(a)
    if node is None or not _is_global_average(node, constants):
        raise why(node, "global average pooling (GlobalAveragePool or ReduceMean over H, W)")
    layer = node.input[0]
    if weights is None:
        channels = tensor_shape(model, layer)[0]
        if channels != model.num_classes:
            raise UnsupportedOpError(
                f"CAM without a linear head needs one channel per class before the global "
                f"pooling; layer {layer!r} has {channels} channels for {model.num_classes} "
                "classes. Use gradcam"
            )
    return CamHead(layer, weights)


def cam(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    layer: str | None = None,
    relu: bool = True,
    normalize: bool = True,
) -> Attribution:
    """CAM (Zhou et al. 2016), for class targets on a GAP + linear (or per-class channel)
    head; ``layer`` may only name the layer the head pools (see :func:`find_cam_head`)."""
    head = find_cam_head(model)
    if layer is not None and model.tensor_name(layer) != head.layer:
        raise InputError(
            f"CAM is defined at the layer the global pooling reads ({head.layer!r}), not "
            f"{layer!r}; use gradcam for other layers"
        )

    def cam_weights(
        activations: np.ndarray, grads: np.ndarray | None, targets: Sequence[ResolvedTarget]
    ) -> np.ndarray:
        rows = []
        for t in targets:
            if t.kind != "class" or t.class_index is None:
                raise TargetError(
                    f"CAM explains class scores only; got the target {t.label}. Use gradcam "
                    "for channels and neurons"
                )
            if head.weights is None:
                row = np.zeros(activations.shape[1], np.float32)
                row[t.class_index] = 1.0
            else:
                row = head.weights[t.class_index]
            rows.append(row)
        return np.stack(rows)

    return class_activation_map(
        model,
        images,
        target,
        layer=head.layer,
        weights=cam_weights,
        method="cam",
        gradients=False,
        relu=relu,
        normalize=normalize,
    )


def _is_global_average(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    axes = onnx_graph.attributes(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].tolist()
    return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]
