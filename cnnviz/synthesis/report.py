"""Report sections of the synthesis techniques (registered when :mod:`cnnviz.synthesis` is
imported). Opt-in: they appear only when ``ctx.options["synthesis"]`` is truthy (True, or a
dict of options), so ordinary reports stay fast and need no torch.

- ``class-models`` (300): one class visualization per class (or ``classes``).
- ``inversion`` (310): the first image reconstructed from layers shallow to deep.
- ``deepdream`` (320): the first image dreamed at ``dream_layer`` (default the middle ReLU).
- ``adversarial`` (330): each image fooled into ``fool_target`` (default its second most
  likely class), with the magnified difference.
- ``efros-leung`` (340): a texture grown (Efros & Leung) from a centre crop of the first
  image (``texture_crop``, 32; ``texture_window``, 9); no network, no torch.
- ``gram-texture`` (345): a texture synthesized from a centre crop of the first image by
  matching Gram matrices of the model's features (Gatys et al. 2015; ``texture_crop``, 32,
  grown to twice its side in ``texture_steps``, 15, L-BFGS steps).
- ``style-transfer`` (346): the first image painted in the style of ``style_image`` (a path;
  default the report's second image) by Gatys et al. 2016 at ``style_side`` (64) pixels in
  ``style_steps`` (15) L-BFGS steps; skipped with one image and no ``style_image``.
- ``fast-style`` (350): the images through the style network(s) given as
  ``options["fast-style"]`` (ONNX paths; its own key: shown whenever given, needs no torch).

Options, under ``ctx.options["synthesis"]``: ``classes``, ``steps`` (class models, 40),
``layers`` (inversion), ``dream_layer``, ``fool_target``, ``seed`` (0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..render.images import upscale
from ..render.report import MIN_DISPLAY_SIDE, Markup, Page, ReportContext, Section, escape
from ..render.report import register_section as _register


def _options(ctx: ReportContext) -> dict[str, Any] | None:
    chosen = ctx.options.get("synthesis")
    if not chosen:
        return None
    return dict(chosen) if isinstance(chosen, dict) else {}


def _missing(error: ImportError) -> Markup:
    return Markup(f'<p class="muted">not available: {escape(error)}</p>')


def _picture(page: Page, image: Any, name: str, caption: str) -> Markup:
    shown = upscale(image, min_side=MIN_DISPLAY_SIDE)
    return page.figure(page.image(shown, name, alt=caption), caption)


def _grid(key: str, title: str, figures: list[Markup], text: str | None = None) -> Section:
    """A section of figures in a grid, after a paragraph of ``text`` (escaped) if given."""
    paragraph = f"<p>{escape(text)}</p>" if text else ""
    return Section(key, title, f'{paragraph}<div class="grid">{"".join(figures)}</div>')


def _texture_crop(options: dict[str, Any], picture: Any) -> tuple[Any, int]:
    """The centre square of ``picture`` a texture is grown from (``texture_crop`` pixels,
    32 by default, at most the picture's side), and its side."""
    h, w = picture.shape[:2]
    side = min(int(options.get("texture_crop", 32)), h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return picture[top : top + side, left : left + side], side


@_register("class-models", order=300)
def class_models_section(ctx: ReportContext, page: Page) -> Section | None:
    options = _options(ctx)
    if options is None:
        return None
    from .class_visualization import class_visualization

    classes = options.get("classes") or list(range(ctx.model.num_classes))[:16]
    try:
        result = class_visualization(
            ctx.model, list(classes), steps=options.get("steps", 40), seed=options.get("seed", 0)
        )
    except ImportError as error:
        return Section("class-models", "Class model visualization", _missing(error))
    figures = [
        _picture(page, image, f"class-{i}", f"{label}: p = {p:.3f}")
        for i, (image, label, p) in enumerate(
            zip(result.images, result.labels, result.metrics["probability"])
        )
    ]
    text = (
        "Images that maximize each class's pre-softmax log-odds (Simonyan et al. 2014), "
        "with jitter, blur and an L2 penalty (Yosinski et al. 2015); p is the model's "
        "probability of the class on the picture."
    )
    return _grid("class-models", "Class model visualization", figures, text)


@_register("inversion", order=310)
def inversion_section(ctx: ReportContext, page: Page) -> Section | None:
    options = _options(ctx)
    if options is None or not ctx.names:
        return None
    from .inversion import invert_layers

    try:
        results = invert_layers(ctx.model, ctx.batch[:1], options.get("layers"))
    except ImportError as error:
        return Section("inversion", "Feature inversion", _missing(error))
    figures = [_picture(page, ctx.pixels[0], "original", f"{ctx.names[0]} (original)")]
    figures += [
        _picture(
            page,
            r.image,
            f"invert-{r.options['layer']}",
            f"{r.options['layer']}: {r.metrics['psnr'][0]:.1f} dB",
        )
        for r in results
    ]
    text = (
        "Images whose features at each layer match the original's (Mahendran & "
        "Vedaldi 2015), shallow to deep, with their PSNR against the original."
    )
    return _grid("inversion", "Feature inversion", figures, text)


@_register("deepdream", order=320)
def deepdream_section(ctx: ReportContext, page: Page) -> Section | None:
    options = _options(ctx)
    if options is None or not ctx.names:
        return None
    from .deepdream import dream
    from .inversion import default_layers

    layers = default_layers(ctx.model)
    layer = options.get("dream_layer") or (layers[len(layers) // 2] if layers else None)
    if layer is None:
        return None
    try:
        result = dream(ctx.model, ctx.batch[:1], layer, seed=options.get("seed", 0))
    except ImportError as error:
        return Section("deepdream", "DeepDream", _missing(error))
    m = result.metrics
    caption = f"{layer}: norm {m['norm_before'][0]:.1f} -> {m['norm_after'][0]:.1f}"
    figures = [
        _picture(page, ctx.pixels[0], "original", f"{ctx.names[0]} (original)"),
        _picture(page, result.image, "dream", caption),
    ]
    return _grid("deepdream", "DeepDream", figures)


@_register("adversarial", order=330)
def adversarial_section(ctx: ReportContext, page: Page) -> Section | None:
    options = _options(ctx)
    if options is None or not ctx.names:
        return None
    from .adversarial import fool

    target = options.get("fool_target")
    targets = [
        target if target is not None else int(row.argsort()[-2]) for row in ctx.probabilities
    ]
    try:
        result = fool(ctx.model, ctx.batch, targets, seed=options.get("seed", 0))
    except ImportError as error:
        return Section("adversarial", "Adversarial images", _missing(error))
    m = result.metrics
    rows = []
    for i, name in enumerate(ctx.names):
        rows.append(
            [
                name,
                result.labels[i],
                "yes" if m["success"][i] else "no",
                m["steps"][i],
                f"{m['linf'][i]:.0f}/255",
                f"{m['l2'][i]:.1f}",
                f"{m['probability'][i]:.3f}",
                Markup(
                    _picture(page, result.images[i], f"adversarial-{i}", "adversarial")
                    + _picture(
                        page,
                        result.difference[i],
                        f"difference-{i}",
                        f"difference x{result.options['magnify']:g}",
                    )
                ),
            ]
        )
    table = page.table(
        ["image", "change", "fooled", "steps", "L-inf", "L2", "p(target)", "pictures"], rows
    )
    return Section("adversarial", "Adversarial images", table)


@_register("efros-leung", order=340)
def efros_leung_section(ctx: ReportContext, page: Page) -> Section | None:
    """A small texture grown by Efros & Leung (1999) from a centre crop of the first image
    (options ``texture_crop``, default 32 pixels, and ``texture_window``, default 9); no
    network and no torch involved."""
    options = _options(ctx)
    if options is None or not ctx.names:
        return None
    from .efros_leung import efros_leung

    crop, side = _texture_crop(options, ctx.pixels[0])
    window = min(int(options.get("texture_window", 9)), side - (1 - side % 2))
    if window < 3:
        return None
    result = efros_leung(crop, 2 * side, window, seed=options.get("seed", 0))
    figures = [
        _picture(page, crop, "efros-leung-sample", f"{ctx.names[0]}: centre {side}x{side}"),
        _picture(
            page,
            result.image,
            "efros-leung",
            f"grown to {2 * side}x{2 * side}, window {window} "
            f"({result.pixels_per_second:.0f} pixels/s)",
        ),
    ]
    text = (
        "A texture grown pixel by pixel from the crop's nearest neighbourhoods (Efros & Leung "
        "1999, onion-peel order, epsilon 0.1): the image's local texture, with no network."
    )
    return _grid("efros-leung", "Texture synthesis (Efros-Leung)", figures, text)


@_register("gram-texture", order=345)
def gram_texture_section(ctx: ReportContext, page: Page) -> Section | None:
    """A texture like a centre crop of the first image, synthesized from noise by matching
    the Gram matrices of the model's features (small and few steps: the report stays quick)."""
    options = _options(ctx)
    if options is None or not ctx.names:
        return None
    from .texture import gram_texture

    crop, side = _texture_crop(options, ctx.pixels[0])
    try:
        result = gram_texture(
            ctx.model,
            crop,
            2 * side,
            sample_size=side,
            steps=int(options.get("texture_steps", 15)),
            seed=options.get("seed", 0),
        )
    except ImportError as error:
        return Section("gram-texture", "Texture synthesis (Gram matrices)", _missing(error))
    m = result.metrics
    figures = [
        _picture(page, crop, "gram-sample", f"{ctx.names[0]}: centre {side}x{side}"),
        _picture(
            page,
            result.image,
            "gram-texture",
            f"{2 * side}x{2 * side}, Gram loss x{m['style_loss_ratio']:.2g} in "
            f"{result.steps} steps",
        ),
    ]
    text = (
        "A texture synthesized from noise whose Gram matrices (channel correlations) at "
        f"{', '.join(m['layers'])} match the crop's (Gatys et al. 2015, L-BFGS)."
    )
    return _grid("gram-texture", "Texture synthesis (Gram matrices)", figures, text)


@_register("style-transfer", order=346)
def style_transfer_section(ctx: ReportContext, page: Page) -> Section | None:
    """The first image in the style of ``style_image`` (default the second image), Gatys et
    al. 2016, small and few steps."""
    options = _options(ctx)
    if options is None or not ctx.names:
        return None
    style = options.get("style_image")
    if style is None and len(ctx.pixels) < 2:
        return None
    from cnnviz_core.preprocess import load_image

    from .gatys_transfer import style_transfer

    style_picture = load_image(style) if style is not None else ctx.pixels[1]
    style_name = Path(style).name if isinstance(style, (str, Path)) else ctx.names[1]
    try:
        result = style_transfer(
            ctx.model,
            ctx.pixels[0],
            style_picture,
            size=int(options.get("style_side", 64)),
            steps=int(options.get("style_steps", 15)),
            seed=options.get("seed", 0),
        )
    except ImportError as error:
        return Section("style-transfer", "Style transfer (Gatys)", _missing(error))
    m = result.metrics
    caption = (
        f"style loss {m['style_loss_start']:.3g} -> {m['style_loss_end']:.3g}, content loss "
        f"{m['content_loss_end']:.3g}"
    )
    figures = [
        _picture(page, ctx.pixels[0], "style-content", f"{ctx.names[0]} (content)"),
        _picture(page, _fit_side(style_picture, 256), "style-style", f"{style_name} (style)"),
        _picture(page, result.image, "style-result", caption),
    ]
    text = (
        f"Content at {m['content_layer']}, style (Gram matrices) at "
        f"{', '.join(m['style_layers'])}: Gatys et al. 2016, started from the content image."
    )
    return _grid("style-transfer", "Style transfer (Gatys)", figures, text)


#: longest side a report image is stylized at (a photo of any size stays quick)
STYLE_SIDE = 512


@_register("fast-style", order=350)
def fast_style_section(ctx: ReportContext, page: Page) -> Section | None:
    """The report's images through the feed-forward style network(s) given as
    ``options["fast-style"]`` (an ONNX path or a list of them; onnxruntime only, no torch)."""
    networks = ctx.options.get("fast-style")
    if not networks or not ctx.names:
        return None
    from cnnviz_core.preprocess import load_image

    from .fast_style_network import load_style_network, stylize

    pictures = [_fit_side(load_image(image), STYLE_SIDE) for image in ctx.images]
    figures = []
    if isinstance(networks, (str, Path)):
        networks = [networks]
    for path in networks:
        network = load_style_network(path)
        for i, (name, out) in enumerate(zip(ctx.names, stylize(network, pictures))):
            key = f"style-{network.name}-{i}"
            figures.append(_picture(page, out, key, f"{name}: {network.name}"))
    originals = [
        _picture(page, p, f"style-original-{i}", f"{n} (original)")
        for i, (n, p) in enumerate(zip(ctx.names, pictures))
    ]
    text = (
        "Each image through a feed-forward style network (Johnson et al. 2016): one "
        "onnxruntime forward pass per image."
    )
    return _grid("fast-style", "Fast style transfer", originals + figures, text)


def _fit_side(picture: Any, side: int) -> Any:
    """An (H, W, 3) picture shrunk so its longer side is at most ``side``."""
    import numpy as np
    from PIL import Image

    h, w = picture.shape[:2]
    if max(h, w) <= side:
        return picture
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.LANCZOS))
