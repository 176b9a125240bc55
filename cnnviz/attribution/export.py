"""Compiled explanations: a model and a gradient technique as one standalone ONNX graph that
any ONNX runtime runs (onnxruntime without cnnviz or torch, OpenVINO, the reference
evaluator), next to the prediction.

    proto = cnnviz.export_explainer("model.onnx", "gradcam")
    onnx.save(proto, "model.gradcam.onnx")

The graph:

- inputs: ``pixels`` float32 (N, H, W, 3), RGB 0-255 as decoded from an image file already
  resized to the model's size ((N, H, W, 1) grey for a grey model), when the model has a
  preprocessing (model card, preset or given: channel order, scale, mean / std and layout
  are in the graph); else the model's own input (same name, shape, dtype). With
  ``target="input"`` also ``target`` int64 (N,).
- outputs: the model's own outputs (same names), ``map`` float32 at the input resolution,
  shaped and normalised as the Python method's ``Attribution.maps`` ((N, H, W); (N, C, H, W)
  for guided backprop, deconvnet and Guided Grad-CAM: see ``cnnviz.map``), and ``target``
  int64 (N,), the explained class (absent for channel and neuron targets).
- metadata: ``cnnviz.method``, ``cnnviz.layer``, ``cnnviz.target``, ``cnnviz.opset``,
  ``cnnviz.ops``, ``cnnviz.input``, ``cnnviz.map``, ``cnnviz.version`` (and the method's
  options).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from cnnviz_core import InputError, Model
from cnnviz_core.backward.compile import GraphBuilder
from cnnviz_core.backward.emitter import Name
from cnnviz_core.targets import Class, ResolvedTarget, resolve_target

from ..models import load_model
from .compiled import Explainer, options_of
from .methods import REGISTRY, method_spec

#: the graph's names for the pixel input, the map and the explained classes
PIXELS, MAP, TARGET = "pixels", "map", "target"


def export_explainer(
    model: Model | str | Path,
    method: str,
    *,
    layer: str | None = None,
    target: Any = "predicted",
    **options: Any,
) -> onnx.ModelProto:
    """One ONNX graph computing the model's outputs and ``method``'s map (see the module doc).

    Args:
        model: a :class:`~cnnviz_core.Model`, a path, or a shipped model's name.
        method: a registered method with a compiled form: ``saliency``, ``guided``,
            ``deconvnet``, ``cam``, ``gradcam``, ``guided-gradcam``, ``gradcam++``,
            ``xgradcam``, ``layercam``, ``hirescam``, ``ig``, ``smoothgrad``.
        layer: the CAM family's layer (default: the method's own choice).
        target: ``"predicted"`` (argmax in the graph), ``"input"`` (a ``target`` int64 (N,)
            input), a class index or label, or a :class:`~cnnviz_core.targets.Class`,
            ``Channel`` or ``Neuron`` (baked in).
        **options: the method's options (``variant=`` for saliency, ``steps=`` /
            ``baseline=`` (``zeros``, ``black``, ``blur`` or a (C, H, W) array) /
            ``rule=`` / ``blur_sigma=`` for ig, ``samples=`` / ``sigma=`` / ``seed=`` for
            smoothgrad, ``relu=`` / ``normalize=`` for the CAMs).

    Raises:
        InputError: a method with no compiled form (the error names the alternative), an
            option the compiled method does not take, or ``layer=`` for a method without one.
        UnsupportedOpError: an op on the gradient path without an ONNX emission, or a model
            older than opset 17 that onnx.version_converter cannot convert.
    """
    spec = method_spec(method)
    if spec.compiled is None:
        exportable = ", ".join(name for name, s in REGISTRY.items() if s.compiled is not None)
        why = (
            "it runs many forwards of perturbed images"
            if spec.family == "perturbation"
            else "it has no compiled form"
        )
        raise InputError(
            f"method {method!r} cannot be compiled into one ONNX graph ({why}); run it with "
            f"cnnviz.explain(model, images, {method!r}) instead, or export one of: {exportable}"
        )
    if layer is not None and "layer" not in spec.options:
        raise InputError(f"layer= applies to the CAM family; {method!r} explains the input pixels")
    known = options_of(spec.compiled)
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(f"{k}=" for k in known) or "no options"
        raise InputError(f"export_explainer: {method!r} does not take {unknown}; it takes {takes}")
    loaded = model if isinstance(model, Model) else load_model(model)
    builder = GraphBuilder(loaded)
    work = builder.model
    x, input_name = _image_input(builder, loaded)
    names = builder.forward(x)
    classes, resolved, target_label = _targets(builder, work, names, x, target)
    explainer = Explainer(builder, work, x, names, classes, resolved, layer)
    compiled = spec.compiled(explainer, **options)
    for output in work.runnable.graph.output:
        builder.outputs.append(output)
    c, height, width = work.input_shape
    map_shape = (
        ["N", c, height, width] if compiled.layout == "(N, C, H, W)" else ["N", height, width]
    )
    builder.add_output(MAP, compiled.map, TensorProto.FLOAT, map_shape)
    if classes is not None:
        builder.add_output(TARGET, classes, TensorProto.INT64, ["N"])
    ops = sorted(builder.ops | {n.op_type for n in builder.nodes})
    metadata = {
        "cnnviz.method": method,
        "cnnviz.target": target_label,
        "cnnviz.opset": str(builder.opset),
        "cnnviz.ops": ",".join(ops),
        "cnnviz.input": input_name,
        "cnnviz.map": compiled.layout,
        "cnnviz.options": json.dumps(options, sort_keys=True, default=_described),
        "cnnviz.model": loaded.name,
        "cnnviz.version": _version(),
        **compiled.notes,
    }
    if compiled.layer is not None:
        metadata["cnnviz.layer"] = compiled.layer
    if input_name == PIXELS:
        metadata["cnnviz.preprocess"] = json.dumps(loaded.preprocess.to_dict(), sort_keys=True)
    return builder.to_model(metadata, name=f"{loaded.name}_{method}")


def _described(value: Any) -> Any:
    """An option JSON cannot hold: IG's baseline array as text (``array (3, 64, 64)``), a
    NumPy scalar as its value."""
    if isinstance(value, np.ndarray):
        return f"array {tuple(value.shape)}"
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"option value {value!r} is not JSON")


def _version() -> str:
    from cnnviz import __version__  # the package is imported by the time this runs

    return __version__


def has_preprocessing(model: Model) -> bool:
    """Whether the model's preprocessing was stated (model card, preset or given) rather than
    the default guess: then the graph takes raw pixels."""
    return not model.preprocess_source.startswith("default")


def _image_input(builder: GraphBuilder, model: Model) -> tuple[Name, str]:
    """(the preprocessed (N, C, H, W) tensor, the graph input's name)."""
    c, height, width = model.input_shape
    if not has_preprocessing(model):
        builder.add_input(model.input_name, TensorProto.FLOAT, ["N", c, height, width])
        return model.input_name, model.input_name
    pre = model.preprocess
    grey = pre.channel_order == "L"
    pixels = builder.add_input(PIXELS, TensorProto.FLOAT, ["N", height, width, 1 if grey else 3])
    g = builder
    ordered = pixels
    if pre.channel_order == "BGR":
        ordered = g.op("Gather", pixels, g.const([2, 1, 0], np.int64, "bgr"), axis=3)
    nchw = g.op("Transpose", ordered, perm=[0, 3, 1, 2])
    scaled = g.mul(nchw, g.scalar(np.float32(pre.scale)))
    mean = g.const(np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1), hint="mean")
    std = g.const(np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1), hint="std")
    g.add_node("Div", [g.op("Sub", scaled, mean), std], [model.input_name])
    return model.input_name, PIXELS


def _targets(
    builder: GraphBuilder, model: Model, names: dict[str, Name], x: Name, target: Any
) -> tuple[Name | None, ResolvedTarget | None, str]:
    """(int64 (N,) classes or None, the baked non-class target, the metadata label)."""
    if isinstance(target, str) and target == "predicted":
        return builder.predicted(names), None, "predicted"
    if isinstance(target, str) and target == "input":
        return builder.add_input(TARGET, TensorProto.INT64, ["N"]), None, "input"
    if isinstance(target, (int, np.integer, str)) and not isinstance(target, bool):
        target = Class(int(target) if isinstance(target, np.integer) else target)
    resolved = resolve_target(model, target)
    if resolved.kind == "class":
        assert resolved.class_index is not None
        return builder.constant_classes(x, resolved.class_index), None, resolved.label
    return None, resolved, resolved.label


__all__ = ["MAP", "PIXELS", "TARGET", "export_explainer", "has_preprocessing"]
