"""A hand-made exported explainer with the interface of ``cnnviz.export_explainer``'s files:
CAM (Zhou et al. 2016) of the shipped shapes model written with onnx.helper.

Inputs ``pixels`` float32 (N, 64, 64, 3), RGB 0-255 (the model card's preprocessing is in
the graph) and, with ``target="input"``, ``target`` int64 (N,); outputs ``logits``, ``map``
float32 (N, 64, 64) (min-max normalized per image, as :func:`cnnviz.attribution.cam`) and
``target`` int64 (N,); the ``cnnviz.*`` metadata. The deployment tests (OpenVINO, the
reference evaluator, the C++ example, the CLI) run on it without the exporter.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cnnviz.models import load_model
from cnnviz_core import Model

#: the opset of the stand-in (the shipped model's)
OPSET = 20


def standin_explainer(target: str = "predicted") -> onnx.ModelProto:
    """CAM of the shapes model as one graph, pixels in; ``target``: ``predicted`` (argmax
    in the graph) or ``input`` (an int64 ``target`` input)."""
    model = load_model("shapes")
    source = model.proto.graph
    scale, mean, std = model.preprocess.scale, model.preprocess.mean, model.preprocess.std
    consts = {
        "cx_perm_scale": np.float32(scale),
        "cx_mean": np.asarray(mean, np.float32).reshape(1, 3, 1, 1),
        "cx_std": np.asarray(std, np.float32).reshape(1, 3, 1, 1),
        "cx_axis1": np.asarray([1], np.int64),
        "cx_axes23": np.asarray([2, 3], np.int64),
        "cx_axes123": np.asarray([1, 2, 3], np.int64),
        "cx_zero": np.float32(0.0),
        "cx_one": np.float32(1.0),
    }
    size = helper.make_node("Shape", ["cam_relu"], ["cam_shape"], start=0, end=2)
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["cx_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["cx_nchw", "cx_perm_scale"], ["cx_scaled"]),
        helper.make_node("Sub", ["cx_scaled", "cx_mean"], ["cx_centred"]),
        helper.make_node("Div", ["cx_centred", "cx_std"], [model.input_name]),
        *source.node,
    ]
    if target == "predicted":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["target"], axis=1, keepdims=0))
    nodes += [
        # CAM: the class's classifier row weights the channels the global pooling reads
        helper.make_node("Gather", ["classifier.weight", "target"], ["cam_w"], axis=0),
        helper.make_node("Unsqueeze", ["cam_w", "cx_axes23"], ["cam_w4"]),
        helper.make_node("Mul", ["relu_3", "cam_w4"], ["cam_weighted"]),
        helper.make_node("ReduceSum", ["cam_weighted", "cx_axis1"], ["cam_low"], keepdims=1),
        helper.make_node("Relu", ["cam_low"], ["cam_relu"]),
        size,
        helper.make_node("Shape", ["pixels"], ["cx_pixels_shape"], start=1, end=3),
        helper.make_node("Concat", ["cam_shape", "cx_pixels_shape"], ["cx_out_size"], axis=0),
        helper.make_node(
            "Resize",
            ["cam_relu", "", "", "cx_out_size"],
            ["cam_up"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        # min-max to [0, 1] per image; a constant map becomes zeros
        helper.make_node("ReduceMin", ["cam_up", "cx_axes123"], ["cx_low"], keepdims=1),
        helper.make_node("ReduceMax", ["cam_up", "cx_axes123"], ["cx_high"], keepdims=1),
        helper.make_node("Sub", ["cx_high", "cx_low"], ["cx_span"]),
        helper.make_node("Sub", ["cam_up", "cx_low"], ["cx_shifted"]),
        helper.make_node("Greater", ["cx_span", "cx_zero"], ["cx_varies"]),
        helper.make_node("Where", ["cx_varies", "cx_span", "cx_one"], ["cx_divisor"]),
        helper.make_node("Div", ["cx_shifted", "cx_divisor"], ["cx_scaled_map"]),
        helper.make_node("Where", ["cx_varies", "cx_scaled_map", "cx_zero"], ["cx_map4"]),
        helper.make_node("Squeeze", ["cx_map4", "cx_axis1"], ["map"]),
    ]
    initializers = [*source.initializer]
    initializers += [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 64, 64, 3])]
    if target == "input":
        inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, ["N"]))
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8]),
        helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", 64, 64]),
        helper.make_tensor_value_info("target", TensorProto.INT64, ["N"]),
    ]
    graph = helper.make_graph(nodes, "cnnviz_explainer", inputs, outputs, initializers)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnnviz-test"
    )
    proto.ir_version = model.proto.ir_version
    ops = sorted({node.op_type for node in nodes})
    helper.set_model_props(
        proto,
        {
            "cnnviz.method": "cam",
            "cnnviz.layer": "relu_3",
            "cnnviz.target": target,
            "cnnviz.opset": str(OPSET),
            "cnnviz.ops": ",".join(ops),
            "cnnviz.input": "pixels",
            "cnnviz.version": "0.1.0",
        },
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def shapes_pixels(count: int = 2, seed: int = 3) -> np.ndarray:
    """(count, 64, 64, 3) float32 RGB 0-255: shapes images as an app decodes them."""
    from cnnviz.data import make_shapes

    return make_shapes(count, seed=seed).images.astype(np.float32)


def feeds_for(proto: onnx.ModelProto, pixels: np.ndarray, classes: list[int]) -> dict:
    """The explainer's inputs: ``pixels``, and ``target`` when the graph takes one."""
    feeds: dict[str, np.ndarray] = {"pixels": pixels}
    if any(value.name == "target" for value in proto.graph.input):
        feeds["target"] = np.asarray(classes[: len(pixels)], np.int64)
    return feeds


def onnxruntime_outputs(proto: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    """Every output of the explainer run by onnxruntime (the exporter's own oracle)."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in proto.graph.output]
    return dict(zip(names, session.run(names, feeds)))


def assert_same_map(got: np.ndarray, want: np.ndarray, tolerance: float = 1e-4) -> float:
    """``got`` equals ``want`` to ``tolerance`` of the map's scale (max |want|, at least 1);
    returns the largest difference relative to that scale."""
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    error = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert error <= tolerance, f"maps differ by {error:.3g} of their scale (> {tolerance})"
    return error


def python_map(proto: onnx.ModelProto, pixels: np.ndarray, classes: list[int]) -> np.ndarray:
    """The map cnnviz's Python method gives for what the explainer's metadata says it is
    (method, layer, target, options) on the shapes model: ``Attribution.maps``."""
    from cnnviz.attribution.methods import method_spec

    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    method = metadata["cnnviz.method"]
    layer = metadata.get("cnnviz.layer") or None
    target = metadata["cnnviz.target"]
    chosen = (
        None
        if target == "predicted"
        else classes[: len(pixels)]
        if target == "input"
        else int(target)
    )
    options = json.loads(metadata.get("cnnviz.options", "{}"))
    if str(options.get("baseline", "")).startswith("array"):  # the one array EXPORTED bakes
        assert options["baseline"] == f"array {IG_BASELINE.shape}", options
        options["baseline"] = IG_BASELINE
    if layer and "layer" in method_spec(method).options:
        options["layer"] = layer
    model = load_model("shapes")
    images = list(pixels.astype(np.uint8))
    if method == "smoothgrad":  # the graph's noise is baked, the same for every image
        return _smoothgrad_baked(model, images, chosen, **options)
    return method_spec(method).function(model, images, chosen, **options).maps


def _smoothgrad_baked(
    model: Model, images: list, target: Any, samples: int = 25, sigma: float = 0.15, seed: int = 0
) -> np.ndarray:
    """SmoothGrad with the exporter's noise (:func:`~cnnviz.attribution.compiled.
    smoothgrad_noise`: one draw for all images; the Python method seeds each image by its
    content): the engine's saliency ``abs`` of each noisy copy, averaged, for the clean
    images' classes."""
    from cnnviz.attribution import saliency
    from cnnviz.attribution.compiled import smoothgrad_noise

    batch = model.prepare(images)
    if target is None:
        target = [int(k) for k in model.run(batch)[model.output_names[0]].argmax(axis=1)]
    scale = (model.preprocess.span * sigma).astype(np.float32)[:, None, None]
    noise = smoothgrad_noise(model, samples, seed) * scale
    maps = [saliency(model, batch + copy, target).maps for copy in noise]
    return np.mean(maps, axis=0)


#: the user-given Integrated Gradients baseline of the ``ig-array`` explainer: one (C, H, W)
#: image in the shapes model's preprocessed space
IG_BASELINE = np.random.default_rng(11).normal(0, 0.5, (3, 64, 64)).astype(np.float32)

#: the explainers the deployment tests run, by test id: the hand-made CAM (predicted and
#: input target), then the shapes model exported by cnnviz.export_explainer:
#: (method, target, options)
EXPORTED: dict[str, tuple[str, str, dict]] = {
    "saliency": ("saliency", "predicted", {}),
    "guided": ("guided", "predicted", {}),
    "deconvnet": ("deconvnet", "predicted", {}),
    "cam": ("cam", "predicted", {}),
    "gradcam": ("gradcam", "predicted", {}),
    "gradcam-target-input": ("gradcam", "input", {}),
    "guided-gradcam": ("guided-gradcam", "predicted", {}),
    "gradcam++": ("gradcam++", "predicted", {}),
    "xgradcam": ("xgradcam", "predicted", {}),
    "layercam": ("layercam", "predicted", {}),
    "layercam-target-input": ("layercam", "input", {}),
    "hirescam": ("hirescam", "predicted", {}),
    "ig": ("ig", "predicted", {"steps": 8}),
    "ig-blur": ("ig", "predicted", {"steps": 4, "baseline": "blur"}),
    "ig-array": ("ig", "predicted", {"steps": 4, "baseline": IG_BASELINE}),
    "smoothgrad": ("smoothgrad", "predicted", {"samples": 4}),
}
EXPLAINERS = ["standin-cam", "standin-cam-target-input", *EXPORTED]

_cache: dict[str, onnx.ModelProto] = {}


def explainer(name: str) -> onnx.ModelProto:
    """The explainer of test id ``name`` (one of :data:`EXPLAINERS`), made once."""
    if name not in _cache:
        if name.startswith("standin-"):
            _cache[name] = standin_explainer("input" if name.endswith("input") else "predicted")
        else:
            from cnnviz import export_explainer

            method, target, options = EXPORTED[name]
            _cache[name] = export_explainer(load_model("shapes"), method, target=target, **options)
    return _cache[name]
