"""Convolution filters as pictures, and a smoothness score to spot noisy, unconverged ones.

The first layer's filters are shown as RGB tiles (Krizhevsky et al. 2012, Zeiler & Fergus
2014): each (3, kh, kw) filter becomes one small colour image. Deeper layers' filters have
too many input channels for colour, so they are a grid of grey tiles: one row per output
channel, one column per input channel of its group (grouped and depthwise convolutions
included: a depthwise layer is one tile per channel).

Shape convention: weights (O, I / groups, kh, kw), as ONNX Conv stores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnviz_core import InputError, Model

from ..render.display import Displayable
from ..render.images import tile_grid, upscale

#: normalisations of filter pictures
NORMALIZATIONS = ("filter", "joint")
#: frequency (cycles per pixel, Nyquist = 0.5) above which filter energy counts as "high"
HIGH_FREQUENCY_CUTOFF = 0.25
#: FFT size the kernels are zero-padded to (a fine, interpolated spectrum)
_FFT_SIZE = 32


@dataclass(frozen=True)
class ConvFilters(Displayable):
    """The weights of one Conv node.

    Attributes:
        layer: the Conv output tensor's name.
        weights: float32 (O, I / groups, kh, kw).
        bias: float32 (O,) or None.
        groups: the Conv's ``group`` attribute (O == groups == I: depthwise).
    """

    layer: str
    weights: np.ndarray
    bias: np.ndarray | None
    groups: int

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.weights.shape[1] == 1

    def picture(self) -> np.ndarray:
        """The filters, each scaled on its own (:func:`render_filters`), (H, W, 3) uint8:
        what Jupyter and ``plot()`` show."""
        return render_filters(self, "filter")

    def facts(self) -> list[tuple[str, object]]:
        """Layer, weight shape and groups, for the HTML display."""
        return [
            ("layer", self.layer),
            ("weights (O x I/g x kh x kw)", "x".join(map(str, self.weights.shape))),
            ("groups", self.groups),
        ]

    def input_channel(self, out: int, j: int) -> int:
        """The layer input channel that column ``j`` of output filter ``out`` reads."""
        per_group_out = self.weights.shape[0] // self.groups
        return (out // per_group_out) * self.weights.shape[1] + j


def conv_layers(model: Model) -> list[str]:
    """Output tensor names of the model's Conv nodes, in graph order."""
    return [layer.name for layer in model.layers if layer.op_type == "Conv"]


def conv_filters(model: Model, layer: str | None = None) -> ConvFilters:
    """The weights of a Conv layer (name or alias; default the first Conv).

    A ReLU (or other one-input op) right after a Conv names that Conv too, so the names
    ``cnnviz layers`` shows for either work.
    """
    convs = conv_layers(model)
    if not convs:
        raise InputError(f"model {model.name!r} has no Conv layer")
    tensor = convs[0] if layer is None else model.tensor_name(layer)
    producers = {o: n for n in model.runnable.graph.node for o in n.output}
    node = producers.get(tensor)
    while node is not None and node.op_type != "Conv" and len(node.input) >= 1:
        if node.op_type not in {"Relu", "LeakyRelu", "Clip", "BatchNormalization", "Identity"}:
            node = None
            break
        node = producers.get(node.input[0])
    if node is None:
        raise InputError(f"layer {layer!r} is not a convolution; Conv layers: {', '.join(convs)}")
    constants = model.constants
    if node.input[1] not in constants:
        raise InputError(f"the weights of Conv {node.output[0]!r} are not constant")
    weights = np.asarray(constants[node.input[1]], np.float32)
    bias = None
    if len(node.input) > 2 and node.input[2] and node.input[2] in constants:
        bias = np.asarray(constants[node.input[2]], np.float32)
    groups = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
    if weights.ndim != 4:
        raise InputError(f"Conv {node.output[0]!r} is not 2-D (weights {weights.shape})")
    return ConvFilters(node.output[0], weights, bias, groups)


def _scale(values: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    """Min-max scale to [0, 1] over ``axes`` (None: jointly); constant parts become 0.5."""
    low = values.min(axis=axes, keepdims=True)
    high = values.max(axis=axes, keepdims=True)
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (values - low) / safe, 0.5).astype(np.float32)


def rgb_tiles(weights: np.ndarray, normalize: str = "filter", bgr: bool = False) -> np.ndarray:
    """First-layer filters as colour tiles.

    Args:
        weights: (O, 3, kh, kw).
        normalize: ``filter`` (each filter min-max scaled on its own: shows every filter's
            pattern) or ``joint`` (one scale for all: shows which filters are strong).
        bgr: the weights' channels are BGR (Caffe models); tiles are RGB either way.

    Returns:
        float32 (O, kh, kw, 3) in [0, 1].
    """
    weights = np.asarray(weights, np.float32)
    if weights.ndim != 4 or weights.shape[1] != 3:
        raise InputError(f"RGB filter tiles need (O, 3, kh, kw) weights; got {weights.shape}")
    if normalize not in NORMALIZATIONS:
        raise InputError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    scaled = _scale(weights, (1, 2, 3) if normalize == "filter" else None)
    tiles = scaled.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(tiles[..., ::-1] if bgr else tiles)


def grey_tiles(weights: np.ndarray, normalize: str = "filter") -> np.ndarray:
    """Filters as grey tiles, one per (output, input) channel pair.

    Args:
        weights: (O, I, kh, kw).
        normalize: ``filter`` (one scale per output filter, so a row's tiles compare) or
            ``joint`` (one scale for the whole layer).

    Returns:
        float32 (O, I, kh, kw) in [0, 1].
    """
    weights = np.asarray(weights, np.float32)
    if normalize not in NORMALIZATIONS:
        raise InputError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return _scale(weights, (1, 2, 3) if normalize == "filter" else None)


def render_filters(
    filters: ConvFilters,
    normalize: str = "filter",
    *,
    tile_side: int | None = None,
    max_out: int = 64,
    max_in: int = 32,
    bgr: bool = False,
) -> np.ndarray:
    """A picture of a Conv layer's filters.

    Three-channel (RGB) filters become colour tiles in a square grid; others a grid of grey
    tiles, one row per output filter and one column per input channel of its group
    (a depthwise layer: one tile per channel, in a square grid).

    Args:
        filters: from :func:`conv_filters`.
        normalize: ``filter`` or ``joint`` (see :func:`rgb_tiles`).
        tile_side: displayed tile side in pixels (an integer magnification of the kernel,
            nearest-neighbour); default: at least 24 px and enough for the grid to be at
            least ``MIN_GRID_SIDE`` px on its shorter side.
        max_out, max_in: show at most this many output filters / input channels.
        bgr: the model takes BGR input (first layer only).

    Returns:
        uint8 (H, W, 3) for RGB filters, (H, W) otherwise.
    """
    weights = filters.weights[:max_out]
    kh, kw = weights.shape[2:]
    kernel = max(kh, kw)
    if tile_side is None:
        factor = _auto_factor(weights, filters, kernel, max_in)
    else:
        factor = max(1, tile_side // kernel)
    separator = min(3, max(1, factor // 4))
    if weights.shape[1] == 3 and filters.groups == 1:
        tiles = rgb_tiles(weights, normalize, bgr)
        shown = [_to_uint8(upscale(t, factor)) for t in tiles]
        return tile_grid(shown, pad=separator, background=255)
    grey = grey_tiles(weights[:, :max_in], normalize)
    if filters.depthwise:
        shown = [_to_uint8(upscale(t[0], factor)) for t in grey]
        return tile_grid(shown, pad=separator, background=255)
    rows, cols = grey.shape[:2]
    shown = [_to_uint8(upscale(grey[o, i], factor)) for o in range(rows) for i in range(cols)]
    return tile_grid(shown, columns=cols, pad=separator, background=255)


MIN_GRID_SIDE = 256
"""Default smallest side of a filter grid in pixels (a 3x3 first layer is unreadable at 106)."""


def _auto_factor(weights: np.ndarray, filters: ConvFilters, kernel: int, max_in: int) -> int:
    """The magnification that makes tiles >= 24 px and the grid's shorter side >=
    ``MIN_GRID_SIDE``."""
    count = weights.shape[0]
    if (weights.shape[1] == 3 and filters.groups == 1) or filters.depthwise:
        columns = math.ceil(math.sqrt(count))
        short = min(columns, math.ceil(count / columns))
    else:
        short = min(count, min(weights.shape[1], max_in))
    return max(math.ceil(24 / kernel), math.ceil(MIN_GRID_SIDE / (max(1, short) * kernel)))


def _to_uint8(tile: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(tile, 0, 1) * 255).astype(np.uint8)


def high_frequency_energy(weights: np.ndarray, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> np.ndarray:
    """Fraction of each filter's energy above ``cutoff`` cycles per pixel (per output filter,
    summed over its input channels): near 0 for smooth filters, large for noisy ones.

    The kernels are zero-padded to a 32x32 FFT (an interpolated, continuous spectrum), so
    the score is comparable between kernel sizes. Parseval makes the total the kernel's
    energy; an all-zero filter scores 0.

    Args:
        weights: (O, I, kh, kw).
        cutoff: radial frequency threshold in cycles per pixel (Nyquist: 0.5).

    Returns:
        float64 (O,) in [0, 1].
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 4:
        raise InputError(f"filters must be (O, I, kh, kw); got {weights.shape}")
    size = max(_FFT_SIZE, 2 ** math.ceil(math.log2(max(weights.shape[2:]))))
    power = np.abs(np.fft.fft2(weights, s=(size, size))) ** 2
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    high = np.sqrt(fy**2 + fx**2) > cutoff
    total = power.sum(axis=(1, 2, 3))
    above = (power * high).sum(axis=(1, 2, 3))
    return np.where(total > 0, above / np.where(total > 0, total, 1.0), 0.0)
