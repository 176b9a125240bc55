"""The same explanation as a deployable ONNX file: what an exported explainer is (size,
opset, ops, inputs and outputs, from :func:`explainer_facts`) and the report section
``deploy`` (order 140) that exports one, runs it with plain onnxruntime and shows its map
beside the Python method's.

The section is opt-in: it is built only when ``ctx.options["deploy"]`` is given (the demo
does), as ``{"method": "gradcam", "layer": None}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx

from cnnviz_core import CnnvizError

from ..render.images import upscale
from ..render.report import MIN_DISPLAY_SIDE, Markup, Page, ReportContext, Section, escape
from ..render.report import register_section as _register
from .export import export_explainer
from .methods import explain, method_spec, title

#: the section's title
TITLE = "The same explanation as a deployable ONNX file"


def _describe(value: onnx.ValueInfoProto) -> str:
    tensor = value.type.tensor_type
    dims = ", ".join(d.dim_param or str(d.dim_value) for d in tensor.shape.dim)
    kind = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return f"{value.name} ({dims}) {kind}"


def explainer_facts(proto: onnx.ModelProto, size: int | None = None) -> list[tuple[str, str]]:
    """An exported explainer in (name, value) pairs: size (bytes of ``proto`` serialized,
    unless given), method, layer, target, opset, op types, inputs and outputs with their
    shapes, from its ``cnnviz.*`` metadata (the op types from the graph when it has none)."""
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    ops = [op for op in metadata.get("cnnviz.ops", "").split(",") if op]
    if not ops:
        ops = sorted({node.op_type for node in proto.graph.node})
    size = len(proto.SerializeToString()) if size is None else size
    return [
        ("size", f"{size / 1e6:.2f} MB"),
        ("method", metadata.get("cnnviz.method", "?")),
        ("layer", metadata.get("cnnviz.layer") or "-"),
        ("target", metadata.get("cnnviz.target", "?")),
        ("opset", metadata.get("cnnviz.opset", "?")),
        (f"op types ({len(ops)})", ", ".join(ops)),
        ("inputs", "; ".join(_describe(value) for value in proto.graph.input)),
        ("outputs", "; ".join(_describe(value) for value in proto.graph.output)),
    ]


def _run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The ``map`` output of the explainer, run by plain onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (heat,) = session.run(["map"], feeds)
    return np.asarray(heat, np.float32)


def _picture(page: Page, array: np.ndarray, name: str, alt: str) -> Markup:
    return page.image(upscale(array, min_side=MIN_DISPLAY_SIDE), name, alt=alt)


@_register("deploy", order=140)
def deploy_section(ctx: ReportContext, page: Page) -> Section | None:
    """One technique exported as one ONNX graph: its facts, and per image the Python map,
    the exported graph's map (onnxruntime) and their largest difference."""
    options: dict[str, Any] = dict(ctx.options.get("deploy") or {})
    if not options or not ctx.names:
        return None
    method = options.get("method", "gradcam")
    layer = options.get("layer") if "layer" in method_spec(method).options else None
    pixels = ctx.pixels  # (N, H, W, 3) uint8: what a deployed app decodes
    try:
        proto = export_explainer(ctx.model, method, layer=layer)
        python = explain(ctx.model, list(pixels), method, layer=layer)
    except CnnvizError as exc:  # shown in the report, not hidden
        return Section(
            "deploy", TITLE, Markup(f'<p class="muted">not available: {escape(exc)}</p>')
        )
    takes_pixels = any(value.name == "pixels" for value in proto.graph.input)
    feeds = (
        {"pixels": pixels.astype(np.float32)} if takes_pixels else {ctx.model.input_name: ctx.batch}
    )
    exported = dataclasses.replace(python, maps=_run(proto, feeds))
    rows = []
    for i, name in enumerate(ctx.names):
        difference = float(np.abs(exported.maps[i] - python.maps[i]).max())
        label = python.targets[i].label
        rows.append(
            [
                name,
                _picture(
                    page, python.render(i), f"python-{i}", f"Python {title(method)} of {name}"
                ),
                _picture(
                    page, exported.render(i), f"onnx-{i}", f"exported {title(method)} of {name}"
                ),
                label,
                f"{difference:.1e}",
            ]
        )
    note = Markup(
        f'<p class="muted">{escape(title(method))} and the model compiled into one ONNX graph by '
        "<code>cnnviz.export_explainer</code> (the CLI: <code>cnnviz export-explainer MODEL "
        f"--method {escape(method)} --out explainer.onnx</code>). It takes the pixels as an app "
        "decodes them and returns the model's outputs, the map and the class; any ONNX runtime "
        "runs it without Python or cnnviz (onnxruntime, OpenVINO from C++: see the README). "
        "Below, its map run by plain onnxruntime beside the Python method's.</p>"
    )
    headers = ["image", "Python", "exported ONNX", "target", "max |difference|"]
    facts = page.definitions(explainer_facts(proto))
    return Section("deploy", TITLE, note + facts + page.table(headers, rows))


__all__ = ["TITLE", "deploy_section", "explainer_facts"]
