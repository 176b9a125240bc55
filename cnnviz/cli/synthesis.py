"""The synthesis commands: ``visualize-class``, ``invert``, ``dream``, ``fool``,
``stylize``, ``train-style``, ``texture`` and ``style``: argument parsing and thin calls
into :mod:`cnnviz.synthesis` (importing this module never imports torch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import load_image
from cnnviz_core.targets import Channel, Neuron

from ..render.images import save_png
from ..synthesis import (
    class_visualization,
    dream,
    efros_leung,
    fool,
    gram_texture,
    invert_layers,
    load_style_network,
    style_transfer,
    stylize,
)
from .common import (
    keep_partial_argument,
    model_arguments,
    open_model,
    output_folder,
    partial_suffix,
    safe_name,
    save_enlarged,
    seed,
    steps_progress,
    with_model,
)


def _start(value: str) -> Any:
    return value if value in ("zeros", "noise") else Path(value)


def _done(result: Any) -> None:
    """After a partial result was written (``--keep-partial``): exit 130 all the same."""
    if result.interrupted:
        print("interrupted: wrote the best result so far as *-partial files", file=sys.stderr)
        raise KeyboardInterrupt


def _class_targets(args: argparse.Namespace, model: Model) -> list[Any]:
    """``--target`` classes (``all``: every class), else ``--image``'s predicted class;
    neither is an error that asks for one (never every class silently)."""
    if args.target == ["all"]:
        return list(range(model.num_classes))
    if args.target:
        return list(args.target)
    if args.image is not None:
        (top,) = model.predict([Path(args.image)], k=1)
        print(f"target: {top[0].label} (predicted for {args.image})", file=sys.stderr)
        return [top[0].index]
    raise InputError(
        "target= is missing: give a class (--target CLASS, repeatable; --target all for "
        "every class, slow) or --image FILE to visualize the class predicted for it"
    )


def cmd_visualize_class(args: argparse.Namespace, model: Model) -> None:
    channels = args.channel or [0]
    if args.layer is not None:
        if args.y is not None and args.x is not None:
            targets: list[Any] = [Neuron(args.layer, c, args.y, args.x) for c in channels]
        else:
            targets = [Channel(args.layer, c) for c in channels]
    else:
        targets = _class_targets(args, model)
    result = class_visualization(
        model,
        targets,
        steps=args.steps,
        octaves=args.octaves,
        start=_start(args.start),
        seed=args.seed,
        progress=steps_progress("visualize-class"),
    )
    suffix = partial_suffix(args, result.interrupted)
    for i, label in enumerate(result.labels):
        path = save_enlarged(result.images[i], args.out / f"class-{i}{suffix}.png")
        extra = ""
        if "probability" in result.metrics:
            extra = f", probability {result.metrics['probability'][i]:.3f}"
        print(f"{label}: objective {result.metrics['objective'][i]:.3g}{extra} -> {path}")
    _done(result)


def cmd_invert(args: argparse.Namespace, model: Model) -> None:
    results = invert_layers(
        model,
        args.image,
        args.layer or None,
        steps=args.steps,
        optimizer=args.optimizer,
        tv=args.tv,
        seed=args.seed,
        progress=steps_progress("invert"),
    )
    for r in results:
        suffix = partial_suffix(args, r.interrupted)
        name = safe_name(r.options["layer"])
        path = save_enlarged(r.image, args.out / f"invert-{name}{suffix}.png")
        print(
            f"{r.options['layer']}: PSNR {r.metrics['psnr'][0]:.2f} dB, feature error "
            f"{r.metrics['feature_error'][0]:.3f} -> {path}"
        )
        _done(r)


def cmd_dream(args: argparse.Namespace, model: Model) -> None:
    result = dream(
        model,
        args.image,
        args.layer,
        steps=args.steps,
        octaves=args.octaves,
        lr=args.lr,
        seed=args.seed,
        progress=steps_progress("dream"),
    )
    suffix = partial_suffix(args, result.interrupted)
    path = save_enlarged(result.image, args.out / f"dream-{safe_name(args.layer)}{suffix}.png")
    m = result.metrics
    print(
        f"{args.layer}: activation norm {m['norm_before'][0]:.2f} -> "
        f"{m['norm_after'][0]:.2f} -> {path}"
    )
    _done(result)


def cmd_fool(args: argparse.Namespace, model: Model) -> None:
    result = fool(
        model,
        args.image,
        args.target,
        epsilon=args.epsilon,
        steps=args.steps,
        random_start=args.random_start,
        magnify=args.magnify,
        seed=args.seed,
        progress=steps_progress("fool"),
    )
    m = result.metrics
    stem = safe_name(Path(args.image).stem) + partial_suffix(args, result.interrupted)
    # the exact pixels are what fools the model; an enlarged copy is resampled and may not
    path = save_png(result.image, args.out / f"{stem}-adversarial.png")
    view = save_enlarged(result.image, args.out / f"{stem}-adversarial-enlarged.png")
    diff = save_enlarged(result.difference[0], args.out / f"{stem}-difference.png")
    print(
        f"{result.labels[0]}: {'fooled' if m['success'][0] else 'NOT fooled'} after "
        f"{m['steps'][0]} steps, L-inf {m['linf'][0]:.0f}/255, L2 {m['l2'][0]:.1f}, "
        f"p(target) {m['probability'][0]:.3f}"
    )
    print(
        f"adversarial image (exact model-size pixels, the one that fools the model) -> {path}; "
        f"enlarged for viewing only -> {view}; difference x{args.magnify:g} -> {diff}"
    )
    _done(result)


def cmd_stylize(args: argparse.Namespace) -> None:
    output_folder(args)
    network = load_style_network(
        args.network,
        channel_order=args.channel_order,
        value_range=args.value_range,
        device=args.device,
    )
    outputs = stylize(network, [Path(p) for p in args.image], keep_size=not args.network_size)
    for image, picture in zip(args.image, outputs):
        path = save_png(picture, args.out / f"{Path(image).stem}-{Path(args.network).stem}.png")
        print(f"{image} -> {path}")


def cmd_train_style(args: argparse.Namespace) -> None:
    """``cnnviz train-style``: train a fast style network and write it as ONNX."""
    from ..synthesis.train_fast_style import train_style  # not public in cnnviz.synthesis

    network = train_style(
        open_model(args),
        Path(args.style),
        [Path(c) for c in args.content] if args.content else None,
        size=args.size,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        style_weight=args.style_weight,
        content_weight=args.content_weight,
        tv_weight=args.tv_weight,
        width=args.width,
        blocks=args.blocks,
        style_layers=args.style_layer or None,
        content_layer=args.content_layer,
        seed=args.seed,
        progress=steps_progress("train-style"),
    )
    out = args.out
    if partial_suffix(args, network.interrupted):
        out = out.with_name(f"{out.stem}-partial{out.suffix}")
    network.save(out)
    last = network.card["losses"]["last"]
    parts = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
    print(f"{network.steps} steps ({parts}) -> {out}")
    if network.interrupted:
        print(
            f"interrupted: saved the network after {network.steps} of {args.steps} steps as {out}",
            file=sys.stderr,
        )
        raise KeyboardInterrupt


def cmd_texture(args: argparse.Namespace) -> None:
    """``cnnviz texture``: Efros-Leung (no model) or Gram-matrix synthesis (needs --model)."""
    output_folder(args)
    stem = safe_name(Path(args.sample).stem)
    size = (args.size[0], args.size[1]) if args.size else None
    if args.method == "efros-leung":
        _efros_leung_texture(args, stem, size)
    else:
        _gram_texture(args, stem, size)


def _efros_leung_texture(args: argparse.Namespace, stem: str, size: tuple[int, int] | None) -> None:
    sample = load_image(Path(args.sample))
    if args.crop:  # the search costs O(sample area) per pixel: grow from a small crop
        h, w = sample.shape[:2]
        side_h, side_w = min(args.crop, h), min(args.crop, w)
        top, left = (h - side_h) // 2, (w - side_w) // 2
        sample = sample[top : top + side_h, left : left + side_w]
    result = efros_leung(
        sample,
        size or (128, 128),
        window=args.window,
        order=args.order,
        epsilon=args.epsilon,
        seed=args.seed,
        progress=steps_progress("texture"),
    )
    suffix = partial_suffix(args, result.interrupted)
    path = save_png(result.image, args.out / f"{stem}-efros-leung-{args.order}{suffix}.png")
    print(
        f"efros-leung ({args.order}, window {args.window}): {result.pixels} pixels in "
        f"{result.seconds:.2f} s ({result.pixels_per_second:.0f} pixels/s), mean match "
        f"distance {float(np.nanmean(result.distances)):.4g} -> {path}"
    )
    _done(result)


def _gram_texture(args: argparse.Namespace, stem: str, size: tuple[int, int] | None) -> None:
    result = gram_texture(
        open_model(args),
        Path(args.sample),
        size,
        layers=args.layer or None,
        sample_size=args.sample_size,
        optimizer=args.optimizer,
        steps=args.steps,
        seed=args.seed,
        progress=steps_progress("texture"),
    )
    suffix = partial_suffix(args, result.interrupted)
    path = save_png(result.image, args.out / f"{stem}-gram{suffix}.png")
    m = result.metrics
    print(
        f"gram texture ({', '.join(m['layers'])}): Gram loss {m['style_loss_start']:.4g} -> "
        f"{m['style_loss_end']:.4g} (x{m['style_loss_ratio']:.2g}) -> {path}"
    )
    _done(result)


def cmd_style(args: argparse.Namespace, model: Model) -> None:
    """``cnnviz style``: Gatys style transfer of CONTENT in the style of STYLE."""
    result = style_transfer(
        model,
        Path(args.content),
        Path(args.style),
        content_layer=args.content_layer,
        style_layers=args.style_layer or None,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        init=args.init,
        optimizer=args.optimizer,
        steps=args.steps,
        size=args.size,
        style_size=args.style_size,
        seed=args.seed,
        progress=steps_progress("style"),
        device=args.device,
    )
    suffix = partial_suffix(args, result.interrupted)
    path = save_png(
        result.image,
        args.out / safe_name(f"{Path(args.content).stem}-{Path(args.style).stem}{suffix}.png"),
    )
    m = result.metrics
    print(
        f"content loss {m['content_loss_start']:.4g} -> {m['content_loss_end']:.4g}, style loss "
        f"{m['style_loss_start']:.4g} -> {m['style_loss_end']:.4g} -> {path}"
    )
    _done(result)


def add_commands(commands: Any) -> None:
    """Add the synthesis commands to the ``cnnviz`` parser's subparsers."""

    def common(p: argparse.ArgumentParser, steps: int) -> None:
        model_arguments(p)
        p.add_argument("--steps", type=int, default=steps, help=f"steps ({steps})")
        p.add_argument("--seed", type=seed, default=0, help="random seed (0)")
        p.add_argument("--out", type=Path, required=True, help="output folder")
        keep_partial_argument(p)

    p = commands.add_parser("visualize-class", help="images a class (or a channel) likes most")
    common(p, 40)
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="CLASS",
        help="class index or label (repeatable; 'all': every class); default: the class "
        "predicted for --image",
    )
    p.add_argument("--image", metavar="FILE", help="visualize the class predicted for this image")
    p.add_argument("--layer", metavar="NAME", help="maximize channels of this layer instead")
    p.add_argument(
        "--channel",
        type=int,
        action="append",
        default=[],
        help="channel of --layer (repeatable; default 0)",
    )
    p.add_argument("--y", type=int, help="with --x: one neuron of the channel")
    p.add_argument("--x", type=int, help="with --y: one neuron of the channel")
    p.add_argument("--octaves", type=int, default=1, help="coarse-to-fine octaves (1)")
    p.add_argument("--start", default="zeros", help="zeros, noise or an image file")
    p.set_defaults(run=with_model(cmd_visualize_class))

    p = commands.add_parser("invert", help="reconstruct an image from a layer's features")
    common(p, 60)
    p.add_argument("image", help="image file")
    p.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME",
        help="layer (repeatable; default every ReLU, shallow to deep)",
    )
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    p.add_argument("--tv", type=float, default=0.01, help="total-variation weight (0.01)")
    p.set_defaults(run=with_model(cmd_invert))

    p = commands.add_parser("dream", help="DeepDream: amplify what a layer sees")
    common(p, 10)
    p.add_argument("image", help="image file")
    p.add_argument("--layer", required=True, metavar="NAME", help="layer to amplify")
    p.add_argument("--octaves", type=int, default=3, help="octaves (3)")
    p.add_argument("--lr", type=float, default=0.01, help="step, fraction of range (0.01)")
    p.set_defaults(run=with_model(cmd_dream))

    p = commands.add_parser("fool", help="adversarial image predicted as a chosen class")
    common(p, 100)
    p.add_argument("image", help="image file")
    p.add_argument("--target", required=True, metavar="CLASS", help="class index or label")
    p.add_argument("--epsilon", type=float, default=8.0, help="L-inf budget, 0-255 levels (8)")
    p.add_argument("--random-start", action="store_true", help="PGD random start")
    p.add_argument("--magnify", type=float, default=10.0, help="difference picture factor")
    p.set_defaults(run=with_model(cmd_fool))

    p = commands.add_parser(
        "stylize",
        help="stylize images with a feed-forward style network (ONNX)",
        description="Run a fast style network (from train-style, or an existing one such as "
        "fns_candy.onnx) on each image: one onnxruntime forward pass per image; writes "
        "OUT/<image>-<network>.png.",
    )
    p.add_argument("network", help="style network .onnx file")
    p.add_argument("image", nargs="+", help="image files")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--channel-order",
        choices=["RGB", "BGR"],
        help="override the network's channel order (default: its card, else read from the graph)",
    )
    p.add_argument(
        "--value-range",
        type=float,
        choices=[1.0, 255.0],
        help="override the network's pixel range: 1 (0-1) or 255 (0-255)",
    )
    p.add_argument(
        "--network-size",
        action="store_true",
        help="keep a fixed-size network's output size (default: resize back to the image's)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(run=cmd_stylize)

    p = commands.add_parser(
        "train-style",
        help="train a fast feed-forward style network (Johnson et al.) and save it as ONNX",
        description="Train a small transformation network to paint images in the style of "
        "STYLE with perceptual losses of --model (the loss network: e.g. SqueezeNet 1.1 with "
        "--preset caffe; default the shipped shapes model), on --content photos (default "
        "procedural shapes images). Writes --out (ONNX, RGB 0-1, any size); run it with "
        "`cnnviz stylize` or any onnxruntime.",
    )
    p.add_argument("style", help="style image")
    p.add_argument("--content", nargs="+", metavar="PATH", help="content images or a folder")
    p.add_argument("--model", default="shapes", help="loss network .onnx or shipped name")
    p.add_argument("--preset", help="preprocessing convention of --model (e.g. caffe)")
    p.add_argument("--device", default="cpu", help="loss network device: cpu (default)")
    p.add_argument("--out", type=Path, required=True, help="output .onnx file")
    p.add_argument("--size", type=int, default=128, help="training crop side (128)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps (300)")
    p.add_argument("--batch", type=int, default=4, help="crops per step (4)")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (3e-3)")
    p.add_argument("--style-weight", type=float, default=5.0, help="style loss weight (5)")
    p.add_argument("--content-weight", type=float, default=1.0, help="content weight (1)")
    p.add_argument("--tv-weight", type=float, default=10.0, help="total variation weight (10)")
    p.add_argument("--width", type=int, default=16, help="network width (16)")
    p.add_argument("--blocks", type=int, default=3, help="residual blocks (3)")
    p.add_argument("--style-layer", action="append", default=[], metavar="NAME")
    p.add_argument("--content-layer", metavar="NAME")
    p.add_argument("--seed", type=seed, default=0, help="random seed (0)")
    keep_partial_argument(p)
    p.set_defaults(run=cmd_train_style)

    p = commands.add_parser(
        "texture",
        help="grow a texture like a sample (Efros-Leung, or Gram matrices of a network)",
        description="Texture synthesis from SAMPLE: efros-leung grows it pixel by pixel from "
        "the sample's nearest neighbourhoods (no model needed); gram matches the Gram matrices "
        "of --model's features (Gatys et al.). Writes OUT/<sample>-<method>[-<order>].png.",
    )
    p.add_argument("sample", help="texture sample image")
    p.add_argument("--method", choices=["efros-leung", "gram"], default="efros-leung")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="output size")
    p.add_argument("--window", type=int, default=11, help="efros-leung: odd window side (11)")
    p.add_argument("--order", choices=["onion", "scanline"], default="onion", help="efros-leung")
    p.add_argument("--epsilon", type=float, default=0.1, help="efros-leung: match slack (0.1)")
    p.add_argument(
        "--crop",
        type=int,
        metavar="SIDE",
        help="efros-leung: grow from the sample's centre SIDE x SIDE crop (the search time "
        "grows with the sample's area; the paper's samples are about 64 x 64)",
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed (0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="shapes", help="gram: loss network .onnx or shipped name")
    p.add_argument("--preset", help="gram: preprocessing convention of --model")
    p.add_argument("--device", default="cpu", help="gram: cpu (default) or cuda")
    p.add_argument("--steps", type=int, default=100, help="gram: L-BFGS/Adam steps (100)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="gram")
    p.add_argument(
        "--layer", action="append", default=[], metavar="NAME", help="gram: style layer (repeat)"
    )
    p.add_argument("--sample-size", type=int, help="gram: sample's longer side (model input)")
    keep_partial_argument(p)
    p.set_defaults(run=cmd_texture)

    p = commands.add_parser(
        "style",
        help="neural style transfer (Gatys et al.): CONTENT painted in the style of STYLE",
        description="Optimize a picture whose --model features match CONTENT's at one layer "
        "and whose Gram matrices match STYLE's at several (loss network: e.g. SqueezeNet 1.1 "
        "with --preset caffe; default the shipped shapes model). Writes "
        "OUT/<content>-<style>.png.",
    )
    p.add_argument("content", help="content image")
    p.add_argument("style", help="style image")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="shapes", help="loss network .onnx or shipped name")
    p.add_argument("--preset", help="preprocessing convention of --model (e.g. caffe)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--size", type=int, help="output's longer side (default: the model's input)")
    p.add_argument("--style-size", type=int, help="style image's longer side (the output's)")
    p.add_argument("--steps", type=int, default=100, help="L-BFGS/Adam steps (100)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    p.add_argument("--init", choices=["content", "noise"], default="content", help="start")
    p.add_argument("--content-weight", type=float, default=1.0, help="content weight (1)")
    p.add_argument("--style-weight", type=float, default=1e3, help="style weight (1000)")
    p.add_argument("--tv-weight", type=float, default=1.0, help="total variation weight (1)")
    p.add_argument("--content-layer", metavar="NAME", help="default: see cnnviz.synthesis.style")
    p.add_argument("--style-layer", action="append", default=[], metavar="NAME", help="repeat")
    p.add_argument("--seed", type=seed, default=0, help="random seed (0)")
    keep_partial_argument(p)
    p.set_defaults(run=with_model(cmd_style))


__all__ = ["add_commands"]
