"""Image arrays to pictures: conversion to PIL, PNG output, upscaling and tile grids.

Arrays are (H, W) grey or (H, W, C) with C in 1, 3, 4, either uint8 (0-255) or float in
[0, 1] (values outside are clipped).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..output import PathLike, atomic_path


def to_uint8(array: np.ndarray) -> np.ndarray:
    """The array as uint8 0-255: uint8 passes, floats in [0, 1] are scaled (and clipped),
    bools become 0/255, other integers must already lie in 0-255."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.floating):
        return np.rint(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"integer image values must lie in 0-255; got {array.min()}..{array.max()}"
            )
        return array.astype(np.uint8)
    raise TypeError(f"cannot show an array of dtype {array.dtype} as an image")


def to_pil(array: np.ndarray) -> Image.Image:
    """A PIL image from an (H, W) or (H, W, 1|3|4) array (uint8, or float in [0, 1])."""
    pixels = to_uint8(_check_image(array))
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(np.ascontiguousarray(pixels))


def save_png(array: np.ndarray, path: PathLike) -> Path:
    """Write an image array as a PNG, atomically (see :mod:`cnnviz.output`); returns the path."""
    picture = to_pil(array)
    with atomic_path(path) as temp:
        picture.save(temp, format="PNG")
    return Path(path)


def png_bytes(array: np.ndarray) -> bytes:
    """An image array encoded as PNG bytes (what Jupyter's ``_repr_png_`` returns)."""
    buffer = io.BytesIO()
    to_pil(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(array: np.ndarray) -> str:
    """An image array as a ``data:image/png;base64,...`` URI for an inline ``<img>``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode("ascii")


def upscale(
    array: np.ndarray,
    factor: int | None = None,
    *,
    size: tuple[int, int] | None = None,
    min_side: int | None = None,
    nearest: bool = True,
) -> np.ndarray:
    """Enlarge a small image so it can be seen (a 28x28 digit is unreadable as it is).

    Give exactly one of ``factor``, ``size`` or ``min_side``.

    Args:
        array: (H, W) or (H, W, C) image of any dtype.
        factor: integer magnification.
        size: target (H, W).
        min_side: smallest integer factor that makes both sides at least this long (1 when
            the image is large enough already).
        nearest: nearest-neighbour (crisp pixels, exact for integer factors); otherwise
            bilinear.

    Returns:
        The enlarged image, same dtype and number of dimensions.
    """
    array = _check_image(array)
    if sum(option is not None for option in (factor, size, min_side)) != 1:
        raise ValueError("give exactly one of factor, size or min_side")
    height, width = array.shape[:2]
    if min_side is not None:
        factor = max(1, math.ceil(min_side / max(1, min(height, width))))
    if factor is not None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        size = (height * factor, width * factor)
    assert size is not None
    new_height, new_width = int(size[0]), int(size[1])
    if new_height < 1 or new_width < 1:
        raise ValueError(f"size must be positive, got {size}")
    if nearest:
        rows = np.arange(new_height) * height // new_height
        cols = np.arange(new_width) * width // new_width
        return array[rows][:, cols]
    return _resize_bilinear(array, new_height, new_width)


def tile_grid(
    tiles: Sequence[np.ndarray],
    columns: int | None = None,
    pad: int = 2,
    background: float | Sequence[float] = 0,
) -> np.ndarray:
    """Lay equal-sized images out in a grid, ``pad`` pixels between them and around the edge.

    Args:
        tiles: images of one shape, (H, W) or (H, W, C), one dtype.
        columns: tiles per row; default about square (ceil of the square root of the count).
        pad: background pixels between tiles and around the grid.
        background: fill value (one value, or one per channel), in the tiles' value range.

    Returns:
        (rows * (H + pad) + pad, columns * (W + pad) + pad[, C]) array of the tiles' dtype;
        unused cells in the last row are background.
    """
    if not tiles:
        raise ValueError("tile_grid needs at least one tile")
    arrays = [np.asarray(tile) for tile in tiles]
    shape, dtype = arrays[0].shape, arrays[0].dtype
    for index, tile in enumerate(arrays):
        if tile.shape != shape or tile.dtype != dtype:
            raise ValueError(
                f"tiles must share shape and dtype; tile 0 is {shape} {dtype}, "
                f"tile {index} is {tile.shape} {tile.dtype}"
            )
    _check_image(arrays[0])
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    columns = columns or math.ceil(math.sqrt(len(arrays)))
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    rows = math.ceil(len(arrays) / columns)
    height, width = shape[:2]
    grid = np.empty((rows * (height + pad) + pad, columns * (width + pad) + pad, *shape[2:]), dtype)
    grid[...] = background
    for index, tile in enumerate(arrays):
        top = pad + (index // columns) * (height + pad)
        left = pad + (index % columns) * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid


TEXT_LINE_HEIGHT = 14
"""Pixel height of one line of label text (PIL's default bitmap font plus spacing)."""


def text_strip(
    texts: Sequence[str],
    cell_width: int,
    *,
    pad: int = 2,
    height: int = TEXT_LINE_HEIGHT + 4,
) -> np.ndarray:
    """A white uint8 (height, W, 3) strip of black labels, one centred over each grid column.

    Matches :func:`tile_grid`'s layout: column ``c`` spans ``pad + c * (cell_width + pad)``
    to ``+ cell_width``; ``W = len(texts) * (cell_width + pad) + pad``. Labels wider than a
    column are cut at its edge.
    """
    width = len(texts) * (cell_width + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for column, text in enumerate(texts):
        left = pad + column * (cell_width + pad)
        text_width = draw.textlength(text, font=font)
        x = left + max(0.0, (cell_width - text_width) / 2)
        cell = Image.new("RGB", (cell_width, height), (255, 255, 255))
        ImageDraw.Draw(cell).text((x - left, 2), text, fill=(0, 0, 0), font=font)
        canvas.paste(cell, (left, 0))
    return np.asarray(canvas)


def text_box(text: str, width: int, height: int) -> np.ndarray:
    """A white uint8 (height, width, 3) box with ``text`` in black, vertically centred."""
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(canvas).text(
        (3, max(0, (height - TEXT_LINE_HEIGHT) // 2)),
        text,
        fill=(0, 0, 0),
        font=ImageFont.load_default(),
    )
    return np.asarray(canvas)


def text_width(text: str) -> int:
    """Pixel width of ``text`` in PIL's default font."""
    font = ImageFont.load_default()
    return math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font))


def _check_image(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        if array.shape[0] and array.shape[1]:
            return array
    raise ValueError(f"an image must be (H, W) or (H, W, 1|3|4) and non-empty; got {array.shape}")


def _resize_bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize through PIL, channel by channel in float32 (keeps dtype and range)."""
    planes = array[..., None] if array.ndim == 2 else array
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(planes[..., c], np.float32)).resize(
                    (width, height), Image.Resampling.BILINEAR
                )
            )
            for c in range(planes.shape[2])
        ],
        axis=-1,
    )
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        resized = np.clip(np.rint(resized), info.min, info.max)
    resized = resized.astype(array.dtype)
    return resized[..., 0] if array.ndim == 2 else resized
