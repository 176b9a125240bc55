"""Sanity checks (Adebayo et al. 2018): the randomized protos, the figures against scipy /
Quantus / a float64 SSIM written here, the paper's point (saliency decorrelates, a map that is
the image's own edges does not), and the ``cnnviz sanity`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from onnx import numpy_helper

from cnnviz import load_model
from cnnviz.attribution import methods
from cnnviz.attribution.base import make_attribution, prepare
from cnnviz.attribution.methods import MethodSpec
from cnnviz.attribution.sanity import (
    DEFAULT_THRESHOLD,
    model_randomization,
    randomizable_layers,
    randomized_proto,
    spearman,
    ssim,
)
from cnnviz.cli import main
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_shapes(4, seed=3).images


def _ssim_reference(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Wang et al. 2004 by the definition, window by window, in float64."""
    rng_ = max(a.max(), b.max()) - min(a.min(), b.min())
    c1, c2 = (0.01 * rng_) ** 2, (0.03 * rng_) ** 2
    values = []
    for y in range(a.shape[0] - win + 1):
        for x in range(a.shape[1] - win + 1):
            pa = a[y : y + win, x : x + win].astype(np.float64).ravel()
            pb = b[y : y + win, x : x + win].astype(np.float64).ravel()
            cov = np.cov(pa, pb)  # sample (N - 1) covariances, as scikit-image
            ma, mb = pa.mean(), pb.mean()
            values.append(
                ((2 * ma * mb + c1) * (2 * cov[0, 1] + c2))
                / ((ma**2 + mb**2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
            )
    return float(np.mean(values))


def test_spearman_and_ssim_against_references() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((20, 24))
    b = 0.6 * a + 0.4 * rng.random((20, 24))
    ties = np.round(a * 4) / 4  # many ties: average ranks
    for x, y in ((a, b), (ties, b), (ties, np.round(b * 3))):
        assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x.ravel(), y.ravel())[0])
        assert ssim(x, y) == pytest.approx(_ssim_reference(x, y), abs=1e-10)
    assert spearman(np.ones((4, 4)), a[:4, :4]) == 0.0
    assert ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(InputError, match="window"):
        ssim(a[:5, :5], b[:5, :5])


def test_figures_against_quantus(model: Model, images: np.ndarray) -> None:
    similarity = pytest.importorskip("quantus.functions.similarity_func")
    result = model_randomization(model, images, "saliency")
    for k, randomized in enumerate(result.randomized):
        for i in range(len(images)):
            a = np.abs(result.original.heatmap[i]).astype(np.float64)
            b = np.abs(randomized.heatmap[i]).astype(np.float64)
            assert result.spearman[k, i] == pytest.approx(
                similarity.correlation_spearman(a.ravel(), b.ravel()), abs=1e-9
            )
            assert result.ssim[k, i] == pytest.approx(
                similarity.ssim(a / a.max(), b / b.max()), abs=1e-6
            )


def test_randomized_proto_changes_only_the_chosen_layers(model: Model) -> None:
    layers = randomizable_layers(model)
    assert layers == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "logits"]
    top_two = randomized_proto(model.proto, ["logits", "conv2d_3"], seed=0)
    top_one = randomized_proto(model.proto, ["logits"], seed=0)
    before = {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in top_two.graph.initializer}
    one = {i.name: numpy_helper.to_array(i) for i in top_one.graph.initializer}
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert changed == {
        "classifier.weight",
        "classifier.bias",
        "features.conv4.weight",
        "features.conv4.bias",
    }
    for name in changed:
        assert after[name].dtype == before[name].dtype and after[name].shape == before[name].shape
        assert after[name].std() == pytest.approx(before[name].std(), rel=0.5)
    # a cascade keeps the top layer's draw when it randomizes the next one
    np.testing.assert_array_equal(one["classifier.weight"], after["classifier.weight"])
    # the original is untouched
    current = {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}
    assert all(np.array_equal(current[n], before[n]) for n in before)


def test_saliency_passes_and_keeps_its_targets(model: Model, images: np.ndarray) -> None:
    result = model_randomization(model, images, "saliency", target="star")
    assert result.layers == ["logits", "conv2d_3", "conv2d_2", "conv2d_1", "conv2d"]
    assert result.spearman.shape == result.ssim.shape == (5, len(images))
    for randomized in result.randomized:
        assert [t.label for t in randomized.targets] == [t.label for t in result.original.targets]
        assert randomized.targets[0].class_index == model.class_index("star")
    assert result.passed, result.spearman.mean(axis=1)
    assert result.spearman[-1].mean() < DEFAULT_THRESHOLD
    # the figures and the strip
    figures = result.figures()
    assert figures["passed"] is True and figures["mode"] == "cascading"
    assert [row["layer"] for row in figures["layers"]] == result.layers
    strip = result.strip()
    h, w = images.shape[1:3]
    assert strip.dtype == np.uint8
    assert strip.shape == (len(images) * (h + 2) + 2, 7 * (w + 2) + 2, 3)
    assert result.strip(1).shape == (h + 4, 7 * (w + 2) + 2, 3)


def test_independent_randomizes_one_layer_at_a_time(model: Model, images: np.ndarray) -> None:
    cascade = model_randomization(model, images[:2], "saliency", layers=["conv2d_3", "logits"])
    alone = model_randomization(
        model, images[:2], "saliency", cascading=False, layers=["logits", "conv2d_3"]
    )
    assert cascade.layers == alone.layers == ["logits", "conv2d_3"]
    # step 0 is the same model (the top layer alone); step 1 differs
    np.testing.assert_allclose(alone.spearman[0], cascade.spearman[0])
    assert not np.allclose(alone.spearman[1], cascade.spearman[1])
    assert alone.decisive_step == int(np.argmin(alone.spearman.mean(axis=1)))


def _edges(model: Model, images, target=None):
    """A "method" that is the image's own gradient magnitude: it ignores the model."""
    batch, targets = prepare(model, images, target)
    grey = batch.mean(axis=1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    return make_attribution(np.hypot(gx, gy), "edges", targets, {}, model, batch)


def test_edge_detector_fails(model: Model, images: np.ndarray, monkeypatch) -> None:
    spec = MethodSpec("edges", "edge detector", "the test's fake", "gradient", _edges)
    monkeypatch.setitem(methods.REGISTRY, "edges", spec)
    for cascading in (True, False):
        result = model_randomization(model, images, "edges", cascading=cascading)
        np.testing.assert_allclose(result.spearman, 1.0)
        np.testing.assert_allclose(result.ssim, 1.0)
        assert not result.passed


def test_errors(model: Model, images: np.ndarray) -> None:
    with pytest.raises(InputError, match="layers= 'relu' is not a Conv"):
        model_randomization(model, images, "saliency", layers=["relu"])
    with pytest.raises(InputError, match="unknown method"):
        model_randomization(model, images, "nope")
    with pytest.raises(InputError, match="layers= is empty"):
        model_randomization(model, images, "saliency", layers=[])
    with pytest.raises(InputError, match="layer= applies to"):
        model_randomization(model, images, "saliency", options={"layer": "relu_3"})


def test_method_options_reach_every_model(model: Model, images: np.ndarray) -> None:
    result = model_randomization(
        model, images[:2], "gradcam", options={"layer": "relu_2"}, layers=["logits"]
    )
    assert result.original.options["layer"] == result.randomized[0].options["layer"]
    assert result.original.maps.shape == (2, 64, 64)


def test_cli_writes_strip_and_figures(tmp_path, capsys, images) -> None:
    from PIL import Image

    path = tmp_path / "shape.png"
    Image.fromarray(images[0]).save(path)
    out = tmp_path / "out"
    code = main(["sanity", "shapes", str(path), "--method", "saliency", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PASS" in captured.out and "5/5 randomized models" in captured.err
    figures = json.loads((out / "shape-saliency-sanity-cascading.json").read_text())
    assert figures["passed"] is True and len(figures["layers"]) == 5
    strip = np.asarray(Image.open(out / "shape-saliency-sanity-cascading.png"))
    assert strip.shape == (66 + 2, 7 * 66 + 2, 3)
    code = main(
        ["sanity", "shapes", str(path), "--method", "gradcam", "--independent",
         "--randomize", "relu", "--out", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("cnnviz: error: --randomize 'relu' is not a Conv")
    code = main(
        ["sanity", "shapes", str(path), "--method", "saliency", "--layer", "relu_3",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnviz: error: --layer applies to ") and " cam, " in err


def test_cli_ctrl_c_exits_130_and_writes_nothing(tmp_path, capsys, images, monkeypatch) -> None:
    from PIL import Image

    from cnnviz.cli import attribution as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "model_randomization", interrupted)
    path = tmp_path / "shape.png"
    Image.fromarray(images[0]).save(path)
    out = tmp_path / "out"
    code = main(["sanity", "shapes", str(path), "--method", "saliency", "--out", str(out)])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []
