"""The shipped default model (accuracy on a fresh seed, model card, symbolic batch) and the
training script that produces it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import cnnviz.data
from cnnviz.data import CLASSES, default_model_card, default_model_path, make_shapes

FRESH_SEED = 12345  # used neither for training nor for the held-out figure in the card


@pytest.fixture(scope="module")
def card() -> dict[str, Any]:
    return default_model_card()


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])


def _preprocess(images: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """Apply the card's preprocessing to uint8 NHWC RGB images -> float32 NCHW."""
    pre = card["preprocess"]
    assert pre["channel_order"] == "RGB" and list(images.shape[1:3]) == pre["size"]
    x = images.astype(np.float32) * np.float32(pre["scale"])
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _logits(session: ort.InferenceSession, images: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    feeds = {card["input"]["name"]: _preprocess(images, card)}
    return session.run([card["output"]], feeds)[0]


def test_accuracy_on_a_fresh_seed(session: ort.InferenceSession, card: dict[str, Any]) -> None:
    assert FRESH_SEED not in (card["train_seed"], card["heldout_seed"])
    data = make_shapes(500, seed=FRESH_SEED)
    accuracy = (_logits(session, data.images, card).argmax(axis=1) == data.labels).mean()
    assert accuracy >= 0.95


def test_card(card: dict[str, Any]) -> None:
    assert card["name"] == "shapes"
    assert tuple(card["classes"]) == CLASSES
    assert card["input"] == {"name": "image", "size": [64, 64]}
    assert card["output"] == "logits"
    assert card["heldout_accuracy"] >= 0.97 and card["heldout_n"] >= 2000
    assert card["heldout_seed"] != card["train_seed"]


def test_card_is_embedded_in_the_onnx_file(card: dict[str, Any]) -> None:
    model = onnx.load(str(default_model_path()))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["cnnviz.card"]) == card


def test_file_is_small_and_self_contained() -> None:
    path = default_model_path()
    assert path.stat().st_size < 2 * 1024 * 1024
    model = onnx.load(str(path), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert not list(path.parent.glob("*.data"))  # no external-data file beside it


def test_graph_names(session: ort.InferenceSession) -> None:
    model = onnx.load(str(default_model_path()))
    (image,) = model.graph.input
    assert image.name == "image"
    assert image.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert {n.op_type for n in model.graph.node} <= {
        "Conv",
        "Relu",
        "MaxPool",
        "ReduceMean",
        "Reshape",
        "Gemm",
    }


@pytest.mark.parametrize("n", [1, 7])
def test_symbolic_batch(session: ort.InferenceSession, card: dict[str, Any], n: int) -> None:
    images = make_shapes(n, seed=FRESH_SEED).images
    logits = _logits(session, images, card)
    assert logits.shape == (n, len(CLASSES))
    np.testing.assert_allclose(logits[:1], _logits(session, images[:1], card), rtol=1e-5, atol=1e-5)


@pytest.mark.torch
def test_training_script_quick(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    root = Path(cnnviz.data.__file__).resolve().parents[2]  # where this cnnviz is imported from
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    )
    cmd = [
        sys.executable,
        "-W",
        "error",
        "-m",
        "cnnviz.data.train_shapes",
        "--quick",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    model = onnx.load(str(tmp_path / "shapes.onnx"))
    onnx.checker.check_model(model)
    card = json.loads((tmp_path / "shapes.json").read_text())
    assert json.loads({p.key: p.value for p in model.metadata_props}["cnnviz.card"]) == card
    session = ort.InferenceSession(
        str(tmp_path / "shapes.onnx"), providers=["CPUExecutionProvider"]
    )
    assert _logits(session, make_shapes(3, seed=0).images, card).shape == (3, len(CLASSES))


def test_module_paths_name_layers_and_fields_follow_the_architecture():
    from cnnviz import load_model

    model = load_model("shapes")
    assert model.tensor_name("features.relu4") == "relu_3"
    assert model.layer("features.conv1").op_type == "Conv"
    # 3x3 convs (pad 1) and 2x2/2 pools: 3, 4, 8, 10, 18, 22, 38
    assert model.layer("features.relu4").receptive_field.size == (38, 38)
    assert model.layer("features.relu4").receptive_field.stride == (8, 8)
