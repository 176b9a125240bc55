"""Data sets and the shipped default model: the procedural shapes data set and its small CNN.

Importing this package never imports torch (training lives in ``cnnviz.data.train_shapes``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnviz.data.shapes import CLASSES, ShapesBatch, iter_shapes, make_shapes

__all__ = [
    "CLASSES",
    "ShapesBatch",
    "default_model_card",
    "default_model_path",
    "iter_shapes",
    "make_shapes",
]

_MODELS = Path(__file__).parent / "models"


def default_model_path() -> Path:
    """Path of the shipped shapes CNN (``models/shapes.onnx``, trained by ``train_shapes``)."""
    return _MODELS / "shapes.onnx"


def default_model_card() -> dict[str, Any]:
    """The shipped model's card (``models/shapes.json``): class names, preprocessing,
    held-out accuracy and how it was trained."""
    card: dict[str, Any] = json.loads((_MODELS / "shapes.json").read_text())
    return card


# default_model() -> cnnviz_core Model wrapping default_model_path() goes here (engine side).
