"""Run a feed-forward style network (Johnson, Alahi & Fei-Fei 2016, "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution"): one onnxruntime forward pass per image.

Two kinds of networks run through the same path:

- networks trained by :func:`cnnviz.synthesis.train_fast_style.train_style`: their ONNX metadata
  carries a card (``kind: fast-style``) that says the pixel convention (RGB, 0-1 or 0-255)
  and that any image size works;
- existing fast-style exports without a card, such as the ONNX zoo's ``fns_candy.onnx``
  (Johnson's Torch models: BGR 0-255 in and out, fixed 720x720, with the experimental ops
  ImageScaler/Crop/Affine that onnxruntime still runs). Their convention is read from the
  graph: an ``ImageScaler`` subtracting the Caffe mean in B, G, R order means BGR 0-255;
  anything else is taken as RGB 0-255 (the PyTorch ``fast_neural_style`` export). Pass
  ``channel_order`` / ``value_range`` to override.

A fixed-size network gets each image resized to its input size (Lanczos) and its output
resized back to the image's size; a network that takes any size gets the image as it is.
Images of the same (network-input) size run as one batch. torch is not needed here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image

from cnnviz_core import InputError, Model
from cnnviz_core.model import CARD_KEY
from cnnviz_core.preprocess import ImageLike, Preprocess, as_image_list, load_image

from ..output import atomic_write_bytes

#: ``kind`` of the card a trained style network carries
CARD_KIND = "fast-style"
#: the Caffe/VGG training mean in B, G, R order (what Johnson's networks subtract first)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
VALUE_RANGES = (1.0, 255.0)
#: default bound on the pixels one forward batch holds (images x H x W)
BATCH_PIXELS = 4 * 720 * 720


@dataclass(frozen=True)
class Convention:
    """How a style network wants its pixels, and gives them back.

    Attributes:
        channel_order: ``RGB`` or ``BGR`` (input and output).
        value_range: 255.0 (pixels 0-255) or 1.0 (pixels 0-1), input and output.
        size: (H, W) of a fixed-size network, None when any size works.
        source: where the convention comes from (``card``, ``graph``, ``given``, ``default``).
    """

    channel_order: str = "RGB"
    value_range: float = 255.0
    size: tuple[int, int] | None = None
    source: str = "default"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(
                f"channel_order must be 'RGB' or 'BGR' for a style network, "
                f"got {self.channel_order!r}"
            )
        if float(self.value_range) not in VALUE_RANGES:
            raise InputError(
                f"value_range must be 1 (pixels 0-1) or 255 (pixels 0-255), "
                f"got {self.value_range!r}"
            )
        object.__setattr__(self, "value_range", float(self.value_range))

    def to_input(self, pictures: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> float32 (N, 3, H, W) network input."""
        batch = pictures.astype(np.float32)
        if self.channel_order == "BGR":
            batch = batch[..., ::-1]
        batch = batch.transpose(0, 3, 1, 2) * np.float32(self.value_range / 255.0)
        return np.ascontiguousarray(batch)

    def to_pictures(self, output: np.ndarray) -> np.ndarray:
        """float (N, 3, H, W) network output -> (N, H, W, 3) uint8 RGB (clipped)."""
        pixels = np.asarray(output, np.float32).transpose(0, 2, 3, 1)
        pixels = pixels * np.float32(255.0 / self.value_range)
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def read_card(proto: onnx.ModelProto) -> dict[str, Any]:
    """The cnnviz card in an ONNX file's metadata ({} when there is none)."""
    for prop in proto.metadata_props:
        if prop.key == CARD_KEY:
            card = json.loads(prop.value)
            return card if isinstance(card, dict) else {}
    return {}


def guess_convention(proto: onnx.ModelProto) -> Convention:
    """The pixel convention of a card-less style network, read from its graph (see the
    module docstring); the fixed input size from the input's static shape."""
    size = _fixed_size(proto)
    image = proto.graph.input[0].name
    for node in proto.graph.node:
        if node.op_type == "ImageScaler" and image in node.input:
            bias = next((list(a.floats) for a in node.attribute if a.name == "bias"), [])
            if len(bias) == 3:
                mean = -np.asarray(bias, np.float64)
                if np.allclose(mean, CAFFE_BGR_MEAN, atol=1.0):
                    return Convention("BGR", 255.0, size, "graph")
                if np.allclose(mean, CAFFE_BGR_MEAN[::-1], atol=1.0):
                    return Convention("RGB", 255.0, size, "graph")
    return Convention("RGB", 255.0, size, "default")


def _fixed_size(proto: onnx.ModelProto) -> tuple[int, int] | None:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    values = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(values) == 4 and values[2] and values[3]:
        return (int(values[2]), int(values[3]))
    return None


@dataclass
class StyleNetwork:
    """A feed-forward style network ready to run through onnxruntime.

    Build it with :func:`load_style_network` (a file) or get it from
    :func:`~cnnviz.synthesis.train_fast_style.train_style`; call :func:`stylize` (or the network
    itself) on images.

    Attributes:
        model: the loaded :class:`cnnviz_core.Model` (onnxruntime sessions).
        convention: the pixel convention (channel order, value range, fixed size).
        card: the metadata card (style name, losses, training options), {} for card-less files.
        onnx_bytes: the serialized ONNX model (what :meth:`save` writes).
        losses: training loss after every step (trained networks only).
        steps: training steps done.
        interrupted: training was stopped early and this is the network so far.
        module: the torch module it was exported from (trained networks only, else None).
    """

    model: Model
    convention: Convention
    card: dict[str, Any]
    onnx_bytes: bytes
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    interrupted: bool = False
    module: Any = None

    @property
    def name(self) -> str:
        return str(self.card.get("style") or self.model.name)

    def save(self, path: str | Path) -> Path:
        """Write the ONNX file (atomically); any onnxruntime (C++, C#, JS...) can run it."""
        return atomic_write_bytes(path, self.onnx_bytes)

    def __call__(self, images: ImageLike | Sequence[ImageLike], **options: Any) -> list:
        return stylize(self, images, **options)

    def __repr__(self) -> str:
        c = self.convention
        size = f"{c.size[0]}x{c.size[1]}" if c.size else "any size"
        return (
            f"StyleNetwork({self.name!r}, {c.channel_order} 0-{c.value_range:g}, {size}, "
            f"device={self.model.device!r})"
        )


def load_style_network(
    source: str | Path | bytes,
    *,
    channel_order: str | None = None,
    value_range: float | None = None,
    device: str = "cpu",
    threads: int = 0,
) -> StyleNetwork:
    """Load a style network from an ONNX file (or its bytes).

    Args:
        source: path or bytes of the ONNX model (one image input, one image output).
        channel_order, value_range: override the convention of the card or the graph.
        device: ``cpu`` or ``cuda`` (see :class:`cnnviz_core.Model`).
        threads: onnxruntime intra-op threads (0: its default).
    """
    data = source if isinstance(source, bytes) else _read_bytes(source)
    proto = onnx.load_from_string(data)
    card = read_card(proto)
    if card.get("kind") == CARD_KIND:
        given = card.get("convention", {})
        convention = Convention(
            given.get("channel_order", "RGB"),
            given.get("value_range", 255.0),
            _fixed_size(proto),
            "card",
        )
    else:
        convention = guess_convention(proto)
    if channel_order is not None or value_range is not None:
        convention = Convention(
            channel_order or convention.channel_order,
            value_range if value_range is not None else convention.value_range,
            convention.size,
            "given",
        )
    # the Model's own preprocessing is unused (stylize converts pixels itself) but it needs a
    # size for networks that take any size
    nominal = convention.size or (256, 256)
    preprocess = Preprocess(size=nominal, scale=1.0, resize="stretch")
    name = Path(source).stem if isinstance(source, (str, Path)) else "style-network"
    model = Model(data, preprocess=preprocess, device=device, threads=threads, name=name)
    if len(model.output_names) != 1:
        raise InputError(
            f"a style network has one output image; {name!r} has {len(model.output_names)} "
            f"({', '.join(model.output_names)})"
        )
    if model.channels != 3:
        raise InputError(f"a style network takes RGB images; {name!r} takes {model.channels}")
    return StyleNetwork(model, convention, card, data)


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"style network not found: {str(path)!r}")
    return path.read_bytes()


def stylize(
    network: StyleNetwork | str | Path | bytes,
    images: ImageLike | Sequence[ImageLike],
    *,
    batch_pixels: int = BATCH_PIXELS,
    keep_size: bool = True,
    device: str = "cpu",
) -> list[np.ndarray]:
    """Stylize images with a feed-forward style network: one forward pass per image.

    Args:
        network: a :class:`StyleNetwork` or an ONNX file (loaded with its convention).
        images: paths, PIL images or (H, W, 3) arrays (uint8, or floats in 0-1).
        batch_pixels: bound on images x H x W per onnxruntime call (same-size images batch).
        keep_size: give each output the size of its image (a fixed-size network's output is
            resized back); False keeps the network's output size.
        device: for a network given as a file.

    Returns:
        one (H, W, 3) uint8 RGB picture per image.
    """
    if not isinstance(network, StyleNetwork):
        network = load_style_network(network, device=device)
    pictures = [load_image(image) for image in as_image_list(images)]
    if not pictures:
        return []
    fixed = network.convention.size
    inputs = [_fit(p, fixed) for p in pictures]
    outputs: list[np.ndarray | None] = [None] * len(inputs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, picture in enumerate(inputs):
        groups.setdefault(picture.shape[:2], []).append(i)
    for (h, w), members in groups.items():
        per_call = max(1, batch_pixels // (h * w))
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            batch = network.convention.to_input(np.stack([inputs[i] for i in chunk]))
            out = network.model.run(batch)[network.model.output_names[0]]
            for i, picture in zip(chunk, network.convention.to_pictures(out)):
                outputs[i] = picture
    results = []
    for picture, stylized in zip(pictures, outputs):
        assert stylized is not None
        if keep_size and stylized.shape[:2] != picture.shape[:2]:
            stylized = _resize(stylized, picture.shape[:2])
        results.append(stylized)
    return results


def _fit(picture: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or picture.shape[:2] == size:
        return picture
    return _resize(picture, size)


def _resize(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of an (H, W, 3) uint8 picture to (h, w)."""
    h, w = size
    return np.asarray(Image.fromarray(picture).resize((w, h), Image.Resampling.LANCZOS))
