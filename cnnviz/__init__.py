"""cnnviz: see what a convolutional network exported to ONNX learned, and why it decides.

    import cnnviz
    model = cnnviz.load_model("shapes")          # or a path to any .onnx image classifier
    model.predict(["cat.jpg"], k=5)
    cnnviz.build_report(model, ["cat.jpg"], "out/")

The engine (ONNX graphs, onnxruntime, kernels) is :mod:`cnnviz_core`; this package adds
the techniques, rendering, the report and the ``cnnviz`` command. torch is optional.
"""

from cnnviz_core import (
    CnnvizError,
    DeviceError,
    InputError,
    Model,
    ModelLoadError,
    ModelRunError,
    Prediction,
    Preprocess,
    TargetError,
    UnknownLayerError,
)

from . import (
    attribution,  # noqa: F401  (registers its report sections)
    features,  # noqa: F401  (registers its report sections)
    synthesis,  # noqa: F401  (registers its report sections; torch is imported lazily)
)
from .attribution.export import export_explainer
from .models import load_model
from .render.report import build_report, register_section

__version__ = "0.1.0"

__all__ = [
    "CnnvizError",
    "DeviceError",
    "InputError",
    "Model",
    "ModelLoadError",
    "ModelRunError",
    "Prediction",
    "Preprocess",
    "TargetError",
    "UnknownLayerError",
    "build_report",
    "export_explainer",
    "load_model",
    "register_section",
]
