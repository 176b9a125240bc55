"""The deployment command: ``export-explainer`` writes one technique, compiled with the model
into one standalone ONNX graph (:func:`cnnviz.export_explainer`), that onnxruntime, OpenVINO
or any ONNX runtime runs without cnnviz."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import onnx

from cnnviz_core import InputError, Model

from ..attribution import SPECS
from ..attribution.deploy_report import explainer_facts
from ..attribution.export import export_explainer
from ..attribution.methods import parameters
from ..output import atomic_write_bytes
from .common import method_parameter_arguments, model_arguments, open_model, output_folder


def export_target(text: str) -> str | int:
    """The ``target=`` of :func:`cnnviz.export_explainer` for ``--target``: ``predicted``,
    ``input``, a class index (``3``) or a class label (``star``)."""
    word = text.strip()
    if word.lstrip("-").isdigit():
        return int(word)
    return word


def export(model: Model, args: argparse.Namespace) -> onnx.ModelProto:
    """The explainer the command's arguments ask for."""
    tuning = {name: getattr(args, name) for name in parameters()}
    options = {name: value for name, value in tuning.items() if value is not None}
    return export_explainer(
        model, args.method, layer=args.layer, target=export_target(args.target), **options
    )


def cmd_export_explainer(args: argparse.Namespace) -> None:
    if args.out.suffix != ".onnx":
        raise InputError(f"out= {str(args.out)!r} must name an .onnx file")
    output_folder(args)
    model = open_model(args)
    proto = export(model, args)
    data = proto.SerializeToString()
    path = atomic_write_bytes(args.out, data)
    print(f"explainer written to {path}")
    for name, value in explainer_facts(proto, len(data)):
        print(f"  {name}: {value}")


def add_commands(commands: Any) -> None:
    """Add ``export-explainer`` to the ``cnnviz`` parser's subparsers."""
    p = commands.add_parser(
        "export-explainer",
        help="compile a gradient explanation and the model into one standalone ONNX file",
        description="Write the model and one explanation technique as one ONNX graph: inputs "
        "the image pixels (RGB 0-255 at the model's size, when the model card or --preset "
        "defines the preprocessing; else the model's own input) and, with --target input, "
        "the class per image; outputs the model's outputs, 'map' (N, H, W) and 'target'. "
        "onnxruntime, OpenVINO or any ONNX runtime runs it without cnnviz. SmoothGrad's "
        "--sigma is a number here (default 0.15): the graph bakes one noise for every "
        "image, so 'auto' (explain's per-image choice) cannot be compiled.",
    )
    model_arguments(p)
    p.add_argument(
        "--method",
        choices=[spec.name for spec in SPECS],
        required=True,
        metavar="METHOD",
        help="the technique: a gradient or CAM one (saliency, guided, deconvnet, cam, gradcam, "
        "guided-gradcam, gradcam++, xgradcam, layercam, hirescam, smoothgrad, ig); "
        "perturbation methods do not compile",
    )
    p.add_argument(
        "--layer", metavar="NAME", help="layer of the CAM family (default: the method's own)"
    )
    p.add_argument(
        "--target",
        default="predicted",
        metavar="predicted|input|CLASS",
        help="the class explained: predicted (default, computed in the graph), input (an "
        "int64 'target' input per image), or a class index or label baked in",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="output file")
    method_parameter_arguments(p)
    p.set_defaults(run=cmd_export_explainer)


__all__ = ["add_commands", "cmd_export_explainer", "export_target"]
