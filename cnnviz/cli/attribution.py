"""The attribution commands: ``explain`` (one technique of the method registry per run) and
``sanity`` (Adebayo et al.'s model parameter randomization test of one technique)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnviz_core import Model

from ..attribution import SPECS, explain
from ..attribution.methods import parameters, taking
from ..attribution.sanity import model_randomization
from ..output import atomic_write_text
from ..render.images import save_png
from ..render.report import build_report
from .common import (
    count_progress,
    model_arguments,
    open_model,
    output_folder,
    safe_name,
    seed,
    with_model,
)


def cmd_explain(args: argparse.Namespace) -> None:
    output_folder(args)
    model = open_model(args)
    tuning = {name: getattr(args, name) for name in parameters()}
    result = explain(
        model,
        args.images,
        args.method,
        args.target,
        layer=args.layer,
        precision=args.precision,
        **tuning,
    )
    for i, image in enumerate(args.images):
        name = safe_name(f"{Path(image).stem}-{args.method}")
        path = save_png(result.render(i), args.out / f"{name}.png")
        print(f"{image}: {result.targets[i].label} -> {path}")
    for key, value in result.metrics.items():
        print(f"{key}: {value}")
    options = {"methods": [args.method], "results": {args.method: result}, "layer": args.layer}
    path = build_report(
        model,
        args.images,
        args.out,
        sections=["model", "predictions", "attribution"],
        options={"attribution": options},
        title=f"cnnviz explain: {model.name}, {args.method}",
    )
    print(f"report written to {path}")


def cmd_sanity(args: argparse.Namespace, model: Model) -> None:
    result = model_randomization(
        model,
        args.images,
        args.method,
        target=args.target,
        cascading=not args.independent,
        seed=args.seed,
        layers=args.layers,
        options={"layer": args.layer} if args.layer else None,
        progress=count_progress("randomized models"),
    )
    mode = "cascading" if result.cascading else "independent"
    stem = safe_name(f"{Path(args.images[0]).stem}-{args.method}-sanity-{mode}")
    strip = save_png(result.strip(), args.out / f"{stem}.png")
    figures = {**result.figures(), "model": model.name, "images": list(args.images)}
    table = atomic_write_text(args.out / f"{stem}.json", json.dumps(figures, indent=1) + "\n")
    print(f"{'randomized (top first)':<24} {'spearman':>9} {'ssim':>7}")
    for row in figures["layers"]:
        print(f"{row['layer']:<24} {row['spearman']:>9.3f} {row['ssim']:>7.3f}")
    verdict = "PASS (the maps decorrelate)" if result.passed else "FAIL (the maps stay)"
    step = result.decisive_step
    print(
        f"{args.method}, {mode}: {verdict}: Spearman {result.spearman[step].mean():.3f} "
        f"at {result.layers[step]} (threshold < {result.threshold})"
    )
    print(f"strip written to {strip}, figures to {table}")


def _taking(option: str) -> str:
    """The methods that take an option or parameter of :func:`~cnnviz.attribution.explain`."""
    return ", ".join(taking(option))


def _parameter_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per tuning parameter of the registered methods (their
    :attr:`~cnnviz.attribution.MethodSpec.parameters`): a new method's parameters appear
    without code here; :func:`~cnnviz.attribution.explain` rejects one the chosen method does
    not take, naming the flag."""
    group = parser.add_argument_group("method parameters (default: the method's own)")
    for parameter in parameters().values():
        group.add_argument(
            "--" + parameter.name.replace("_", "-"),
            dest=parameter.name,
            type=parameter.type,
            help="; ".join(
                f"{spec.name}: {own.help}"
                for spec in SPECS
                for own in spec.parameters
                if own.name == parameter.name
            ),
        )


def add_commands(commands: Any) -> None:
    """Add the attribution commands to the ``cnnviz`` parser's subparsers."""
    p = commands.add_parser(
        "explain",
        help="attribution maps: which pixels drive a class (saliency, Grad-CAM...)",
        description="Explain each image's prediction (or --target) with one technique: "
        "writes OUT/<image>-<method>.png and OUT/report.html.",
    )
    model_arguments(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--method",
        choices=[spec.name for spec in SPECS],
        default="gradcam",
        help="technique (gradcam)",
    )
    p.add_argument(
        "--target", metavar="CLASS", help="class index or label (default: the predicted class)"
    )
    p.add_argument(
        "--layer",
        metavar="NAME",
        help=f"layer for {_taking('layer')} (default: last conv)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help=f"{_taking('precision')}: run the occluded forwards in bf16 (approximate; "
        "needs torch)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _parameter_arguments(p)
    p.set_defaults(run=cmd_explain)
    add_sanity_command(commands)


def add_sanity_command(commands: Any) -> None:
    """Add ``sanity`` (the model parameter randomization test) to the subparsers."""
    p = commands.add_parser(
        "sanity",
        help="sanity check of a technique: do its maps change when the weights are destroyed?",
        description="Adebayo et al. 2018: re-randomize the Conv/Gemm weights from the top "
        "layer down (cascading, or one layer at a time with --independent), recompute the "
        "maps for the same target, and report their Spearman rank correlation and SSIM "
        "with the original; a method passes when its maps decorrelate. Writes "
        "OUT/<image>-<method>-sanity-<mode>.png (input, original map, one map per step) "
        "and .json (the figures).",
    )
    model_arguments(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument(
        "--method", choices=[spec.name for spec in SPECS], required=True, help="technique"
    )
    p.add_argument(
        "--independent",
        action="store_true",
        help="randomize one layer at a time (default: cascading from the top)",
    )
    p.add_argument(
        "--target", metavar="CLASS", help="class index or label (default: the predicted class)"
    )
    p.add_argument(
        "--randomize",
        dest="layers",
        nargs="+",
        metavar="NAME",
        help="the Conv/Gemm layers to randomize (default: all)",
    )
    p.add_argument("--layer", metavar="NAME", help=f"layer for {_taking('layer')}")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random weights (0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=with_model(cmd_sanity))


__all__ = ["add_commands", "add_sanity_command", "cmd_explain", "cmd_sanity"]
