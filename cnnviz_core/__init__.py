"""cnnviz_core: the engine under cnnviz.

ONNX graphs and onnxruntime sessions (:class:`Model`), preprocessing, labels, receptive
fields, targets (what a score or a gradient explains) and the native kernels. No plotting,
HTML or argument parsing lives here.
"""

from .detection import Box, DetectionLayout, list_boxes
from .errors import (
    CnnvizError,
    DeviceError,
    InputError,
    ModelLoadError,
    ModelRunError,
    TargetError,
    UnknownLayerError,
    UnsupportedOpError,
)
from .graph import ReceptiveField
from .labels import load_labels
from .model import Layer, Model, Prediction
from .preprocess import PRESETS, LoadedImage, Preprocess, load_image, read_image
from .targets import (
    Channel,
    Class,
    Neuron,
    Region,
    ResolvedTarget,
    Target,
    TargetLike,
    resolve_target,
    resolve_targets,
    score_tensor,
)

__all__ = [
    "PRESETS",
    "Box",
    "Channel",
    "Class",
    "CnnvizError",
    "DetectionLayout",
    "DeviceError",
    "InputError",
    "Layer",
    "LoadedImage",
    "Model",
    "ModelLoadError",
    "ModelRunError",
    "Neuron",
    "Prediction",
    "Preprocess",
    "ReceptiveField",
    "Region",
    "ResolvedTarget",
    "Target",
    "TargetError",
    "TargetLike",
    "UnknownLayerError",
    "UnsupportedOpError",
    "list_boxes",
    "load_image",
    "load_labels",
    "read_image",
    "resolve_target",
    "resolve_targets",
    "score_tensor",
]
