"""The result every technique returns (:class:`Attribution`) and the shared plumbing
(preparing a batch and its targets, resizing maps). Gradients come from the engine's entry
point, :func:`cnnviz_core.backward.gradients`.

Contract of every technique::

    method(model, images, target=None, **options) -> Attribution

``images``: paths, PIL images, uint8 arrays or a preprocessed float (N, C, H, W) batch.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cnnviz_core import Model
from cnnviz_core.preprocess import ImageLike
from cnnviz_core.targets import ResolvedTarget, TargetLike, resolve_targets

from ..render.colormap import COLORMAPS, apply_colormap, clip_threshold, overlay
from ..render.display import new_axes
from ..render.images import png_bytes, png_data_uri, tile_grid

Images = ImageLike | Sequence[ImageLike] | np.ndarray


@dataclass
class Attribution:
    """Maps explaining a batch, with what they explain and how they were made.

    Attributes:
        maps: float32 (N, H, W) heat maps, or (N, C, H, W) for colour ones (guided
            backprop, deconvnet, Guided Grad-CAM): same spatial size as the input.
        method: technique name (``saliency``, ``gradcam``, ``smoothgrad(saliency)``...).
        targets: the resolved target of each image.
        options: the options the maps were made with.
        images: (N, H, W, 3) uint8, the inputs as the model sees them (for display).
        signed: whether the maps carry a sign worth showing (gradient x input, IG).
        metrics: checks and numbers the technique reports (e.g. IG completeness).
        extras: intermediate arrays (e.g. the CAM at the layer's resolution).
    """

    maps: np.ndarray
    method: str
    targets: list[ResolvedTarget]
    options: dict[str, Any]
    images: np.ndarray
    signed: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def colour(self) -> bool:
        """Whether the maps have a channel axis (N, C, H, W)."""
        return self.maps.ndim == 4

    @property
    def heatmap(self) -> np.ndarray:
        """(N, H, W) float32: the maps, colour ones reduced by the max of |value| over
        channels (as saliency maps are)."""
        if self.colour:
            return np.abs(self.maps).max(axis=1)
        return self.maps

    def normalized(self, clip_percentile: float | None = 99.0) -> np.ndarray:
        """Maps scaled per image for display: [0, 1] (unsigned heat maps, shifted up when they
        dip below zero), [-1, 1] (signed and colour maps); all-zero maps stay zero.

        Args:
            clip_percentile: the scale is this percentile of the nonzero |values| (as
                Captum's ``outlier_perc = 100 - p``); values above it saturate at +-1, so
                maps with a few huge spikes (integrated gradients) stay visible. ``None``
                or 100: scale by the maximum.
        """
        maps, scale = self._display_scale(clip_percentile)
        low = -1.0 if (self.signed or self.colour) else 0.0
        return np.clip(maps / scale[(...,) + (None,) * (maps.ndim - 1)], low, 1.0)

    def _display_scale(self, clip_percentile: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The maps (unsigned ones shifted up to 0 when they dip below it) and the per-image
        value that :meth:`normalized` maps to 1 (never 0)."""
        maps = self.maps.astype(np.float32)
        if not (self.signed or self.colour):
            maps = maps - self._shift()[(...,) + (None,) * (maps.ndim - 1)]
        scale = np.array(
            [clip_threshold(np.abs(one), clip_percentile or 100.0) for one in maps], np.float32
        )
        return maps, np.where(scale > 0, scale, 1.0).astype(np.float32)

    def _shift(self) -> np.ndarray:
        """Per image, the minimum of an unsigned map when below zero, else 0."""
        return np.minimum(self.maps.reshape(len(self.maps), -1).min(axis=1), 0).astype(np.float32)

    def render(
        self,
        i: int,
        colormap: str | None = None,
        alpha: float = 0.7,
        clip_percentile: float | None = 99.0,
        gamma: float | None = 0.75,
    ) -> np.ndarray:
        """Image ``i`` as (H, W, 3) uint8: a heat map over the input (``inferno``;
        ``coolwarm`` centred on zero for signed maps) whose opacity ramps with |value|
        (``alpha * |value| ** gamma``: zero leaves the photo as it is), or the colour map
        itself shown around mid-grey (guided backprop, deconvnet). ``clip_percentile`` as
        in :meth:`normalized`."""
        shown = self.normalized(clip_percentile)[i]
        if self.colour:
            rgb = np.moveaxis(shown, 0, -1)
            if rgb.shape[2] == 1:
                rgb = np.repeat(rgb, 3, axis=-1)
            return np.rint(np.clip(0.5 + 0.5 * rgb[..., :3], 0, 1) * 255).astype(np.uint8)
        if self.signed:
            return overlay(
                self.images[i],
                0.5 + 0.5 * shown,
                colormap or "coolwarm",
                alpha,
                gamma=gamma,
                weight=np.abs(shown),
            )
        return overlay(self.images[i], shown, colormap or "inferno", alpha, gamma=gamma)

    def render_map(
        self, i: int, colormap: str = "inferno", clip_percentile: float | None = 99.0
    ) -> np.ndarray:
        """The heat map of image ``i`` alone, coloured, (H, W, 3) uint8."""
        shown = np.abs(self.normalized(clip_percentile)[i])
        return apply_colormap(shown.max(axis=0) if self.colour else shown, colormap)

    # ------------------------------------------------------------------ display

    def _labels(self) -> list[str]:
        return [target.label for target in self.targets] or [""] * len(self)

    def _grid(self, columns: int = 4) -> np.ndarray:
        tiles = [self.render(i) for i in range(len(self))]
        return tile_grid(tiles, columns=min(columns, len(tiles)), pad=2, background=255)

    def _repr_png_(self) -> bytes:
        """Jupyter: every image's overlay in a grid (4 per row), as PNG bytes."""
        return png_bytes(self._grid())

    def _repr_html_(self) -> str:
        """Jupyter: a small table (method, targets) above the overlays, inlined as PNG."""
        targets = ", ".join(html.escape(label) for label in self._labels() if label)
        options = ", ".join(
            f"{html.escape(str(k))}={html.escape(repr(v))}" for k, v in self.options.items()
        )
        rows = [("method", html.escape(self.method)), ("targets", targets or "-")]
        if options:
            rows.append(("options", options))
        left = "style='text-align:left'"
        table = "".join(
            f"<tr><th {left}>{name}</th><td {left}>{value}</td></tr>" for name, value in rows
        )
        return (
            f"<div class='cnnviz-attribution'><table>{table}</table>"
            f"<img src='{png_data_uri(self._grid())}' alt='{html.escape(self.method)} maps'/></div>"
        )

    def plot(
        self,
        index: int = 0,
        ax: Any = None,
        colormap: str | None = None,
        clip_percentile: float | None = 99.0,
        colorbar: bool = True,
    ) -> tuple[Any, Any]:
        """Draw image ``index``'s overlay with matplotlib (as Captum's
        ``visualize_image_attr``), with a colorbar in the map's own units whose range is the
        display scale (values beyond it are clipped, see :meth:`normalized`).

        Args:
            index: which image of the batch.
            ax: a matplotlib Axes to draw on; default a new figure.
            colormap: as in :meth:`render`.
            clip_percentile: as in :meth:`normalized`.
            colorbar: add the colorbar (heat maps only; colour maps have none).

        Returns:
            ``(figure, axes)``.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        figure, ax, created = new_axes(ax)
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import LinearSegmentedColormap, Normalize

        name = colormap or ("coolwarm" if self.signed else "inferno")
        ax.imshow(self.render(index, colormap=name, clip_percentile=clip_percentile))
        ax.set_axis_off()
        label = self._labels()[index]
        ax.set_title(f"{self.method}: {label}" if label else self.method, fontsize=10)
        if colorbar and not self.colour:
            _, scale = self._display_scale(clip_percentile)
            limit = float(scale[index])
            if self.signed:
                low, high = -limit, limit
            else:
                low = float(self._shift()[index])
                high = low + limit
            cmap = LinearSegmentedColormap.from_list(
                name, [(position, color) for position, color in COLORMAPS[name]]
            )
            mappable = ScalarMappable(norm=Normalize(low, high), cmap=cmap)
            bar = figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
            clipped = (
                "" if clip_percentile in (None, 100.0) else f" (clipped at p{clip_percentile:g})"
            )
            bar.set_label(f"attribution{clipped}", fontsize=9)
        if created:
            figure.tight_layout()
        return figure, ax


class Method(Protocol):
    """What every technique is: ``method(model, images, target=None, **options)``; the
    options are each technique's own keyword parameters (its
    :class:`~.methods.MethodSpec` lists those :func:`~.methods.explain` passes)."""

    __name__: str

    def __call__(self, model: Model, images: Images, target: Any = None) -> Attribution: ...


def prepare(model: Model, images: Images, target: Any) -> tuple[np.ndarray, list[ResolvedTarget]]:
    """The preprocessed batch and one resolved target per image (None: a forward run for
    the predicted class; techniques that run the model anyway resolve from that run)."""
    batch = model.prepare(images)
    return batch, resolve_targets(model, batch, target)


def display_images(model: Model, batch: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8: the batch as the model sees it."""
    return model.preprocess.invert(batch)


def bilinear_resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (..., h, w) to (..., H, W) bilinearly with half-pixel centres, edges clamped
    (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, OpenCV's
    ``resize``)."""
    h, w = maps.shape[-2:]
    height, width = size

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(h, height)
    x0, x1, fx = axis(w, width)
    rows = maps[..., y0, :] * (1 - fy)[:, None] + maps[..., y1, :] * fy[:, None]
    return (rows[..., x0] * (1 - fx) + rows[..., x1] * fx).astype(np.float32)


def make_attribution(
    maps: np.ndarray,
    method: str,
    targets: list[ResolvedTarget],
    options: dict[str, Any],
    model: Model,
    batch: np.ndarray,
    *,
    gradients: bool = False,
    **fields: Any,
) -> Attribution:
    """An :class:`Attribution` with float32 maps and the batch's display images.

    ``gradients``: the maps come from the engine's backward pass. Then, for a QDQ-quantized
    model, ``metrics["straight_through"]`` is True: its gradients pass
    Quantize/DequantizeLinear as straight-through estimates (see ``Model.quantization``);
    perturbation methods (forward runs only) are exact and carry no such flag."""
    attribution = Attribution(
        np.ascontiguousarray(maps, np.float32),
        method,
        list(targets),
        dict(options),
        display_images(model, batch),
        **fields,
    )
    if gradients and model.quantization == "qdq":
        attribution.metrics["straight_through"] = True
    return attribution


__all__ = [
    "Attribution",
    "Images",
    "Method",
    "TargetLike",
    "bilinear_resize",
    "make_attribution",
    "prepare",
]
