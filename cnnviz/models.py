"""Opening models by path or by the name of a model shipped with cnnviz."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnviz_core import Model

from .data import default_model_path

#: models shipped as package data, by the name users type instead of a path
SHIPPED: dict[str, Callable[[], Path]] = {"shapes": default_model_path}


def load_model(source: str | Path | bytes = "shapes", **options: Any) -> Model:
    """A :class:`~cnnviz_core.Model` from a path, ONNX bytes, or a shipped model's name.

    Args:
        source: ``"shapes"`` (the default model trained by ``cnnviz.data.train_shapes``),
            a path to an ``.onnx`` file, or its bytes.
        **options: passed to :class:`~cnnviz_core.Model` (preprocess, labels, device...).
    """
    if isinstance(source, str) and source in SHIPPED and not Path(source).exists():
        return Model(SHIPPED[source](), name=source, **options)
    return Model(source, **options)
