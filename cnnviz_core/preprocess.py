"""Image decoding and preprocessing: from files, PIL images or arrays to a float32 NCHW batch.

A :class:`Preprocess` says how a model wants its pixels: size, resize policy, value scale,
per-channel mean/std and channel order. Presets cover the common conventions.

Channel orders: ``RGB``, ``BGR``, ``L`` (grey), ``RGBA`` / ``BGRA`` (alpha kept as the 4th
channel, opaque when the image has none) and ``C<n>`` (``C5``: n planes that are no colours,
e.g. multispectral bands; images are (H, W, n) arrays at the model's size, no resize).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageLike = str | Path | Image.Image | np.ndarray
RESIZE_POLICIES = ("shorter_crop", "stretch", "none")
CHANNEL_ORDERS = ("RGB", "BGR", "L", "RGBA", "BGRA", "C<n>")
#: ``C<n>``: n planes that are no colours (given as (H, W, n) arrays)
_PLANES = re.compile(r"C([1-9][0-9]*)")


@dataclass(frozen=True)
class Preprocess:
    """How to turn images into the model's input: ``((pixels * scale) - mean) / std``.

    Args:
        size: (H, W) of the model input; None takes it from the model.
        resize: ``shorter_crop`` (resize the shorter side to fit, centre-crop),
            ``stretch`` (resize to H x W ignoring aspect) or ``none`` (sizes must match).
        scale: factor applied to 0-255 pixel values first (1/255 gives 0-1).
        mean, std: per channel in the model's channel order, after scaling (one value: all).
        channel_order: ``RGB``, ``BGR``, ``L`` (one grey channel), ``RGBA`` / ``BGRA``
            (alpha kept) or ``C<n>`` (n planes given as (H, W, n) arrays).
    """

    size: tuple[int, int] | None = None
    resize: str = "shorter_crop"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise InputError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.channel_order not in CHANNEL_ORDERS[:-1] and not _PLANES.fullmatch(
            self.channel_order
        ):
            raise InputError(
                f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}"
            )
        channels = self.channels
        for name in ("mean", "std"):
            value = _finite_numbers(name, getattr(self, name))
            if len(value) == 1:
                value *= channels
            if len(value) != channels:
                raise InputError(f"{name} needs {channels} values for {self.channel_order}")
            object.__setattr__(self, name, value)
        if any(s == 0 for s in self.std):
            raise InputError("std must not contain zeros")
        scale = _finite_numbers("scale", self.scale)
        if len(scale) != 1 or scale[0] == 0:
            raise InputError(f"scale must be one finite number other than 0, got {self.scale!r}")
        object.__setattr__(self, "scale", scale[0])
        if self.size is not None:
            object.__setattr__(self, "size", _image_size(self.size))

    @property
    def channels(self) -> int:
        planes = _PLANES.fullmatch(self.channel_order)
        if planes:
            return int(planes.group(1))
        return {"L": 1, "RGBA": 4, "BGRA": 4}.get(self.channel_order, 3)

    @classmethod
    def for_channels(cls, channels: int, **fields: Any) -> Preprocess:
        """The default channel order of a model with ``channels`` input channels: ``L``,
        ``RGB``, ``RGBA`` or ``C<n>``."""
        order = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, f"C{channels}")
        return cls(channel_order=order, **fields)

    def grey(self) -> np.ndarray:
        """(C,) float32: the model input of a mid-grey pixel (value 128; opaque alpha)."""
        pixel = np.full(self.channels, 128.0)
        if self.channel_order in ("RGBA", "BGRA"):
            pixel[3] = 255.0
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        return ((pixel * self.scale - mean) / std).astype(np.float32)

    @property
    def span(self) -> np.ndarray:
        """Per channel (C,) float32: how far apart the model inputs of pixel values 0 and
        255 lie (the input range: 255 for Caffe's BGR 0-255, 1 for 0-1, about 4.4 for
        ImageNet mean/std)."""
        return np.abs(255.0 * self.scale / np.asarray(self.std, np.float64)).astype(np.float32)

    def replace(self, **changes: Any) -> Preprocess:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Decode, resize and normalize images into a float32 (N, C, H, W) batch."""
        if self.size is None:
            raise InputError("preprocessing has no target size; give size=(H, W)")
        if _PLANES.fullmatch(self.channel_order):
            pictures = [self._planes(image) for image in as_image_list(images)]
        else:
            alpha = self.channel_order in ("RGBA", "BGRA")
            pictures = [self.fit(load_image(image, alpha=alpha)) for image in as_image_list(images)]
        batch = np.stack(pictures).astype(np.float32)  # (N, H, W, C) 0-255
        if self.channel_order in ("BGR", "BGRA"):
            batch = np.concatenate([batch[..., 2::-1], batch[..., 3:]], axis=-1)
        batch = batch.transpose(0, 3, 1, 2) * np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return np.ascontiguousarray((batch - mean) / std, dtype=np.float32)

    def _planes(self, image: ImageLike) -> np.ndarray:
        """One (H, W, n) array of a ``C<n>`` model, checked (no decoding, no resize)."""
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        if array.shape != (*(self.size or ()), self.channels):
            raise InputError(
                f"channel order {self.channel_order} takes (H, W, {self.channels}) arrays of "
                f"size {self.size}, got {array.shape}: resize them first, or give a "
                f"preprocessed (N, {self.channels}, H, W) float batch"
            )
        return array.astype(np.float32)

    def fit(self, image: np.ndarray) -> np.ndarray:
        """Resize/crop one decoded (H, W, 3) uint8 RGB image (or (H, W, 4) RGBA) to
        ``size``; grey when ``L``."""
        assert self.size is not None
        height, width = self.size
        pil = Image.fromarray(image)
        if self.channel_order == "L":
            pil = pil.convert("L")
        if self.resize == "stretch":
            pil = pil.resize((width, height), Image.Resampling.BILINEAR)
        elif self.resize == "shorter_crop":
            ratio = max(height / pil.height, width / pil.width)
            new = (max(width, round(pil.width * ratio)), max(height, round(pil.height * ratio)))
            if new != pil.size:
                pil = pil.resize(new, Image.Resampling.BILINEAR)
            left, top = (pil.width - width) // 2, (pil.height - height) // 2
            pil = pil.crop((left, top, left + width, top + height))
        elif pil.size != (width, height):
            raise InputError(
                f"image is {pil.width}x{pil.height} but the model takes {width}x{height} "
                "and resize='none'; use resize='shorter_crop' or 'stretch'"
            )
        array = np.asarray(pil)
        return array[..., None] if array.ndim == 2 else array

    def invert(self, batch: np.ndarray) -> np.ndarray:
        """Undo the normalization for display: (N, C, H, W) float -> (N, H, W, 3) uint8 RGB
        (alpha dropped; the planes of ``C<n>`` shown as their mean, grey)."""
        batch = np.asarray(batch, np.float32)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        pixels = (batch * std + mean) / np.float32(self.scale)
        pixels = pixels.transpose(0, 2, 3, 1)
        if self.channel_order in ("BGR", "BGRA"):
            pixels = pixels[..., 2::-1]
        elif self.channel_order in ("L", "RGBA") or _PLANES.fullmatch(self.channel_order):
            pixels = pixels[..., :3] if self.channel_order == "RGBA" else pixels
            if pixels.shape[-1] != 3:
                pixels = np.repeat(pixels.mean(axis=-1, keepdims=True), 3, axis=-1)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


#: the largest side a preprocessing size may have (pixels)
MAX_SIDE = 1 << 16


def _finite_numbers(name: str, value: Any) -> tuple[float, ...]:
    """``value`` (one number or several) as a tuple of finite floats, or InputError."""
    try:
        numbers = tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=object)))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, got {value!r:.80}") from None
    if not numbers or not all(np.isfinite(numbers)):
        raise InputError(f"{name} must be finite numbers, got {value!r:.80}")
    return numbers


def _image_size(size: Any) -> tuple[int, int]:
    """``size`` as (H, W) of whole numbers in 1..MAX_SIDE, or InputError."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"size must be (H, W), two whole numbers; got {size!r:.80}") from None
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise InputError(f"size must be (H, W) between 1 and {MAX_SIDE} pixels; got {size!r:.80}")
    return height, width


#: Common conventions. ``mean``/``std`` are in each preset's own channel order.
PRESETS: dict[str, Preprocess] = {
    # torchvision / timm ImageNet models
    "imagenet": Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    # Caffe-trained models (SqueezeNet, VGG from Caffe): BGR 0-255 minus the BGR mean
    "caffe": Preprocess(scale=1.0, mean=(104.0, 117.0, 123.0), channel_order="BGR"),
    # raw BGR 0-255 (Windows ML samples, fast-neural-style)
    "bgr255": Preprocess(scale=1.0, channel_order="BGR"),
    # raw RGB 0-255 and 0-1
    "rgb255": Preprocess(scale=1.0),
    "rgb01": Preprocess(scale=1 / 255),
    # symmetric [-1, 1] (many PyTorch tutorials, GANs)
    "unit": Preprocess(scale=1 / 255, mean=(0.5,), std=(0.5,)),
    # grey digits 0-255 (ONNX-zoo MNIST) and 0-1
    "grey255": Preprocess(scale=1.0, channel_order="L", resize="stretch"),
    "grey01": Preprocess(scale=1 / 255, channel_order="L", resize="stretch"),
}


def preset(name: str) -> Preprocess:
    """A preset by name, with a clear error listing them."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(
            f"unknown preprocessing preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def as_image_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """Normalize one image or several into a list (a 4-D array is a stack of images)."""
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


#: the colour transparent pixels are composited on (white, as viewers and browsers show them)
BACKGROUND = (255, 255, 255)


#: environment variable: the most pixels an image file may declare (default: Pillow's
#: ``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million)
MAX_PIXELS_ENV = "CNNVIZ_MAX_IMAGE_PIXELS"

#: EXIF orientation (tag 0x0112) -> what :func:`read_image` did to show the photo upright
ORIENTATIONS = {
    1: "as stored",
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "transposed (mirrored along the main diagonal)",
    6: "rotated 90 degrees clockwise",
    7: "transversed (mirrored along the other diagonal)",
    8: "rotated 90 degrees counter-clockwise",
}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image file and what loading did to it.

    Attributes:
        pixels: (H, W, 3) uint8 RGB, upright ((H, W, 4) RGBA when read with alpha).
        path: the file.
        stored_size: (width, height) as stored in the file, before any EXIF rotation.
        orientation: the EXIF orientation applied (1: none; 6: the camera was turned, the
            picture is rotated 90 degrees clockwise to stand upright...; see ORIENTATIONS).
    """

    pixels: np.ndarray
    path: Path
    stored_size: tuple[int, int]
    orientation: int = 1

    @property
    def transform(self) -> str:
        """What the EXIF orientation did, in words (``as stored`` when nothing)."""
        return ORIENTATIONS.get(self.orientation, "as stored")


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit of an image file: ``max_pixels`` when given, else the environment's
    ``CNNVIZ_MAX_IMAGE_PIXELS``, else Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV)
        if text:
            try:
                max_pixels = int(text)
            except ValueError:
                raise InputError(
                    f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels"
                ) from None
        else:
            max_pixels = int(Image.MAX_IMAGE_PIXELS or 2**62)
    if max_pixels <= 0:
        raise InputError(f"the image pixel limit must be positive, got {max_pixels}")
    return max_pixels


def read_image(
    path: str | Path,
    background: tuple[int, int, int] = BACKGROUND,
    *,
    alpha: bool = False,
    max_pixels: int | None = None,
) -> LoadedImage:
    """Decode an image file upright (its EXIF orientation applied) into (H, W, 3) uint8 RGB,
    or with ``alpha`` (H, W, 4) RGBA (alpha kept; opaque when the file has none).

    An image that declares more than ``max_pixels`` pixels (see :func:`max_image_pixels`) is
    refused before it is decoded (a decompression bomb: a few bytes that unpack to
    gigabytes); so is one beyond Pillow's own hard limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``.
    Truncated or corrupt files raise :class:`InputError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise InputError(f"image file {what}: {str(path)!r}")
    limit = max_image_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns past its limit; ours decides (below), so its warning is ignored
            # when ours is larger and an error otherwise
            if limit > (Image.MAX_IMAGE_PIXELS or 0):
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            else:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as pil:
                width, height = pil.size
                if width * height > limit:
                    raise InputError(_too_many_pixels(path, width, height, limit))
                pil.load()
                orientation = _orientation(pil)
                upright = ImageOps.exif_transpose(pil) if orientation != 1 else pil
                if alpha:
                    pixels = _with_alpha(upright, background)
                else:
                    pixels = _from_pil(upright, background, str(path))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"image {str(path)!r} is too large to decode safely ({exc}); Pillow's hard limit "
            "is twice PIL.Image.MAX_IMAGE_PIXELS"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"cannot decode image {str(path)!r}: {exc}") from exc
    return LoadedImage(pixels, path, (width, height), orientation)


def _too_many_pixels(path: Path, width: int, height: int, limit: int) -> str:
    return (
        f"image {str(path)!r} declares {width}x{height} = {width * height} pixels, over the "
        f"limit of {limit} (a decompression bomb?); raise it with {MAX_PIXELS_ENV}=N or "
        "max_pixels=N if the file is genuine"
    )


def _orientation(pil: Image.Image) -> int:
    """The image's EXIF orientation (1-8; 1 when absent or not a valid value)."""
    value = pil.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def load_image(
    image: ImageLike,
    background: tuple[int, int, int] = BACKGROUND,
    *,
    alpha: bool = False,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode one image (path, PIL image or HWC/HW array) into an (H, W, 3) uint8 RGB array,
    or with ``alpha`` an (H, W, 4) RGBA one (alpha kept; opaque when the image has none).

    Files are read by :func:`read_image` (EXIF orientation applied, pixel limit, clear
    errors for corrupt files). 16-bit images (PNG ``I;16``, uint16 arrays) are scaled from
    0-65535 to 0-255, not clipped; without ``alpha``, an alpha channel with transparent pixels
    is composited on
    ``background`` (white) with a warning saying so (an opaque alpha is dropped silently).
    """
    if isinstance(image, (str, Path)):
        return read_image(image, background, alpha=alpha, max_pixels=max_pixels).pixels
    if alpha:
        return _with_alpha(image, background)
    if isinstance(image, Image.Image):
        return _from_pil(image, background, "image")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        if array.dtype == np.uint16:
            array = array / 257.0  # 0-65535 -> 0-255
        elif np.issubdtype(array.dtype, np.floating):
            # NaN (a corrupt float TIFF) shows as black, infinities as the ends of the range
            array = np.nan_to_num(array, nan=0.0, posinf=np.inf, neginf=-np.inf)
            if array.size and array.max() <= 1.0:
                array = array * 255.0  # floats in 0-1
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.shape[-1] == 4:
        return _composite(array, background, "image array")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _with_alpha(image: ImageLike, background: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 4) uint8 RGBA of a decoded image or array: its alpha kept, or an opaque one
    added (files come through :func:`read_image`)."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa", "P"):
            return np.asarray(image.convert("RGBA"))
    elif np.asarray(image).ndim == 3 and np.asarray(image).shape[-1] == 4:
        array = np.asarray(image)
        colour = load_image(array[..., :3], background)
        return np.concatenate([colour, load_image(array[..., 3:], background)[..., :1]], -1)
    colour = load_image(image, background)
    return np.concatenate([colour, np.full((*colour.shape[:2], 1), 255, np.uint8)], -1)


def _from_pil(pil: Image.Image, background: tuple[int, int, int], name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded PIL image: high bit depths scaled, alpha composited."""
    if pil.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(pil).astype(np.float64)
        if pil.mode.startswith("I;16") or (values.size and values.max() > 255):
            values = values / 257.0  # 16-bit 0-65535 -> 0-255
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
    if pil.mode == "F":
        return load_image(np.asarray(pil), background)
    if pil.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        pil.mode == "P" and "transparency" in pil.info
    ):
        return _composite(np.asarray(pil.convert("RGBA")), background, name)
    return np.asarray(pil.convert("RGB"))


def _composite(rgba: np.ndarray, background: tuple[int, int, int], name: str) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3): the colours over ``background`` by their alpha."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    if alpha.min() < 1.0:
        warnings.warn(
            f"{name} has transparent pixels: composited on the background colour "
            f"{tuple(background)} (load_image(..., background=) picks another)",
            stacklevel=3,
        )
    colour = rgba[..., :3].astype(np.float32)
    fill = np.asarray(background, np.float32)
    mixed = colour * alpha + fill * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
