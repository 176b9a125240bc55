"""Colormaps and heat-map overlays without matplotlib: small tables interpolated linearly.

colors = apply_colormap(heat, "inferno")            # (H, W) in [0, 1] -> (H, W, 3) uint8
picture = overlay(image, heat, "jet", alpha=0.7)    # heat over an RGB image, opacity ramped
limit = clip_threshold(np.abs(attr), 99.0)          # display scale: 99th pct of |nonzero|

Overlays ramp their opacity with the value (``alpha * weight ** gamma``): low values leave the
photo untouched instead of washing it with the colormap's darkest colour.
"""

from __future__ import annotations

import numpy as np

from .images import upscale

#: control points (position, (r, g, b)) of each colormap, colours in [0, 1]
COLORMAPS: dict[str, tuple[tuple[float, tuple[float, float, float]], ...]] = {
    # matplotlib's perceptually uniform "inferno", sampled every 1/16
    "inferno": (
        (0.0000, (0.0015, 0.0005, 0.0139)),
        (0.0625, (0.0409, 0.0292, 0.1393)),
        (0.1250, (0.1047, 0.0475, 0.2853)),
        (0.1875, (0.1852, 0.0406, 0.3904)),
        (0.2500, (0.2582, 0.0386, 0.4065)),
        (0.3125, (0.3392, 0.0658, 0.4256)),
        (0.3750, (0.4168, 0.0902, 0.4329)),
        (0.4375, (0.4940, 0.1187, 0.4273)),
        (0.5000, (0.5783, 0.1480, 0.4044)),
        (0.5625, (0.6569, 0.1801, 0.3719)),
        (0.6250, (0.7357, 0.2159, 0.3302)),
        (0.6875, (0.8049, 0.2617, 0.2800)),
        (0.7500, (0.8650, 0.3168, 0.2261)),
        (0.8125, (0.9170, 0.3878, 0.1628)),
        (0.8750, (0.9545, 0.4687, 0.0999)),
        (0.9375, (0.9773, 0.6050, 0.0391)),
        (1.0000, (0.9884, 0.9984, 0.6449)),
    ),
    # the classic MATLAB "jet" (what most Grad-CAM figures use)
    "jet": (
        (0.000, (0.0, 0.0, 0.5)),
        (0.125, (0.0, 0.0, 1.0)),
        (0.375, (0.0, 1.0, 1.0)),
        (0.625, (1.0, 1.0, 0.0)),
        (0.875, (1.0, 0.0, 0.0)),
        (1.000, (0.5, 0.0, 0.0)),
    ),
    # Moreland's diverging "coolwarm" for signed maps: blue < 0.5 (zero) < red
    "coolwarm": (
        (0.00, (0.2298, 0.2987, 0.7537)),
        (0.25, (0.5543, 0.6901, 0.9955)),
        (0.50, (0.8654, 0.8654, 0.8654)),
        (0.75, (0.9567, 0.5980, 0.4773)),
        (1.00, (0.7057, 0.0156, 0.1502)),
    ),
    "gray": ((0.0, (0.0, 0.0, 0.0)), (1.0, (1.0, 1.0, 1.0))),
}


def apply_colormap(values: np.ndarray, name: str = "inferno") -> np.ndarray:
    """Colour an array of values in [0, 1] (clipped; NaN as 0) with a named colormap.

    Args:
        values: any shape, float.
        name: a key of :data:`COLORMAPS`.

    Returns:
        uint8 array of shape ``values.shape + (3,)``.
    """
    try:
        table = COLORMAPS[name]
    except KeyError:
        raise ValueError(
            f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}"
        ) from None
    positions = np.array([p for p, _ in table], np.float64)
    colors = np.array([c for _, c in table], np.float64)
    v = np.clip(np.nan_to_num(np.asarray(values, np.float64)), 0.0, 1.0)
    rgb = np.stack([np.interp(v, positions, colors[:, k]) for k in range(3)], axis=-1)
    return np.rint(rgb * 255.0).astype(np.uint8)


def clip_threshold(magnitudes: np.ndarray, percentile: float = 99.0) -> float:
    """The ``percentile``-th percentile of the nonzero magnitudes: values above it are
    outliers a display should saturate (as Captum's ``visualize_image_attr`` with
    ``outlier_perc``), so a map whose mass sits in a few spikes (integrated gradients) stays
    visible. Nonzero values only, so a small blob on a zero background keeps its peak.

    Args:
        magnitudes: non-negative values, any shape.
        percentile: in (0, 100]; 100 gives the maximum.

    Returns:
        The threshold (0.0 for an all-zero map).
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    values = np.asarray(magnitudes, np.float64).ravel()
    values = values[values > 0]
    if values.size == 0:
        return 0.0
    return float(np.percentile(values, percentile))


def overlay(
    image: np.ndarray,
    heat: np.ndarray,
    colormap: str = "inferno",
    alpha: float = 0.7,
    *,
    gamma: float | None = 0.75,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a heat map over an image, its opacity ramping with the value.

    Each pixel gets ``alpha * weight ** gamma`` of the colormap's colour, so zero leaves the
    photo unchanged and the peak shows at ``alpha``.

    Args:
        image: (H, W, 3) uint8 RGB (or (H, W) grey).
        heat: (h, w) values in [0, 1] that pick the colour; resized bilinearly to (H, W)
            when it differs.
        colormap: a key of :data:`COLORMAPS`.
        alpha: opacity of the colour at full weight (0: image only, 1: colours only).
        gamma: exponent of the opacity ramp (< 1 shows weak values more); ``None``: a
            constant ``alpha`` everywhere (the classic blend).
        weight: (h, w) values in [0, 1] that set the opacity; default ``heat``. Signed maps
            shown with a diverging colormap pass ``|value|`` here (heat is ``0.5 + value / 2``).

    Returns:
        (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if gamma is not None and gamma <= 0:
        raise ValueError(f"gamma must be > 0 (or None for a constant alpha), got {gamma}")
    picture = np.asarray(image)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=-1)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"overlay needs an (H, W, 3) uint8 image; got {picture.shape}")
    heat = np.asarray(heat, np.float32)
    if heat.ndim != 2:
        raise ValueError(f"overlay needs an (h, w) heat map; got {heat.shape}")
    if heat.shape != picture.shape[:2]:
        heat = upscale(heat, size=picture.shape[:2], nearest=False)
    colored = apply_colormap(heat, colormap).astype(np.float32)
    if gamma is None:
        opacity: np.ndarray | float = alpha
    else:
        ramp = heat if weight is None else np.asarray(weight, np.float32)
        if ramp.ndim != 2:
            raise ValueError(f"overlay needs an (h, w) weight map; got {ramp.shape}")
        if ramp.shape != picture.shape[:2]:
            ramp = upscale(ramp, size=picture.shape[:2], nearest=False)
        ramp = np.clip(np.nan_to_num(ramp), 0.0, 1.0)
        opacity = (alpha * ramp**gamma)[..., None]
    blended = (1.0 - opacity) * picture.astype(np.float32) + opacity * colored
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
