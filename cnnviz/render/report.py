"""The HTML report, an explorer: one self-contained ``report.html`` (pictures embedded as
data URIs, its script and style inlined, nothing fetched), or with its PNGs beside it in
``images/`` (``assets=True``).

A report is a list of sections. Each section comes from a builder registered with
:func:`register_section`; :func:`build_report` runs the builders in order, each reading a
:class:`ReportContext` (the model, the images, their batch, the options) and writing its
pictures through a :class:`Page`. A technique adds its section from its own module::

    from cnnviz.render.report import Hover, Page, ReportContext, Section, register_section

    @register_section("gradcam", order=100)
    def gradcam_section(ctx: ReportContext, page: Page) -> Section | None:
        result = gradcam(ctx.model, ctx.batch, **ctx.options.get("gradcam", {}))
        panels = [
            page.for_image(i, page.figure(page.image(result.render(i), f"{i}",
                alt=f"Grad-CAM of {n}", hover=Hover(result.heatmap[i], "Grad-CAM")), n))
            for i, n in enumerate(ctx.names)
        ]
        return Section("gradcam", "Grad-CAM", "".join(panels))

The section is registered when that module is imported, so whatever builds the report (the
CLI, ``cnnviz/__init__.py``) imports it explicitly. Built-in orders: ``model`` 10, ``layers``
20, ``predictions`` 30; techniques use 100 and up. A builder returns None to leave its
section out (e.g. no images). Options for one section live under its key in
``ctx.options``. Everything a builder puts in ``Section.html`` must already be escaped:
:func:`escape` does it, and the :class:`Page` helpers escape all text they are given.

Explorer: Python writes the data, the inlined script (``assets/explorer.js``) renders the
controls. :meth:`Page.for_image` / :meth:`Page.for_layer` mark what the image / layer
picker shows, :meth:`Page.tabs` makes a tab set (tabs of one group switch together), and a
picture given a :class:`Hover` shows the value under the cursor and its pixel coordinates.

Size: embedded colour pictures larger than :data:`PALETTE_ABOVE` are stored with a
256-colour palette; pictures and hover data count against ``budget`` bytes: past half of it
every colour picture gets the palette, past 80 % pictures are stored at half resolution
(shown at the same size), and a report still over budget warns (:class:`ReportSizeWarning`).

Atomicity: ``report.html`` is written last, by an atomic rename; with ``assets=True``
pictures are staged in a hidden folder inside the output folder and moved into
``images/<section key>/`` only when every section is built. An interrupted or failed run
leaves no new ``report.html`` and no staging folder (an older complete report stays).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnviz_core import Layer, Model
from cnnviz_core.preprocess import ImageLike, as_image_list

from ..output import PathLike, atomic_write_text
from .images import save_png, to_pil, upscale

#: folder (inside the output folder) that holds the report's pictures (``assets=True``)
IMAGES_DIR = "images"
#: file name of the report inside the output folder
REPORT_FILE = "report.html"
#: name prefix of the hidden folder where pictures wait until the report is complete
STAGING_PREFIX = ".report-staging-"
#: input images are enlarged (nearest neighbour, integer factor) to at least this many pixels
MIN_DISPLAY_SIDE = 128
#: list values longer than this are shortened in tables
MAX_LISTED = 10
#: the multiplication sign between dimensions
TIMES = "\u00d7"
#: default size budget of a self-contained report, bytes
DEFAULT_BUDGET = 15 * 2**20
#: embedded colour pictures whose PNG is larger than this many bytes get a 256-colour
#: palette (when that is smaller)
PALETTE_ABOVE = 24 * 2**10
#: hover values kept per picture at most (larger maps are subsampled by an integer step)
MAX_HOVER_VALUES = 2**15

_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")


class ReportSizeWarning(UserWarning):
    """The self-contained report came out larger than its size budget."""


class Markup(str):
    """HTML that is already safe: :func:`escape` and the :class:`Page` helpers pass it as is."""


def escape(value: object) -> Markup:
    """HTML-escape text (quotes included); :class:`Markup` passes through unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


@dataclass
class ReportContext:
    """What section builders read.

    Attributes:
        model: the model the report is about.
        images: the inputs as given (paths, PIL images or arrays).
        names: one display name per image.
        batch: float32 (N, C, H, W), ``model.prepare(images)``.
        options: section options, by convention keyed by section key.
        top_k: how many classes to list per image.
    """

    model: Model
    images: list[ImageLike]
    names: list[str]
    batch: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    top_k: int = 5

    @cached_property
    def pixels(self) -> np.ndarray:
        """(N, H, W, 3) uint8: the batch as the model sees it (preprocessing undone)."""
        return self.model.preprocess.invert(self.batch)

    @cached_property
    def probabilities(self) -> np.ndarray:
        """(N, num_classes) class probabilities, computed once for all sections."""
        if not len(self.batch):
            return np.zeros((0, self.model.num_classes), np.float32)
        return self.model.probabilities(self.batch)


@dataclass(frozen=True)
class Section:
    """One part of the report: ``key`` is its anchor, ``html`` its escaped body fragment."""

    key: str
    title: str
    html: str


@dataclass(frozen=True)
class Hover:
    """Values the explorer shows under the cursor of a picture, with pixel coordinates.

    One map covering the whole picture, or a grid of maps laid out as
    :func:`~cnnviz.render.images.tile_grid` lays tiles out (``columns`` per row, ``pad``
    picture pixels between and around them, each tile ``tile`` picture pixels).

    Attributes:
        values: (h, w) or (n, h, w) float values; NaN: nothing to show there. Coordinates
            are reported in this array's pixels (e.g. input pixels for an attribution map
            shown enlarged, feature-map cells for an activation); more than
            :data:`MAX_HOVER_VALUES` are subsampled (every ``step``-th row and column).
        labels: one label, or one per map (e.g. ``channel 7``).
        columns: maps per row of the grid.
        pad: picture pixels between and around the tiles.
        tile: (height, width) of one tile in picture pixels; default the picture's size
            (one map) or the values' size.
    """

    values: np.ndarray
    labels: str | Sequence[str] = ""
    columns: int = 1
    pad: int = 0
    tile: tuple[int, int] | None = None

    def spec(self, picture_size: tuple[int, int]) -> dict[str, Any]:
        """The JSON the script reads: map geometry, per-map range and uint8 codes."""
        values = np.asarray(self.values, np.float64)
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3 or 0 in values.shape:
            raise ValueError(f"Hover values must be (h, w) or (n, h, w); got {values.shape}")
        count, height, width = values.shape
        tile = self.tile or (picture_size if count == 1 else (height, width))
        step = max(1, math.ceil(math.sqrt(count * height * width / MAX_HOVER_VALUES)))
        values = values[:, ::step, ::step]
        finite = np.isfinite(values)
        low = np.array([v[f].min() if f.any() else 0.0 for v, f in zip(values, finite)])
        high = np.array([v[f].max() if f.any() else 0.0 for v, f in zip(values, finite)])
        span = np.where(high > low, high - low, 1.0)[:, None, None]
        codes = np.rint((np.nan_to_num(values) - low[:, None, None]) / span * 254)
        codes = np.where(finite, np.clip(codes, 0, 254), 255).astype(np.uint8)
        labels = [self.labels] * count if isinstance(self.labels, str) else list(self.labels)
        if len(labels) != count:
            raise ValueError(f"Hover has {count} maps but {len(labels)} labels")
        return {
            "ph": picture_size[0],
            "pw": picture_size[1],
            "th": tile[0],
            "tw": tile[1],
            "pad": self.pad,
            "columns": max(1, self.columns),
            "n": count,
            "h": codes.shape[1],
            "w": codes.shape[2],
            "step": step,
            "lo": low.tolist(),
            "hi": high.tolist(),
            "labels": labels,
            "q": base64.b64encode(codes.tobytes()).decode("ascii"),
        }


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class _Budget:
    """Bytes of embedded pictures and hover data so far, against the report's budget."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0

    def level(self) -> int:
        """0: store pictures as they are; 1: palette colour pictures; 2: also halve them."""
        if self.limit is None:
            return 0
        return 2 if self.used > 0.8 * self.limit else 1 if self.used > 0.5 * self.limit else 0


class Page:
    """Helpers for section builders: pictures (embedded, or staged as PNG files), tables,
    figures, and the explorer's image / layer panels, tabs and hover values.

    Every helper escapes the text it is given (except :class:`Markup`) and returns Markup.
    """

    def __init__(
        self, staging: Path | None, section_key: str, *, budget: _Budget | None = None
    ) -> None:
        self._staging = staging
        self._folder = section_key
        self._budget = budget or _Budget(None)
        #: staged files, relative to the staging (and final images) folder
        self.files: list[str] = []
        #: hover data by map id (the page's JSON ``maps``)
        self.maps: dict[str, dict[str, Any]] = {}
        #: layers this section shows panels for, in order (the layer picker lists them)
        self.layers: list[str] = []
        self._names: set[str] = set()

    def image(
        self,
        array: np.ndarray,
        name: str,
        alt: str,
        width: int | None = None,
        *,
        pixelated: bool = False,
        hover: Hover | None = None,
    ) -> Markup:
        """The ``<img>`` tag of ``array``: a data URI, or a staged PNG (``assets=True``).

        Args:
            array: (H, W) or (H, W, C) image, uint8 or float in [0, 1].
            name: file name stem, unique within the section (made safe and unique).
            alt: text alternative.
            width: display width in CSS pixels (height keeps the aspect); None: natural size.
            pixelated: show pixels as crisp squares when the browser scales the picture
                (always on when ``width`` is larger than the picture).
            hover: values to show under the cursor (see :class:`Hover`).
        """
        natural_height, natural_width = np.shape(array)[:2]
        file_name = self._unique_file_name(name)
        reduced = False
        if self._staging is not None:
            save_png(array, self._staging / file_name)
            self.files.append(file_name)
            source = f"{IMAGES_DIR}/{file_name}"
        else:
            self._names.add(file_name)
            source, reduced = self._data_uri(array)
        shown_width = width or natural_width
        shown_height = max(1, round(natural_height * shown_width / natural_width))
        scaled = shown_width > natural_width or reduced
        css_class = ' class="pixelated"' if pixelated or scaled else ""
        map_attribute = ""
        if hover is not None:
            map_id = f"{self._folder}/{file_name.split('/', 1)[1][:-4]}"
            spec = hover.spec((natural_height, natural_width))
            self._budget.used += len(spec["q"])
            self.maps[map_id] = spec
            map_attribute = f' data-map="{escape(map_id)}"'
        return Markup(
            f'<img src="{source}" alt="{escape(alt)}" width="{shown_width}" '
            f'height="{shown_height}"{css_class}{map_attribute}>'
        )

    def figure(self, img_html: str, caption: str) -> Markup:
        """A figure: trusted picture HTML (from :meth:`image`) with an escaped caption."""
        return Markup(f"<figure>{img_html}<figcaption>{escape(caption)}</figcaption></figure>")

    def table(
        self, headers: Sequence[object], rows: Iterable[Sequence[object]], *, css: str = ""
    ) -> Markup:
        """A table with a header row; cells are escaped unless they are :class:`Markup`."""
        head = "".join(f"<th>{escape(cell)}</th>" for cell in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
        )
        css_class = f' class="{escape(css)}"' if css else ""
        return Markup(
            f'<div class="table-wrap"><table{css_class}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )

    def definitions(self, pairs: Iterable[tuple[object, object]]) -> Markup:
        """A two-column table of names and values (names as row headers)."""
        body = "".join(
            f'<tr><th scope="row">{escape(key)}</th><td>{escape(value)}</td></tr>'
            for key, value in pairs
        )
        return Markup(
            f'<div class="table-wrap"><table class="definitions"><tbody>{body}</tbody>'
            "</table></div>"
        )

    def for_image(self, index: int, body: str) -> Markup:
        """Trusted HTML shown while the image picker selects image ``index``."""
        return Markup(f'<div data-image="{int(index)}">{body}</div>')

    def for_layer(self, layer: str, body: str) -> Markup:
        """Trusted HTML shown while the layer picker selects ``layer`` (listed in the picker)."""
        if layer not in self.layers:
            self.layers.append(layer)
        return Markup(f'<div data-layer="{escape(layer)}">{body}</div>')

    def tabs(
        self, group: str, panels: Sequence[tuple[str, str]], *, everything: bool = True
    ) -> Markup:
        """A tab set: one button per ``(title, trusted HTML)`` panel, plus ``All`` (every
        panel side by side) first when ``everything``. Tab sets of one ``group`` switch
        together (picking Grad-CAM for one image picks it for all)."""
        keys = [
            re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "tab" for title, _ in panels
        ]
        buttons = [("all", "All")] if everything else []
        buttons += [(key, title) for key, (title, _) in zip(keys, panels)]
        tablist = "".join(
            f'<button type="button" role="tab" data-tab="{escape(key)}">{escape(title)}</button>'
            for key, title in buttons
        )
        bodies = "".join(
            f'<div role="tabpanel" data-tab="{escape(key)}"><div class="panel-title">'
            f"{escape(title)}</div>{body}</div>"
            for key, (title, body) in zip(keys, panels)
        )
        return Markup(
            f'<div class="tabs" data-tabs="{escape(group)}"><div class="tablist" '
            f'role="tablist">{tablist}</div><div class="tabpanels">{bodies}</div></div>'
        )

    def _data_uri(self, array: np.ndarray) -> tuple[str, bool]:
        """The picture as a PNG data URI, smaller as the budget fills up; and whether it
        was stored at half resolution."""
        picture = to_pil(array)
        level = self._budget.level()
        halved = level >= 2 and min(picture.size) >= 64
        if halved:
            picture = picture.resize(
                (picture.width // 2, picture.height // 2), Image.Resampling.BOX
            )
        stored = _png(picture)
        if picture.mode in ("RGB", "RGBA") and (level >= 1 or len(stored) > PALETTE_ABOVE):
            stored = min(
                stored, _png(picture.quantize(256, method=Image.Quantize.FASTOCTREE)), key=len
            )
        encoded = base64.b64encode(stored).decode("ascii")
        self._budget.used += len(encoded)
        return "data:image/png;base64," + encoded, halved

    def _unique_file_name(self, name: str) -> str:
        """``<section key>/<name made safe>.png``, numbered when the name is taken."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:80] or "image"
        candidate, number = f"{self._folder}/{safe}.png", 1
        while candidate in self.files or candidate in self._names:
            number += 1
            candidate = f"{self._folder}/{safe}-{number}.png"
        return candidate


# ------------------------------------------------------------------------------ registry

SectionBuilder = Callable[[ReportContext, Page], Section | None]


@dataclass(frozen=True)
class RegisteredSection:
    """A section builder and where it goes in the report."""

    key: str
    order: float
    build: SectionBuilder


_REGISTRY: dict[str, RegisteredSection] = {}


def register_section(key: str, *, order: float = 100) -> Callable[[SectionBuilder], SectionBuilder]:
    """Decorator: register ``fn(ctx, page) -> Section | None`` as the report section ``key``.

    Args:
        key: the section's id and anchor: lowercase letters, digits, ``-`` and ``_``.
        order: position in the report, ascending (ties keep registration order).

    Raises:
        ValueError: the key is malformed or already registered.
    """
    if not _KEY_PATTERN.fullmatch(key):
        raise ValueError(
            f"section key {key!r} must be lowercase letters, digits, '-' or '_' "
            "(starting with a letter)"
        )

    def decorate(build: SectionBuilder) -> SectionBuilder:
        if key in _REGISTRY:
            raise ValueError(
                f"report section {key!r} is already registered by "
                f"{_REGISTRY[key].build.__module__}.{_REGISTRY[key].build.__qualname__}"
            )
        _REGISTRY[key] = RegisteredSection(key, order, build)
        return build

    return decorate


def unregister_section(key: str) -> None:
    """Remove a registered section (tests, plugins that replace a built-in)."""
    try:
        del _REGISTRY[key]
    except KeyError:
        raise KeyError(f"no report section {key!r}; registered: {', '.join(_REGISTRY)}") from None


def sections() -> list[RegisteredSection]:
    """The registered sections in report order."""
    return sorted(_REGISTRY.values(), key=lambda section: section.order)


# --------------------------------------------------------------------------------- build


def build_report(
    model: Model,
    images: ImageLike | Sequence[ImageLike] | np.ndarray,
    out_dir: PathLike,
    *,
    names: Sequence[str] | None = None,
    sections: Sequence[str] | None = None,
    title: str | None = None,
    options: dict[str, Any] | None = None,
    top_k: int = 5,
    assets: bool = False,
    budget: int | None = DEFAULT_BUDGET,
) -> Path:
    """Write ``out_dir/report.html``: one self-contained file (default), or with its
    pictures in ``out_dir/images/`` (``assets=True``).

    Args:
        model: the model to report on.
        images: input images (paths, PIL images or arrays; a 4-D array is a stack); may be
            empty.
        out_dir: output folder, created when missing.
        names: display names, one per image; default the file names (``image N`` for arrays).
        sections: keys of the sections to include, in any order; default all registered.
        title: page title; default ``cnnviz report: <model name>``.
        options: section options, keyed by section key.
        top_k: classes listed per image.
        assets: write pictures as PNG files beside the page instead of embedding them.
        budget: size budget in bytes of a self-contained report (pictures are stored
            smaller as it fills, see the module notes); None: no limit.

    Returns:
        Path of the written ``report.html``.

    Warns:
        ReportSizeWarning: the self-contained report is larger than ``budget``.
    """
    started = time.perf_counter()
    inputs = as_image_list(images)
    if names is None:
        names = [_default_name(image, index) for index, image in enumerate(inputs)]
    if len(names) != len(inputs):
        raise ValueError(f"{len(names)} names given for {len(inputs)} images")
    if budget is not None and budget <= 0:
        raise ValueError(f"budget must be a positive number of bytes or None; got {budget}")
    chosen = _chosen_sections(sections)
    batch = model.prepare(inputs) if inputs else np.zeros((0, *model.input_shape), np.float32)
    ctx = ReportContext(model, inputs, list(names), batch, dict(options or {}), top_k)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)) if assets else None
    tally = _Budget(None if assets else budget)
    try:
        built: list[Section] = []
        staged: list[str] = []
        maps: dict[str, dict[str, Any]] = {}
        layers: list[str] = []
        timings: list[tuple[str, float]] = []
        for registered in chosen:
            page = Page(staging, registered.key, budget=tally)
            section_started = time.perf_counter()
            section = registered.build(ctx, page)
            staged += page.files
            if section is None:
                continue
            timings.append((registered.key, time.perf_counter() - section_started))
            if section.key != registered.key:
                raise ValueError(
                    f"builder of section {registered.key!r} returned key {section.key!r}"
                )
            built.append(section)
            maps.update(page.maps)
            layers += [layer for layer in page.layers if layer not in layers]
        data = {"images": list(ctx.names), "layers": layers, "maps": maps}
        page_title = title or f"cnnviz report: {model.name}"
        footer = _footer(model, timings, time.perf_counter() - started, tally)
        document = _render_page(page_title, built, data, footer)
        if staging is not None:
            for file_name in staged:
                target = out / IMAGES_DIR / file_name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / file_name, target)
        elif budget is not None and len(document.encode("utf-8")) > budget:
            warnings.warn(
                f"the report is {len(document.encode('utf-8')) / 2**20:.1f} MB, over its "
                f"budget of {budget / 2**20:.1f} MB: give fewer images or sections, a larger "
                "budget=, or assets=True (pictures as files)",
                ReportSizeWarning,
                stacklevel=2,
            )
        return atomic_write_text(out / REPORT_FILE, document)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _chosen_sections(keys: Sequence[str] | None) -> list[RegisteredSection]:
    registered = sections()
    if keys is None:
        return registered
    unknown = sorted(set(keys) - {section.key for section in registered})
    if unknown:
        raise ValueError(
            f"unknown report section(s) {', '.join(map(repr, unknown))}; "
            f"registered: {', '.join(section.key for section in registered)}"
        )
    return [section for section in registered if section.key in keys]


def _default_name(image: ImageLike, index: int) -> str:
    if isinstance(image, (str, Path)):
        return Path(image).name
    return f"image {index + 1}"


# ------------------------------------------------------------------------------ sections


@register_section("model", order=10)
def model_section(ctx: ReportContext, page: Page) -> Section:
    """The model card: what the model is, what it takes, and the card stored in the file."""
    model = ctx.model
    labels = model.labels
    facts: list[tuple[str, object]] = [
        ("name", model.name),
        ("input", model.input_name),
        ("input shape (C, H, W)", f" {TIMES} ".join(map(str, model.input_shape))),
        *(
            (f"preprocess: {key.replace('_', ' ')}", _display_value(value))
            for key, value in model.preprocess.to_dict().items()
        ),
        ("classes", model.num_classes),
        ("output", "probabilities" if model.outputs_probabilities else "logits (softmax shown)"),
        ("labels", _display_value(labels) if labels else "none (shown as 'class N')"),
        ("layers", len(model.layers)),
        ("device", model.device),
    ]
    if model.card:
        card = page.definitions((key, _display_value(value)) for key, value in model.card.items())
        card_html = f"<h3>Model card</h3>{card}"
    else:
        card_html = (
            '<p class="muted">The file carries no model card (<code>cnnviz.card</code>).</p>'
        )
    return Section("model", "Model", page.definitions(facts) + card_html)


@register_section("layers", order=20)
def layers_section(ctx: ReportContext, page: Page) -> Section:
    """Every layer: names, op, output shape and receptive field in input pixels."""
    rows = [
        [
            index,
            Markup(f"<code>{escape(layer.name)}</code>"),
            ", ".join(layer.aliases),
            layer.op_type,
            _shape_text(layer.shape),
            *_field_cells(layer),
        ]
        for index, layer in enumerate(ctx.model.layers)
    ]
    headers = ["#", "name", "aliases", "op", "output shape", "RF size", "RF stride", "RF offset"]
    note = (
        f'<p class="muted">RF: receptive field in input pixels (height {TIMES} width when they '
        "differ); global: every output sees the whole input.</p>"
    )
    return Section("layers", "Layers", note + page.table(headers, rows, css="layers"))


@register_section("predictions", order=30)
def predictions_section(ctx: ReportContext, page: Page) -> Section | None:
    """Each input as the model sees it, with its top-k classes as probability bars."""
    if not ctx.names:
        return None
    probabilities = ctx.probabilities
    k = max(1, min(ctx.top_k, probabilities.shape[1]))
    cards = []
    for index, name in enumerate(ctx.names):
        pixels = ctx.pixels[index]
        shown = upscale(pixels, min_side=MIN_DISPLAY_SIDE)
        picture = page.image(
            shown,
            f"input-{index}",
            alt=f"{name} as the model sees it",
            pixelated=shown.shape[0] > pixels.shape[0],
        )
        row = probabilities[index]
        top = np.argsort(-row, kind="stable")[:k]
        bars = [
            [
                ctx.model.label(int(class_index)),
                Markup(
                    f'<div class="bar"><span style="width:{100 * float(row[class_index]):.1f}%">'
                    "</span></div>"
                ),
                _percent(float(row[class_index])),
            ]
            for class_index in top
        ]
        table = page.table(["class", "probability", ""], bars, css="topk")
        cards.append(f'<div class="card">{page.figure(picture, name)}{table}</div>')
    return Section("predictions", "Predictions", f'<div class="cards">{"".join(cards)}</div>')


def _field_cells(layer: Layer) -> list[str]:
    """RF size, stride and offset cells: numbers, ``global`` or ``-`` (not defined)."""
    field = layer.receptive_field
    if field is not None:
        return [_pair_text(field.size), _pair_text(field.stride), _pair_text(field.offset)]
    shape = layer.shape
    whole_input = shape is not None and (
        len(shape) != 4 or tuple(shape[2:]) == (1, 1) or layer.op_type.startswith("Global")
    )
    return ["global", "-", "-"] if whole_input else ["-", "-", "-"]


def _pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]} {TIMES} {pair[1]}"


def _shape_text(shape: tuple | None) -> str:
    if shape is None:
        return "?"
    return f" {TIMES} ".join("?" if dim is None else str(dim) for dim in shape)


def _percent(probability: float) -> str:
    return "<0.1%" if 0 < probability < 0.0005 else f"{100 * probability:.1f}%"


def _display_value(value: object) -> str:
    """A short readable text for a card or preprocessing value."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and all(
        isinstance(item, (str, int, float)) for item in value
    ):
        shown = ", ".join(_display_value(item) for item in value[:MAX_LISTED])
        more = f", … ({len(value)} in all)" if len(value) > MAX_LISTED else ""
        return f"{shown}{more}" if value else "(empty)"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# ---------------------------------------------------------------------------------- page


def _footer(
    model: Model, timings: Sequence[tuple[str, float]], total: float, tally: _Budget
) -> Markup:
    """Versions, model, preprocessing, when and how long: the report's provenance."""
    from .. import __version__

    preprocess = model.preprocess
    rows: list[tuple[str, object]] = [
        ("cnnviz", __version__),
        ("model", f"{model.name} ({model.num_classes} classes, {len(model.layers)} layers)"),
        (
            "preprocessing",
            f"{getattr(model, 'preprocess_source', 'given')}: {preprocess.channel_order}, "
            f"scale {preprocess.scale:.4g}, mean {_display_value(list(preprocess.mean))}, "
            f"std {_display_value(list(preprocess.std))}",
        ),
        ("built", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        (
            "timings",
            f"{total:.1f} s in all; "
            + ", ".join(f"{key} {seconds:.1f} s" for key, seconds in timings),
        ),
    ]
    if tally.limit is not None:
        rows.append(
            (
                "embedded data",
                f"{tally.used / 2**20:.2f} MB of a {tally.limit / 2**20:.0f} MB budget",
            )
        )
    body = "".join(
        f'<tr><th scope="row">{escape(key)}</th><td>{escape(value)}</td></tr>'
        for key, value in rows
    )
    return Markup(f'<table class="provenance"><tbody>{body}</tbody></table>')


def _asset(name: str) -> str:
    """The text of a file in ``cnnviz/render/assets`` (package data)."""
    return (resources.files("cnnviz.render") / "assets" / name).read_text(encoding="utf-8")


def _json_for_script(data: object) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` can occur)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _render_page(title: str, built: Sequence[Section], data: object, footer: str) -> str:
    nav = "".join(
        f'<li><a href="#{section.key}">{escape(section.title)}</a></li>' for section in built
    )
    body = "\n".join(
        f'<section id="{section.key}"><h2>{escape(section.title)}</h2>\n{section.html}\n</section>'
        for section in built
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" data-cnnviz-images="pending">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="cnnviz">\n'
        f"<title>{escape(title)}</title>\n<style>{_asset('explorer.css')}</style>\n</head>\n"
        f"<body>\n<header><h1>{escape(title)}</h1></header>\n"
        f'<nav aria-label="sections"><div class="navbar"><ul>{nav}</ul>'
        '<div class="pickers" id="cnnviz-pickers"></div></div></nav>\n'
        f"<main>\n{body}\n</main>\n<footer>{footer}</footer>\n"
        '<div id="cnnviz-hover" role="status" hidden></div>\n'
        f'<script type="application/json" id="cnnviz-data">{_json_for_script(data)}</script>\n'
        f"<script>{_asset('explorer.js')}</script>\n</body>\n</html>\n"
    )
