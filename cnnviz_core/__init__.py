"""cnnviz_core: the engine under cnnviz.

ONNX graphs and onnxruntime sessions (:class:`Model`), preprocessing, labels, receptive
fields, and the native kernels. No plotting, HTML or argument parsing lives here.
"""

from .errors import (
    CnnvizError,
    DeviceError,
    InputError,
    ModelLoadError,
    TargetError,
    UnknownLayerError,
    UnsupportedOpError,
)
from .graph import ReceptiveField
from .labels import load_labels
from .model import Layer, Model, Prediction
from .preprocess import PRESETS, Preprocess, load_image

__all__ = [
    "PRESETS",
    "CnnvizError",
    "DeviceError",
    "InputError",
    "Layer",
    "Model",
    "ModelLoadError",
    "Prediction",
    "Preprocess",
    "ReceptiveField",
    "TargetError",
    "UnknownLayerError",
    "UnsupportedOpError",
    "load_image",
    "load_labels",
]
