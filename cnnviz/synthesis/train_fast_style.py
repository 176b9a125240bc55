"""Fast feed-forward style transfer: train a small image transformation network for one style
with perceptual losses, export it to ONNX, run it with onnxruntime (one pass per image).

Johnson, Alahi & Fei-Fei 2016 ("Perceptual Losses for Real-Time Style Transfer and
Super-Resolution"): a residual convolutional network T maps a content photo x to T(x); it is
trained on many photos to minimise, through a fixed pretrained *loss network*,

    content_weight * ||phi_c(T(x)) - phi_c(x)||^2            (one layer, Gatys et al. 2016)
  + style_weight   * sum_l w_l ||G_l(T(x)) - G_l(style)||^2   (Gram matrices, several layers)
  + tv_weight      * TV(T(x))

Architecture (:class:`TransformNet`): reflect-padded 9x9 conv, two stride-2 3x3 convs, residual
blocks, two (nearest-neighbour upsampling + 3x3 conv) stages (Odena et al. 2016: no
checkerboard artefacts of transposed convolutions), a 9x9 conv and a sigmoid; every conv but
the last is followed by instance normalisation (Ulyanov, Vedaldi & Lempitsky 2016, "Instance
Normalization: The Missing Ingredient for Fast Stylization") and a ReLU. The default is
narrower than Johnson's (16/32/64 channels, 3 residual blocks, vs 32/64/128 and 5) so that a
few hundred steps at 96-128 px train on a laptop CPU in minutes. One departure, on by default
(``skip=True``): the input's logit is added before the sigmoid and the last conv starts at
zero, so the network starts as the identity and learns a change of the image; in a few
hundred steps this keeps the content that Johnson's plain network (``skip=False``, trained
for 40k steps in the paper) has not yet learned to reproduce.

The upsampling stages resize to the size of the matching encoder stage, so the exported ONNX
graph takes any (N, 3, H, W) (RGB, pixels in [0, 1]) and returns the same shape. The file
carries a card in its metadata (convention, style, losses, training options) that
:func:`cnnviz.synthesis.fast_style_network.stylize` reads; any onnxruntime (C++, C#, JS...) runs it:
feed float32 RGB in [0, 1], NCHW; read the same.

The loss network is a :class:`cnnviz.synthesis.style_losses.LossNetwork` (any classifier through the
torch bridge; SqueezeNet 1.1 as a real pretrained one, the shipped shapes model as the
fallback). torch is imported inside functions only.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from PIL import Image

from cnnviz_core import InputError, Model, ModelLoadError
from cnnviz_core.model import CARD_KEY, DEFAULT_MEMORY_BUDGET, SessionFactory
from cnnviz_core.preprocess import (
    MAX_PIXELS_ENV,
    ImageLike,
    as_image_list,
    load_image,
    max_image_pixels,
)

from ..data.train_shapes import quiet_export
from .base import Progress, require_torch
from .fast_style_network import CARD_KIND, StyleNetwork, load_style_network

log = logging.getLogger(__name__)

#: image suffixes read from a content folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: the input's logit is taken of pixels squeezed into [eps, 1 - eps] (half an 8-bit level)
SKIP_EPS = 0.5 / 255.0
#: largest |onnxruntime - torch| an exported network may show on the probe batch
EXPORT_TOLERANCE = 1e-4
#: smallest image side the network takes (its 9x9 reflect padding needs 5)
MIN_SIZE = 8
#: content images generated from the shapes data set when none are given
SHAPES_CONTENT = 64


# --------------------------------------------------------------------------- the network


def _modules() -> tuple[Any, Any]:
    """The torch module classes (defined on first use, so importing needs no torch)."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _define_modules()
    return _CLASSES


_CLASSES: tuple[Any, Any] | None = None


def _define_modules() -> tuple[Any, Any]:
    torch = require_torch()
    nn = torch.nn
    functional = torch.nn.functional
    # torch is untyped here (imported on first use): the base classes as plain values
    sequential: Any = nn.Sequential
    module: Any = nn.Module

    class ConvLayer(sequential):
        """Reflect padding + conv (+ instance norm + ReLU)."""

        def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, act: bool = True):
            layers: list[Any] = [
                nn.ReflectionPad2d(kernel // 2),
                nn.Conv2d(c_in, c_out, kernel, stride),
            ]
            if act:
                layers += [nn.InstanceNorm2d(c_out, affine=True), nn.ReLU()]
            super().__init__(*layers)

    class ResidualBlock(module):
        """x + IN(conv(ReLU(IN(conv(x))))) (Johnson et al.'s block, as in He et al. 2016)."""

        def __init__(self, channels: int):
            super().__init__()
            self.body = nn.Sequential(
                ConvLayer(channels, channels, 3),
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, channels, 3),
                nn.InstanceNorm2d(channels, affine=True),
            )

        def forward(self, x: Any) -> Any:
            return x + self.body(x)

    class TransformNet(module):
        """Johnson et al.'s image transformation network with instance norm and resize-conv
        upsampling: (N, 3, H, W) RGB in [0, 1] -> the same shape, any H and W.

        Args:
            width: channels of the first stage (then 2x and 4x after each downsampling).
            blocks: residual blocks at the lowest resolution.
            skip: add the input's logit to the output's (the network predicts a change of
                the image and starts as the identity: its last conv is zero at init).
        """

        def __init__(self, width: int = 16, blocks: int = 3, skip: bool = True):
            super().__init__()
            self.width, self.blocks, self.skip = width, blocks, skip
            self.stem = ConvLayer(3, width, 9)
            self.down1 = ConvLayer(width, 2 * width, 3, stride=2)
            self.down2 = ConvLayer(2 * width, 4 * width, 3, stride=2)
            self.residual = nn.Sequential(*(ResidualBlock(4 * width) for _ in range(blocks)))
            self.up1 = ConvLayer(4 * width, 2 * width, 3)
            self.up2 = ConvLayer(2 * width, width, 3)
            self.head = ConvLayer(width, 3, 9, act=False)
            if skip:
                nn.init.zeros_(self.head[1].weight)
                nn.init.zeros_(self.head[1].bias)

        def forward(self, x: Any) -> Any:
            s1 = self.stem(x)
            s2 = self.down1(s1)
            y = self.residual(self.down2(s2))
            y = self.up1(functional.interpolate(y, size=s2.shape[-2:], mode="nearest"))
            y = self.up2(functional.interpolate(y, size=s1.shape[-2:], mode="nearest"))
            z = self.head(y)
            if self.skip:
                x = x.clamp(SKIP_EPS, 1.0 - SKIP_EPS)
                z = z + torch.log(x) - torch.log1p(-x)
            return torch.sigmoid(z)

    return TransformNet, ResidualBlock


def transform_net(width: int = 16, blocks: int = 3, seed: int = 0, skip: bool = True) -> Any:
    """A freshly initialised :class:`TransformNet` (torch's default init, seeded)."""
    torch = require_torch()
    if width < 1 or blocks < 0:
        raise InputError(f"width must be >= 1 and blocks >= 0, got {width} and {blocks}")
    weights = 4 * (486 * width + (180 + 288 * blocks) * width * width)  # float32 conv weights
    if weights > DEFAULT_MEMORY_BUDGET:
        raise InputError(
            f"a network of width {width} with {blocks} blocks would hold {weights} bytes of "
            f"weights, over {DEFAULT_MEMORY_BUDGET}; use a smaller width or fewer blocks"
        )
    net_class, _ = _modules()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return net_class(width, blocks, skip)


# ------------------------------------------------------------------------------ export


#: exported graphs by architecture (width, blocks, skip): the dynamo export traces a network once
#: (seconds); every network of that architecture is the same graph with its own weights
_TEMPLATES: dict[tuple[int, int, bool], onnx.ModelProto] = {}


def export_onnx(net: Any, card: dict[str, Any] | None = None) -> bytes:
    """The network as ONNX bytes (input ``pixels``, output ``stylized``; batch, H and W
    dynamic) with ``card`` in its metadata under the cnnviz card key.

    The graph comes from ``torch.onnx.export(dynamo=True)`` once per architecture; the
    network's weights replace the template's initializers (matched by parameter name), and
    the result is checked against the torch network on a probe batch.
    """
    torch = require_torch()
    key = (int(net.width), int(net.blocks), bool(net.skip))
    template = _TEMPLATES.get(key)
    if template is None:
        width, blocks, skip = key
        net_like = transform_net(width, blocks, skip=skip)
        template = _TEMPLATES[key] = _dynamo_export(_distinct_weights(net_like))
    data = _fill(template, net, card)
    error = _export_error(net, data, torch)
    if error > EXPORT_TOLERANCE:  # never expected: export this network itself instead
        log.warning("style network template differs by %.3g; exporting the network", error)
        data = _fill(_dynamo_export(copy.deepcopy(net)), net, card)
        error = _export_error(net, data, torch)
    if error > EXPORT_TOLERANCE:
        raise ModelLoadError(
            f"the exported style network differs from the torch network (max |diff| "
            f"{error:.3g} > {EXPORT_TOLERANCE:g})"
        )
    return data


def _fill(template: onnx.ModelProto, net: Any, card: dict[str, Any] | None) -> bytes:
    """The template with the network's weights as initializers and the card."""
    proto = onnx.ModelProto()
    proto.CopyFrom(template)
    state = {k: v.detach().cpu().float().numpy() for k, v in net.state_dict().items()}
    for init in proto.graph.initializer:
        if init.name in state:
            init.CopyFrom(numpy_helper.from_array(state[init.name], init.name))
    if card is not None:
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, CARD_KEY: json.dumps(card)})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _distinct_weights(net: Any) -> Any:
    """The network with random weights: the exporter shares equal constants (the ones and
    zeros of fresh instance-norm affines), which would merge parameters of the template."""
    torch = require_torch()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1 + 1.0)
    return net


def _dynamo_export(net: Any) -> onnx.ModelProto:
    """``torch.onnx.export(dynamo=True)`` of a network in eval mode, every parameter an
    initializer of the same name."""
    torch = require_torch()
    net = net.eval().float()
    example = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    dims = {
        0: torch.export.Dim("N"),
        2: torch.export.Dim("H", min=MIN_SIZE),
        3: torch.export.Dim("W", min=MIN_SIZE),
    }
    with quiet_export():
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            dynamic_shapes=(dims,),
            input_names=["pixels"],
            output_names=["stylized"],
            verbose=False,
        )
    proto = program.model_proto
    names = {init.name for init in proto.graph.initializer}
    missing = sorted(set(net.state_dict()) - names)
    if missing:  # a folded parameter would keep the template's values: refuse
        raise ModelLoadError(
            f"the ONNX export folded parameters {missing} into other constants; the weights "
            "of trained networks could not be filled in"
        )
    return proto


def _export_error(net: Any, data: bytes, torch: Any) -> float:
    """Largest |onnxruntime - torch| of the exported bytes on a probe batch (inf when the
    shapes differ)."""
    probe = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    session = SessionFactory(name="style network")(data)
    ours = session.run(None, {"pixels": probe.numpy()})[0]
    with torch.no_grad():
        reference = net.eval()(probe).numpy()
    if ours.shape != reference.shape:
        return float("inf")
    return float(np.abs(ours - reference).max())


# ------------------------------------------------------------------------ content images


def content_pictures(
    content: ImageLike | Sequence[ImageLike] | str | Path | None, size: int, seed: int = 0
) -> list[np.ndarray]:
    """Content images as (H, W, 3) uint8 pictures whose shorter side is about ``1.25 * size``
    (room for random crops): files, arrays, PIL images or folders of images; None generates
    :data:`SHAPES_CONTENT` images of the procedural shapes data set (seeded)."""
    if content is None:
        from ..data.shapes import make_shapes

        side = max(size, round(1.25 * size))
        return list(make_shapes(SHAPES_CONTENT, seed=seed, size=side).images)
    images: list[ImageLike] = []
    for item in as_image_list(content):
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            folder = Path(item)
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) in content folder {str(folder)!r}"
                )
            images += files
        else:
            images.append(item)
    pictures = []
    for image in images:
        picture = load_image(image)
        h, w = picture.shape[:2]
        scale = 1.25 * size / min(h, w)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        if new != (w, h):
            pil = Image.fromarray(picture).resize(new, Image.Resampling.LANCZOS)
            picture = np.asarray(pil)
        pictures.append(picture)
    if not pictures:
        raise InputError("no content images given")
    return pictures


def sample_batch(
    pictures: Sequence[np.ndarray], batch: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """A (batch, 3, size, size) float32 RGB batch in [0, 1]: random pictures, random
    ``size`` crops, random horizontal flips."""
    out = np.empty((batch, size, size, 3), np.uint8)
    for k in range(batch):
        picture = pictures[int(rng.integers(len(pictures)))]
        h, w = picture.shape[:2]
        top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = picture[top : top + size, left : left + size]
        out[k] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)


# ----------------------------------------------------------------------------- training


def train_style(
    loss_model: Model | Any,
    style_image: ImageLike,
    content_images: ImageLike | Sequence[ImageLike] | str | Path | None = None,
    *,
    size: int = 128,
    steps: int = 300,
    batch: int = 4,
    lr: float = 3e-3,
    style_weight: float = 5.0,
    content_weight: float = 1.0,
    tv_weight: float = 10.0,
    style_size: int | None = None,
    width: int = 16,
    blocks: int = 3,
    skip: bool = True,
    style_layers: Sequence[str] | None = None,
    content_layer: str | None = None,
    style_weights: Sequence[float] | None = None,
    style_name: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    out: str | Path | None = None,
) -> StyleNetwork:
    """Train a fast style network for one style (Johnson et al. 2016) and export it to ONNX.

    Args:
        loss_model: the classifier whose features define the losses (a :class:`Model`, e.g.
            SqueezeNet 1.1 with the ``caffe`` preset, or the shipped shapes model), or a
            ready :class:`cnnviz.synthesis.style_losses.LossNetwork` (its layers and weights).
        style_image: the style (path, PIL image or array).
        content_images: training photos: files, arrays, or a folder; None: procedural
            shapes images (:func:`content_pictures`).
        size: training crop side in pixels (96-128 trains in minutes on a CPU).
        steps: optimiser steps (Adam), one batch of ``batch`` random crops each.
        lr: Adam learning rate.
        style_weight, content_weight, tv_weight: loss weights (the losses are relative: see
            :mod:`cnnviz.synthesis.style_losses`; the TV term is on [0, 1] pixels).
        style_size: longer side of the style image for its Gram matrices (default ``2 * size``).
        width, blocks, skip: network width, residual blocks and input skip
            (:class:`TransformNet`).
        style_layers, content_layer, style_weights: loss-network layers (default: the
            loss network's own defaults).
        style_name: name in the card (default: the style file's stem, else ``style``).
        seed: seeds the network's init, the crops and the flips.
        progress: ``progress(step, total, loss)`` after every step; raising KeyboardInterrupt
            from it stops training like Ctrl-C.
        out: also write the ONNX file there (atomically).

    Returns:
        the trained :class:`StyleNetwork` (running through onnxruntime), with ``losses``,
        ``steps``, ``interrupted`` (stopped early: the network so far) and ``module`` (the
        torch network).
    """
    torch = require_torch()
    from .style_losses import LossNetwork, load_pixels, tv_loss

    if size < 16:
        raise InputError(f"size must be at least 16 pixels, got {size}")
    if steps < 0 or batch < 1:
        raise InputError(f"steps must be >= 0 and batch >= 1, got {steps} and {batch}")
    if batch * size * size > max_image_pixels():
        raise InputError(
            f"a batch of {batch} crops of {size}x{size} is {batch * size * size} pixels, over "
            f"the limit of {max_image_pixels()} ({MAX_PIXELS_ENV}); use a smaller size or batch"
        )
    for name, value in {
        "lr": lr,
        "style_weight": style_weight,
        "content_weight": content_weight,
        "tv_weight": tv_weight,
    }.items():
        if not (math.isfinite(value) and value >= 0) or (name == "lr" and value == 0):
            raise InputError(f"{name} must be a finite number > 0 (>= 0 for weights), got {value}")
    if isinstance(loss_model, Model):
        loss_net = LossNetwork(loss_model, style_layers, content_layer, style_weights)
    else:
        loss_net = loss_model
    pictures = content_pictures(content_images, size, seed)
    style_pixels = load_pixels(style_image, style_size or 2 * size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = transform_net(width, blocks, seed, skip)
        net.train()
        target_grams = loss_net.targets(style_pixels)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        losses: list[float] = []
        parts: dict[str, float] = {}
        interrupted = False
        try:
            for step in range(steps):
                x = torch.from_numpy(sample_batch(pictures, batch, size, rng))
                content_target = loss_net.content_targets(x)
                y = net(x)
                features = loss_net.features(y)
                style = loss_net.style_loss(loss_net.grams(features), target_grams)
                content = loss_net.content_loss(features, content_target)
                tv = tv_loss(y)
                loss = style_weight * style + content_weight * content + tv_weight * tv
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                parts = {"style": style.item(), "content": content.item(), "tv": tv.item()}
                if progress is not None:
                    progress(step + 1, steps, losses[-1])
        except KeyboardInterrupt:
            interrupted = True
    net.eval()
    name = style_name or (
        Path(style_image).stem if isinstance(style_image, (str, Path)) else "style"
    )
    card = {
        "kind": CARD_KIND,
        "convention": {"channel_order": "RGB", "value_range": 1.0},
        "style": name,
        "method": "fast style transfer (Johnson et al. 2016; instance norm, Ulyanov et al. 2016)",
        "architecture": {"width": width, "blocks": blocks, "input_skip": skip},
        "loss_network": {
            "model": loss_net.model.name,
            "style_layers": list(loss_net.style_layers),
            "content_layer": loss_net.content_layer,
            "style_weights": list(loss_net.style_weights),
        },
        "losses": {
            "style_weight": style_weight,
            "content_weight": content_weight,
            "tv_weight": tv_weight,
            "last": parts,
        },
        "training": {
            "size": size,
            "steps": len(losses),
            "planned_steps": steps,
            "batch": batch,
            "lr": lr,
            "seed": seed,
            "content_images": len(pictures),
            "interrupted": interrupted,
        },
        "torch_version": torch.__version__,
    }
    data = export_onnx(net, card)
    network = load_style_network(data)
    network.losses, network.steps, network.interrupted = losses, len(losses), interrupted
    network.module = net
    if out is not None:
        network.save(out)
    return network
