"""Exceptions raised by cnnviz for bad input: each says what is wrong and what to do.

Every error a user can cause derives from :class:`CnnvizError`, so the CLI can print the
message alone (no traceback) and exit with a non-zero status.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnvizError(Exception):
    """Base class of the errors a user can cause (bad file, bad image, bad name...)."""


class ModelLoadError(CnnvizError):
    """The model file is missing, is not ONNX, is truncated, or has no image-like input."""


class InputError(CnnvizError, ValueError):
    """An image or batch cannot be used with the model (cannot decode, wrong shape...)."""


class TargetError(CnnvizError, ValueError):
    """A target class (index or label name) that the model does not have."""


class DeviceError(CnnvizError, RuntimeError):
    """A device (e.g. CUDA) was asked for and is not available."""


class UnsupportedOpError(CnnvizError, NotImplementedError):
    """The graph contains an ONNX operator that the requested analysis cannot handle."""


class UnknownLayerError(CnnvizError, KeyError):
    """A layer or tensor name that is not in the model; suggests close matches."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(known), n=5, cutoff=0.5)
        hint = (
            f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else "; run `cnnviz layers MODEL` to list the layers"
        )
        super().__init__(f"unknown layer {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class ModelRunError(CnnvizError, RuntimeError):
    """onnxruntime loaded the model but cannot compute it (a corrupted graph, an allocation
    that fails); the message carries onnxruntime's own."""
