"""Feature maps of any layer for an image: a grid of channels, the strongest channels, heat
overlays on the input, and signed maps before the ReLU beside the rectified ones.

Yosinski et al. 2015 ("Understanding Neural Networks Through Deep Visualization") show
live feature maps this way; the signed pre-ReLU maps show edge channels' two polarities
(light-left / dark-right) that the ReLU halves.

Shape convention: a layer's maps are (N, C, H, W); one image's are (C, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnviz_core import InputError, Model

from ..render.colormap import apply_colormap, overlay
from ..render.images import tile_grid, upscale

#: ways to rank channels
RANKINGS = ("mean", "max")
_RECTIFIERS = frozenset({"Relu", "LeakyRelu", "Clip", "Elu", "Selu", "Softplus", "Gelu"})


def layer_activations(model: Model, images: object, layer: str) -> np.ndarray:
    """The layer's output for images (paths, arrays or a preprocessed batch): float32 with
    the batch first, e.g. (N, C, H, W)."""
    batch = model.prepare(images)  # type: ignore[arg-type]
    return model.run(batch, taps=[layer], outputs=False)[layer]


def strongest_channels(maps: np.ndarray, k: int = 8, by: str = "mean") -> np.ndarray:
    """Channels of one image's maps ranked by their mean or max activation, strongest first.

    Args:
        maps: (C, H, W) (or (C,) for a vector layer).
        k: how many channels.
        by: ``mean`` or ``max``.

    Returns:
        int64 (min(k, C),) channel indices (ties: the lower index first).
    """
    if by not in RANKINGS:
        raise InputError(f"rank channels by one of {RANKINGS}, got {by!r}")
    flat = np.asarray(maps).reshape(len(maps), -1)
    score = flat.mean(axis=1) if by == "mean" else flat.max(axis=1)
    return np.argsort(-score, kind="stable")[: max(0, min(k, len(score)))]


def minmax(maps: np.ndarray) -> np.ndarray:
    """Each (H, W) map of (..., H, W) scaled to [0, 1] on its own; constant maps become 0."""
    maps = np.asarray(maps, np.float32)
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def signed_unit(maps: np.ndarray) -> np.ndarray:
    """Signed maps to [0, 1] with zero at 0.5, each (H, W) map by its own max |value|."""
    maps = np.asarray(maps, np.float32)
    scale = np.abs(maps).max(axis=(-2, -1), keepdims=True)
    return (0.5 + 0.5 * maps / np.where(scale > 0, scale, 1)).astype(np.float32)


def feature_map_grid(
    maps: np.ndarray,
    channels: Sequence[int] | np.ndarray | None = None,
    *,
    min_side: int = 48,
    columns: int | None = None,
    colormap: str | None = None,
) -> np.ndarray:
    """One image's channels as a grid of tiles, each min-max scaled.

    Args:
        maps: (C, H, W).
        channels: which channels, in order (default all).
        min_side: tiles enlarged (integer factor) to at least this side.
        columns: tiles per row (default about square).
        colormap: None for grey tiles, else a colormap name.

    Returns:
        uint8 (H', W') grey or (H', W', 3) grid.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise InputError(f"feature maps must be (C, H, W); got {maps.shape}")
    chosen = maps if channels is None else maps[np.asarray(channels, np.int64)]
    scaled = minmax(chosen)
    tiles = [
        upscale(apply_colormap(m, colormap) if colormap else _grey(m), min_side=min_side)
        for m in scaled
    ]
    return tile_grid(tiles, columns=columns, pad=2, background=255)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def channel_overlay(
    image: np.ndarray, channel_map: np.ndarray, colormap: str = "inferno", alpha: float = 0.5
) -> np.ndarray:
    """One channel's map (min-max scaled, resized bilinearly) over an (H, W, 3) uint8 image."""
    return overlay(image, minmax(channel_map), colormap, alpha)


def pre_activation(model: Model, layer: str) -> tuple[str, str] | None:
    """(pre-activation tensor, rectified tensor) around a layer: for a ReLU-like layer its
    input and itself; for a layer feeding one ReLU-like op, itself and that op's output.
    None when the layer is neither."""
    tensor = model.tensor_name(layer)
    nodes = list(model.runnable.graph.node)
    producer = next((n for n in nodes if tensor in n.output), None)
    if producer is not None and producer.op_type in _RECTIFIERS:
        return producer.input[0], tensor
    consumers = [n for n in nodes if tensor in n.input]
    if len(consumers) == 1 and consumers[0].op_type in _RECTIFIERS:
        return tensor, consumers[0].output[0]
    return None


def signed_and_rectified(model: Model, image: object, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """One image's (C, H, W) maps before and after the ReLU around ``layer``."""
    pair = pre_activation(model, layer)
    if pair is None:
        raise InputError(f"layer {layer!r} is neither a ReLU-like op nor followed by one")
    pre, post = pair
    batch = model.prepare(image)  # type: ignore[arg-type]
    if len(batch) != 1:
        raise InputError(f"give one image; got {len(batch)}")
    out = model.run(batch, taps=[pre, post], outputs=False)
    return out[pre][0], out[post][0]


def signed_pairs_grid(
    pre: np.ndarray,
    post: np.ndarray,
    channels: Sequence[int] | np.ndarray | None = None,
    *,
    min_side: int = 48,
) -> np.ndarray:
    """Rows of (signed map in a diverging colormap, rectified map in grey) per channel,
    two pairs per row.

    Args:
        pre, post: (C, H, W) maps before and after the rectifier.
        channels: which channels (default all).
        min_side: tiles enlarged to at least this side.

    Returns:
        uint8 (H', W', 3).
    """
    index = np.arange(len(pre)) if channels is None else np.asarray(channels, np.int64)
    signed = signed_unit(pre[index])
    rectified = minmax(post[index])
    tiles = []
    for s, r in zip(signed, rectified):
        tiles.append(upscale(apply_colormap(s, "coolwarm"), min_side=min_side))
        tiles.append(upscale(apply_colormap(r, "gray"), min_side=min_side))
    return tile_grid(tiles, columns=4, pad=2, background=255)
