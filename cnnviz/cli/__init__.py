"""The ``cnnviz`` command: thin calls into the Python API, one module per family (model
commands, attribution, features, synthesis) sharing :mod:`.common`.

Errors a user can cause print one line (no traceback, library parameters named by their
flags) and exit with status 1; Ctrl-C exits with 130 and leaves no half-written output under
its final name.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import attribution, deploy, features, models, synthesis
from .common import run, version_line

EXAMPLES = """\
examples:
  cnnviz demo --out demo/                       report on the shipped 'shapes' model
  cnnviz layers shapes                          list the layers you can name elsewhere
  cnnviz predict squeezenet.onnx cat.jpg --preset caffe --labels synset_words.txt
  cnnviz report model.onnx a.jpg b.png --out report/
  cnnviz explain shapes star.png --method gradcam --target star --out explain/
  cnnviz export-explainer shapes --method gradcam --out gradcam.onnx   model + Grad-CAM, one ONNX
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnviz`` argument parser with every family's commands."""
    parser = argparse.ArgumentParser(
        prog="cnnviz",
        description="See what a CNN exported to ONNX learned and why it decides as it does.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (models, attribution, features, synthesis, deploy):
        family.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cnnviz`` with ``argv`` (default: the command line); returns the exit status."""
    parser = build_parser()
    return run(parser.parse_args(argv), parser)


__all__ = ["build_parser", "main"]
