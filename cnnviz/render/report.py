"""The HTML report: one self-contained ``report.html`` with its PNGs beside it in ``images/``.

A report is a list of sections. Each section comes from a builder registered with
:func:`register_section`; :func:`build_report` runs the builders in order, each reading a
:class:`ReportContext` (the model, the images, their batch, the options) and writing its
pictures through a :class:`Page`. A technique adds its section from its own module::

    from cnnviz.render.report import Page, ReportContext, Section, register_section

    @register_section("gradcam", order=100)
    def gradcam_section(ctx: ReportContext, page: Page) -> Section | None:
        maps = gradcam(ctx.model, ctx.batch, **ctx.options.get("gradcam", {}))
        figures = [page.figure(page.image(m, f"{i}", alt=f"Grad-CAM of {n}"), n)
                   for i, (m, n) in enumerate(zip(maps, ctx.names))]
        return Section("gradcam", "Grad-CAM", "".join(figures))

The section is registered when that module is imported, so whatever builds the report (the
CLI, ``cnnviz/__init__.py``) imports it explicitly. Built-in orders: ``model`` 10, ``layers``
20, ``predictions`` 30; techniques use 100 and up. A builder returns None to leave its
section out (e.g. no images). Options for one section live under its key in
``ctx.options``. Everything a builder puts in ``Section.html`` must already be escaped:
:func:`escape` does it, and the :class:`Page` helpers escape all text they are given.

Atomicity: pictures are staged in a hidden folder inside the output folder; only when every
section is built are they moved into ``images/<section key>/`` and ``report.html`` is
written, last, by an atomic rename. An interrupted or failed run leaves no new
``report.html`` and no staging folder (an older complete report stays).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_core import Layer, Model
from cnnviz_core.preprocess import ImageLike, as_image_list

from ..output import PathLike, atomic_write_text
from .images import save_png, upscale

#: folder (inside the output folder) that holds the report's pictures
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

_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")


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


class Page:
    """Helpers for section builders: pictures staged as PNG files, tables, figures.

    Every helper escapes the text it is given (except :class:`Markup`) and returns Markup.
    """

    def __init__(self, staging: Path, section_key: str):
        self._staging = staging
        self._folder = section_key
        #: staged files, relative to the staging (and final images) folder
        self.files: list[str] = []

    def image(
        self,
        array: np.ndarray,
        name: str,
        alt: str,
        width: int | None = None,
        *,
        pixelated: bool = False,
    ) -> Markup:
        """Stage ``array`` as a PNG and return its ``<img>`` tag (relative ``src``).

        Args:
            array: (H, W) or (H, W, C) image, uint8 or float in [0, 1].
            name: file name stem, unique within the section (made safe and unique).
            alt: text alternative.
            width: display width in CSS pixels (height keeps the aspect); None: natural size.
            pixelated: show pixels as crisp squares when the browser scales the picture
                (always on when ``width`` is larger than the picture).
        """
        natural_height, natural_width = np.shape(array)[:2]
        file_name = self._unique_file_name(name)
        save_png(array, self._staging / file_name)
        self.files.append(file_name)
        shown_width = width or natural_width
        shown_height = max(1, round(natural_height * shown_width / natural_width))
        css_class = ' class="pixelated"' if pixelated or shown_width > natural_width else ""
        return Markup(
            f'<img src="{IMAGES_DIR}/{file_name}" alt="{escape(alt)}" '
            f'width="{shown_width}" height="{shown_height}"{css_class}>'
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

    def _unique_file_name(self, name: str) -> str:
        """``<section key>/<name made safe>.png``, numbered when the name is taken."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:80] or "image"
        candidate, number = f"{self._folder}/{safe}.png", 1
        while candidate in self.files:
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
) -> Path:
    """Write ``out_dir/report.html`` (and its pictures in ``out_dir/images/``).

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

    Returns:
        Path of the written ``report.html``.
    """
    inputs = as_image_list(images)
    if names is None:
        names = [_default_name(image, index) for index, image in enumerate(inputs)]
    if len(names) != len(inputs):
        raise ValueError(f"{len(names)} names given for {len(inputs)} images")
    chosen = _chosen_sections(sections)
    batch = model.prepare(inputs) if inputs else np.zeros((0, *model.input_shape), np.float32)
    ctx = ReportContext(model, inputs, list(names), batch, dict(options or {}), top_k)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        built, staged = [], []
        for registered in chosen:
            page = Page(staging, registered.key)
            section = registered.build(ctx, page)
            staged += page.files
            if section is None:
                continue
            if section.key != registered.key:
                raise ValueError(
                    f"builder of section {registered.key!r} returned key {section.key!r}"
                )
            built.append(section)
        document = _render_page(title or f"cnnviz report: {model.name}", built)
        for file_name in staged:
            target = out / IMAGES_DIR / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / file_name, target)
        return atomic_write_text(out / REPORT_FILE, document)
    finally:
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


def _render_page(title: str, built: Sequence[Section]) -> str:
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
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(title)}</h1></header>\n"
        f'<nav aria-label="sections"><ul>{nav}</ul></nav>\n'
        f"<main>\n{body}\n</main>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


_CSS = """
:root { --text: #1f2430; --muted: #5d6675; --accent: #2f6fde; --line: #dde2ea;
        --zebra: #f4f6f9; --card: #fbfcfd; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--text); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
h1 { font-size: 1.6em; margin: 24px 0 8px; }
h2 { font-size: 1.3em; margin: 28px 0 12px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 8px; }
nav { position: sticky; top: 0; z-index: 10; background: rgba(255, 255, 255, 0.96);
      border-bottom: 1px solid var(--line); }
nav ul { max-width: 1100px; margin: 0 auto; padding: 8px 20px; list-style: none;
         display: flex; flex-wrap: wrap; gap: 4px 20px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { scroll-margin-top: 48px; }
.muted { color: var(--muted); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       font-size: 0.9em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; vertical-align: top; padding: 4px 10px;
         border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
thead th { border-bottom: 2px solid var(--line); white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--zebra); }
table.definitions th { width: 30%; font-weight: 600; }
img { max-width: 100%; height: auto; }
img.pixelated { image-rendering: pixelated; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 0.9em; margin-top: 4px;
             overflow-wrap: anywhere; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr));
         gap: 16px; }
.card { display: flex; gap: 16px; align-items: flex-start; padding: 12px;
        border: 1px solid var(--line); border-radius: 8px; background: var(--card); }
.card figure { flex: none; }
.card .table-wrap { flex: 1; }
table.topk td:nth-child(2) { width: 45%; }
table.topk td:nth-child(3) { text-align: right; white-space: nowrap; }
table.topk td:first-child { overflow-wrap: break-word; word-break: normal; hyphens: none;
                            min-width: 8em; }
.bar { height: 0.8em; margin-top: 0.35em; border-radius: 3px; background: var(--line); }
.bar > span { display: block; height: 100%; border-radius: 3px; background: var(--accent); }
"""

# Sets <html data-cnnviz-images> to "loaded" once every picture has loaded, or "broken:N";
# tests read it with `chromium --dump-dom`.
_SCRIPT = """
(function () {
  var root = document.documentElement;
  var images = Array.prototype.slice.call(document.images);
  var pending = images.length;
  function finish() {
    var broken = images.filter(function (img) { return !(img.naturalWidth > 0); }).length;
    root.dataset.cnnvizImages = broken ? "broken:" + broken : "loaded";
  }
  function settle() { pending -= 1; if (pending === 0) { finish(); } }
  if (pending === 0) { finish(); return; }
  images.forEach(function (img) {
    if (img.complete) { settle(); return; }
    img.addEventListener("load", settle);
    img.addEventListener("error", settle);
  });
})();
"""
