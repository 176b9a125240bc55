"""The attribution command: ``explain`` (one technique of the method registry per run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..attribution import SPECS, explain
from ..attribution.methods import parameters, taking
from ..render.images import save_png
from ..render.report import build_report
from .common import model_arguments, open_model, output_folder, safe_name


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


__all__ = ["add_commands", "cmd_explain"]
