"""The loss network of neural texture synthesis and style transfer: a classifier's feature maps
at a few layers, their Gram matrices, and the style, content and total-variation losses.

Gatys et al. 2015 ("Texture Synthesis Using Convolutional Neural Networks") describe a texture
by the Gram matrices G = F F^T of a pretrained CNN's feature maps at several depths; Gatys et
al. 2016 ("Image Style Transfer Using Convolutional Neural Networks") add a content loss, the
feature maps themselves at one middle layer. :class:`LossNetwork` computes both from RGB
pixels in [0, 1] through the torch bridge (one forward, only up to the deepest layer needed,
any spatial size), with the Gram matrices on the native kernels
(:func:`cnnviz_core.torch_bridge.gram_matrix`).

    from cnnviz.synthesis.style_losses import LossNetwork
    net = LossNetwork(model)                      # default layers for the model
    targets = net.targets(style_pixels)           # {layer: (1, C, C) Gram}
    feats = net.features(pixels)                  # {layer: (N, C, H, W)}
    loss = net.style_loss(net.grams(feats), targets)

Default layers (:func:`default_style_layers`, :func:`default_content_layer`):

- VGG-style networks (layers named ``conv1_1`` ... ``conv5_1``, Caffe/Caffe2 style): the
  ReLUs of conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 for style, the ReLU of conv4_2 for
  content, as Gatys et al.
- SqueezeNet 1.1 (Caffe2 names, as ../shared/data's): the first ReLU ``conv1_2`` (stride 2),
  then the output of the first fire module after each max-pool: ``fire2/concat_1`` (stride
  4), ``fire4/concat_1`` (8), ``fire6/concat_1`` (16): the same ladder as VGG's conv{k}_1 (a
  fire module's concat is the concat of two ReLUs). Content: ``fire5/concat_1`` (stride 8, the
  second module of its block, like conv4_2).
- Any other network: the first ReLU-like feature map, then the first one after each
  downsampling (receptive-field stride rises: :attr:`cnnviz_core.Layer.receptive_field`).
  On a VGG this gives exactly conv1_1 ... conv5_1. Content: the first of those at stride
  8 or more, else the deepest. The shapes model: ``relu``, ``relu_1``, ``relu_2``,
  ``relu_3`` (strides 1, 2, 4, 8); content ``relu_3``.

Losses are relative by default (``normalize=True``): each layer's mean squared Gram
difference is divided by the mean square of its target Gram, the content loss by the mean
square of its target features. They start near 1 from noise on any network, whatever its
input scale (SqueezeNet takes 0-255 pixels, the shapes model [-1, 1]), so the same weights
work across networks; ``normalize=False`` gives the plain mean squared differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import MAX_PIXELS_ENV, ImageLike, load_image, max_image_pixels

from .base import bridge, require_torch

#: ops whose outputs serve as style/content features
RELU_LIKE = ("Relu", "LeakyRelu", "Clip", "PRelu", "Elu", "Selu", "Gelu", "HardSwish")
#: Gatys et al.'s VGG layers: the ReLUs of these convolutions
VGG_STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
VGG_CONTENT = "conv4_2"
#: SqueezeNet 1.1 (Caffe2 names): first ReLU, then the first fire module after each max-pool
SQUEEZENET_STYLE = ("conv1_2", "fire2/concat_1", "fire4/concat_1", "fire6/concat_1")
SQUEEZENET_CONTENT = "fire5/concat_1"
#: ITU-R 601 luma, as PIL's convert("L") that grey models' preprocessing uses
LUMA = (0.299, 0.587, 0.114)

Size = int | tuple[int, int]


# ------------------------------------------------------------------------ default layers


def default_style_layers(model: Model) -> list[str]:
    """The style layers of ``model``, shallow to deep (see the module docstring): Gatys et
    al.'s for VGG-style names, the fire-module ladder for SqueezeNet 1.1, else the first
    ReLU-like feature map and the first after each downsampling.

    Raises:
        InputError: the model has no ReLU-like feature maps (name the layers yourself).
    """
    vgg = _vgg_layers(model)
    if vgg is not None:
        return [name for name in (vgg.get(label) for label in VGG_STYLE) if name is not None]
    if _has_layers(model, (*SQUEEZENET_STYLE, SQUEEZENET_CONTENT)):
        return list(SQUEEZENET_STYLE)
    return [name for name, _ in _downsampling_ladder(model)]


def default_content_layer(model: Model) -> str:
    """The content layer of ``model``: VGG's conv4_2 ReLU, SqueezeNet 1.1's
    ``fire5/concat_1``, else the first automatic style layer at stride 8 or more (the
    deepest when none is that deep)."""
    vgg = _vgg_layers(model)
    if vgg is not None and VGG_CONTENT in vgg:
        return vgg[VGG_CONTENT]
    if _has_layers(model, (*SQUEEZENET_STYLE, SQUEEZENET_CONTENT)):
        return SQUEEZENET_CONTENT
    ladder = _downsampling_ladder(model)
    return next((name for name, stride in ladder if stride >= 8), ladder[-1][0])


def _has_layers(model: Model, names: Sequence[str]) -> bool:
    known = {layer.name for layer in model.layers}
    return all(name in known for name in names)


def _feature_maps(model: Model) -> list[Any]:
    return [
        layer
        for layer in model.layers
        if layer.op_type in RELU_LIKE
        and layer.shape is not None
        and len(layer.shape) == 4
        and layer.receptive_field is not None
    ]


def _downsampling_ladder(model: Model) -> list[tuple[str, int]]:
    """(name, stride) of the first ReLU-like map and the first after each stride rise."""
    ladder: list[tuple[str, int]] = []
    for layer in _feature_maps(model):
        stride = max(layer.receptive_field.stride)
        if not ladder or stride > ladder[-1][1]:
            ladder.append((layer.name, stride))
    if not ladder:
        raise InputError(
            f"model {model.name!r} has no ReLU-like feature maps to pick style layers from; "
            "give the layers (`cnnviz layers MODEL` lists them)"
        )
    return ladder


def _vgg_layers(model: Model) -> dict[str, str] | None:
    """VGG label (conv1_1...) -> its ReLU's layer name, when conv1_1 and conv2_1 are found
    (a ReLU named relu{b}_{i}, or one fed by a Conv named conv{b}_{i} / conv{b}_{i}_1)."""
    made_by = {out: node for node in model.runnable.graph.node for out in node.output if out}
    names_of = {layer.name: {layer.name, *layer.aliases} for layer in model.layers}
    found: dict[str, str] = {}
    for layer in _feature_maps(model):
        labels = set(names_of[layer.name])
        node = made_by.get(layer.name)
        source = made_by.get(node.input[0]) if node is not None and node.input else None
        if source is not None and source.op_type == "Conv":
            conv = {source.name, *names_of.get(source.output[0], {source.output[0]})}
            labels |= conv | {name[:-2] for name in conv if name.endswith("_1")}
        for label in (*VGG_STYLE, VGG_CONTENT):
            if label in labels or f"relu{label[4:]}" in labels:
                found.setdefault(label, layer.name)
    return found if {"conv1_1", "conv2_1"} <= found.keys() else None


# ------------------------------------------------------------------------------ pixels


def load_pixels(image: ImageLike, size: Size | None = None, device: str = "cpu") -> Any:
    """An image as a float32 (1, 3, H, W) RGB tensor in [0, 1].

    Args:
        image: path, PIL image or (H, W, 3) / (H, W) array.
        size: None keeps the image's size; an int makes the longer side that long (aspect
            kept); (H, W) resizes to exactly that.
    """
    torch = require_torch()
    array = load_image(image)
    if size is not None:
        h, w = fit_size(array.shape[:2], size)
        if (h, w) != array.shape[:2]:
            pil = Image.fromarray(array).resize((w, h), Image.Resampling.LANCZOS)
            array = np.asarray(pil)
    pixels = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255.0
    return pixels[None].to(device)


def noise_pixels(shape: tuple[int, ...], seed: int, device: Any = "cpu") -> Any:
    """Seeded white noise: pixels uniform in [0, 1] (where Gatys et al. start)."""
    torch = require_torch()
    values = np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)
    return torch.from_numpy(values).to(device)


def fit_size(shape: tuple[int, int], size: Size) -> tuple[int, int]:
    """(H, W) for an image of ``shape`` asked to be ``size`` (int: longer side; (H, W))."""
    if isinstance(size, (int, np.integer)):
        if size < 1:
            raise InputError(f"size must be positive, got {size}")
        h, w = shape
        scale = int(size) / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    else:
        h, w = (int(v) for v in size)
        if h < 1 or w < 1:
            raise InputError(f"size must be positive, got {tuple(size)}")
    if h * w > max_image_pixels():
        raise InputError(
            f"size {h}x{w} is {h * w} pixels, over the limit of {max_image_pixels()} "
            f"({MAX_PIXELS_ENV}); give a smaller size"
        )
    return h, w


def to_pictures(pixels: Any) -> np.ndarray:
    """(N, 3, H, W) pixels in [0, 1] -> (N, H, W, 3) uint8 RGB."""
    array = pixels.detach().cpu().float().numpy().transpose(0, 2, 3, 1)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def tv_loss(pixels: Any, *, per_image: bool = False) -> Any:
    """Total variation: mean squared difference of horizontal plus vertical neighbours of
    (N, C, H, W) pixels (Mahendran & Vedaldi 2015's TV with beta = 2; the smoothness prior of
    style transfer). A scalar (the batch mean), or (N,) with ``per_image``."""
    dx = (pixels[..., :, 1:] - pixels[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (pixels[..., 1:, :] - pixels[..., :-1, :]).pow(2).flatten(1).mean(1)
    loss = dx + dy
    return loss if per_image else loss.mean()


# ------------------------------------------------------------------------- the network


class LossNetwork:
    """Style and content features of a model for RGB pixels in [0, 1] (torch, autograd).

    Args:
        model: the classifier whose features describe style and content.
        style_layers: layer names or aliases (default :func:`default_style_layers`).
        content_layer: a layer name or alias (default :func:`default_content_layer`).
        style_weights: per style layer (a sequence in ``style_layers`` order, or a mapping
            from layer name to weight; missing names weigh 1); default 1 each.
        device: torch device of the computation (``cpu``, ``cuda``).
        normalize: relative losses (see the module docstring); False: plain mean squares.

    Raises:
        UnknownLayerError: a layer name that is not in the model (close matches suggested).
        InputError: bad weights or no style layers.
    """

    def __init__(
        self,
        model: Model,
        style_layers: Sequence[str] | None = None,
        content_layer: str | None = None,
        style_weights: Sequence[float] | Mapping[str, float] | None = None,
        device: str = "cpu",
        *,
        normalize: bool = True,
    ):
        torch = require_torch()
        self.model = model
        if isinstance(style_layers, str):
            style_layers = [style_layers]
        self.style_layers = (
            list(style_layers) if style_layers is not None else default_style_layers(model)
        )
        if not self.style_layers:
            raise InputError("style_layers is empty; give at least one layer")
        self.content_layer = content_layer or default_content_layer(model)
        for name in (*self.style_layers, self.content_layer):
            model.tensor_name(name)  # UnknownLayerError with close matches
        self.style_weights = self._weights(style_weights)
        self.normalize = normalize
        self.device = torch.device(device)
        if self.device.type == "cpu":
            self.net = bridge(model)
        else:
            from cnnviz_core.torch_bridge import to_torch

            self.net = to_torch(model).eval().to(self.device)
            for p in self.net.parameters():
                p.requires_grad_(False)
        pre = model.preprocess
        if pre.channels != model.channels:
            raise InputError(
                f"preprocessing gives {pre.channels} channels, the model takes {model.channels}"
            )
        self._scale = 255.0 * pre.scale
        self._mean = torch.tensor(pre.mean, dtype=torch.float32, device=self.device)
        self._std = torch.tensor(pre.std, dtype=torch.float32, device=self.device)
        self._luma = torch.tensor(LUMA, dtype=torch.float32, device=self.device)

    def _weights(self, weights: Sequence[float] | Mapping[str, float] | None) -> list[float]:
        if weights is None:
            return [1.0] * len(self.style_layers)
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.style_layers))
            if unknown:
                raise InputError(
                    f"style_weights names {unknown} that are not style layers "
                    f"({', '.join(self.style_layers)})"
                )
            return [float(weights.get(name, 1.0)) for name in self.style_layers]
        values = [float(w) for w in weights]
        if len(values) != len(self.style_layers):
            raise InputError(
                f"{len(values)} style_weights for {len(self.style_layers)} style layers "
                f"({', '.join(self.style_layers)})"
            )
        return values

    @property
    def layers(self) -> list[str]:
        """Style layers then the content layer (no repeats)."""
        return list(dict.fromkeys([*self.style_layers, self.content_layer]))

    def preprocess(self, pixels: Any) -> Any:
        """(N, 3, H, W) RGB pixels in [0, 1] -> the model's input (differentiable): scaled as
        the model's preprocessing scales 0-255 values, channels reordered (BGR) or made grey
        (ITU-R 601 luma, as PIL), mean subtracted, divided by std."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise InputError(
                f"pixels must be (N, 3, H, W) RGB in [0, 1], got shape {tuple(pixels.shape)}"
            )
        order = self.model.preprocess.channel_order
        x = pixels * self._scale
        if order == "BGR":
            x = x.flip(1)
        elif order == "L":
            x = (x * self._luma.to(x.dtype).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        mean = self._mean.to(x.dtype).view(1, -1, 1, 1)
        std = self._std.to(x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def features(self, pixels: Any, *, style: bool = True, content: bool = True) -> dict:
        """{layer: (N, C, h, w) features} of the style and/or content layers, in one forward
        through the bridge that runs only the nodes they need (any spatial size)."""
        names = [*(self.style_layers if style else []), *([self.content_layer] if content else [])]
        return self.net.tensors(self.preprocess(pixels), list(dict.fromkeys(names)))

    def grams(self, features: Mapping[str, Any]) -> dict:
        """{style layer: (N, C, C) Gram matrix} (norm C * H * W, native kernels)."""
        from cnnviz_core.torch_bridge import gram_matrix

        return {name: gram_matrix(features[name]) for name in self.style_layers}

    def style_loss(
        self, grams: Mapping[str, Any], target_grams: Mapping[str, Any], *, per_image: bool = False
    ) -> Any:
        """Weighted sum over the style layers of the mean squared Gram difference (relative
        to the target's mean square when normalizing); targets (C, C), (1, C, C) or (N, C, C)
        broadcast over the batch. A scalar (batch mean), or (N,) with ``per_image``."""
        total: Any = 0
        for name, weight in zip(self.style_layers, self.style_weights):
            gram, target = grams[name], target_grams[name]
            error = (gram - target).pow(2).flatten(1).mean(1)
            if self.normalize:
                error = error / self._square(target)
            total = total + weight * error
        return total if per_image else total.mean()

    def content_loss(
        self, features: Mapping[str, Any], target_features: Any, *, per_image: bool = False
    ) -> Any:
        """Mean squared difference of the content layer's features from the target's (a
        tensor, or a mapping holding the content layer), relative to the target's mean square
        when normalizing. A scalar (batch mean), or (N,) with ``per_image``."""
        target = (
            target_features[self.content_layer]
            if isinstance(target_features, Mapping)
            else target_features
        )
        error = (features[self.content_layer] - target).pow(2).flatten(1).mean(1)
        if self.normalize:
            error = error / self._square(target)
        return error if per_image else error.mean()

    @staticmethod
    def _square(target: Any) -> Any:
        """Mean square of a target per image (a scalar for one target image)."""
        flat = target.detach().reshape(-1, *target.shape[-2:]) if target.dim() <= 3 else target
        square = flat.detach().pow(2).flatten(1).mean(1) + 1e-12
        return square if square.numel() > 1 else square.reshape(())

    def targets(self, style_image_pixels: Any) -> dict:
        """{style layer: Gram matrices} of style image pixels (1 or N, 3, H, W), detached."""
        torch = require_torch()
        with torch.no_grad():
            return self.grams(self.features(style_image_pixels, content=False))

    def content_targets(self, content_pixels: Any) -> Any:
        """The content layer's features of content pixels, detached."""
        torch = require_torch()
        with torch.no_grad():
            return self.features(content_pixels, style=False)[self.content_layer]
