"""Adaptive drill-down occlusion: exact occlusion (the naive onnxruntime method, itself
checked against Captum) as the oracle on every window it scores, exact interpolation of
linear drops, the map's agreement with the full map, and its error report."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution import Channel, occlusion
from cnnviz.attribution.drilldown import drill_grid, drilldown, interpolation, lattice
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model

N = 2


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def batch(model: Model) -> np.ndarray:
    return model.prepare(make_shapes(N, seed=11).images)


@pytest.fixture(scope="module")
def exact(model: Model, batch: np.ndarray):
    return occlusion(model, batch, [3, 5], window=8, stride=2, fill="grey")


def test_lattice_and_interpolation() -> None:
    np.testing.assert_array_equal(lattice(27, 4), [0, 4, 8, 12, 16, 20, 24, 26])
    np.testing.assert_array_equal(lattice(5, 1), np.arange(5))
    fine, coarse = np.arange(7), np.array([0, 4, 6])
    weights = interpolation(fine, coarse)
    np.testing.assert_allclose(weights.sum(axis=1), 1)
    np.testing.assert_allclose(weights @ (2.0 * coarse + 1), 2.0 * fine + 1)  # exact on lines


@pytest.mark.parametrize(("shape", "levels", "refine"), [((27, 27), 2, 0.25), ((13, 9), 3, 0.1)])
def test_drill_grid_is_exact_on_bilinear_drops(shape, levels, refine) -> None:
    """Bilinear interpolation reproduces a bilinear function everywhere; the scored points
    are exactly the scorer's, and far fewer than the grid."""
    calls: list[int] = []

    def score(index: np.ndarray) -> np.ndarray:
        calls.append(len(index))
        y, x = index[:, 0].astype(float), index[:, 1].astype(float)
        return 0.5 * y - 2.0 * x + 0.25 * x * y + 3

    values, scored = drill_grid(score, shape, levels, refine)
    y, x = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    np.testing.assert_allclose(values, 0.5 * y - 2.0 * x + 0.25 * x * y + 3, atol=1e-9)
    assert sum(calls) == scored.sum() < scored.size / 2
    step = 2**levels
    assert scored[np.ix_(lattice(shape[0], step), lattice(shape[1], step))].all()


def test_scored_windows_equal_exact_occlusion(model: Model, batch: np.ndarray, exact) -> None:
    approx = drilldown(model, batch, [3, 5], window=8, stride=2, fill="grey", levels=2,
                       refine=0.3)  # fmt: skip
    scored = approx.extras["scored"]
    assert approx.maps.shape == exact.maps.shape == (N, 64, 64)
    assert approx.extras["grid"].shape == exact.extras["grid"].shape
    np.testing.assert_array_equal(approx.extras["positions_y"], exact.extras["positions_y"])
    # every scored window is exact occlusion's
    np.testing.assert_allclose(
        approx.extras["grid"][scored], exact.extras["grid"][scored], rtol=1e-5, atol=1e-5
    )
    share = approx.metrics["scored_share"]
    assert 0.1 < share < 0.5, share
    assert approx.metrics["positions_scored"] == list(scored.reshape(N, -1).sum(axis=1))
    assert approx.method == "occlusion" and approx.options["approximation"] == "drilldown"
    assert approx.options["coarse_stride"] == (8, 8)
    # the interpolated map keeps the full map's structure (measured: 0.87 and 0.93 with a
    # first stride as large as the window; occlusion at the first stride alone: 0.68 and 0.88)
    for a, e in zip(approx.maps, exact.maps):
        assert np.corrcoef(a.ravel(), e.ravel())[0, 1] > 0.83


def test_refine_everything_or_no_level_is_exact(model: Model, batch: np.ndarray, exact) -> None:
    for options in ({"levels": 0}, {"levels": 2, "refine": 1.0}):
        full = drilldown(model, batch, [3, 5], window=8, stride=2, fill="grey", **options)
        assert full.extras["scored"].all()
        np.testing.assert_allclose(full.maps, exact.maps, rtol=1e-5, atol=1e-5)


def test_reference_records_the_error(model: Model, batch: np.ndarray, exact) -> None:
    approx = drilldown(model, batch, [3, 5], window=8, stride=2, fill="grey", reference=exact)
    error = approx.metrics["approximation_error"]
    assert 0.85 < error["map_correlation"] < 1
    assert 0 < error["max_abs_diff_rel"] < 1
    assert {"deletion_auc_diff", "deletion_auc_exact", "deletion_auc_approx"} <= set(error)
    computed = drilldown(model, batch[:1], 3, window=8, stride=4, reference=True)
    assert computed.metrics["approximation_error"]["map_correlation"] > 0.8


def test_channel_target_and_progress(model: Model, batch: np.ndarray) -> None:
    seen: list[tuple[int, int]] = []
    target = Channel("relu_3", 4)
    approx = drilldown(model, batch[:1], target, window=8, stride=4, levels=1, refine=0.5,
                       progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    full = occlusion(model, batch[:1], target, window=8, stride=4)
    scored = approx.extras["scored"]
    np.testing.assert_allclose(
        approx.extras["grid"][scored], full.extras["grid"][scored], rtol=1e-5, atol=1e-5
    )
    assert seen[-1] == (int(scored.sum()), scored.size)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"levels": -1}, "levels must be an int >= 0"),
        ({"refine": 0.0}, r"refine must be in \(0, 1\]"),
        ({"engine": "fast"}, "unknown engine 'fast'"),
        ({"precision": "fp16"}, "unknown precision 'fp16'"),
        ({"precision": "bf16", "engine": "incremental"}, "use it with engine='naive'"),
        ({"tau": 0.5, "engine": "naive"}, "tau=0.5: projective-field thresholding needs"),
        ({"tau": 1.5}, r"a value in \(0, 1\]"),
        ({"output": "odds"}, "unknown output"),
        ({"window": 65}, "fit the 64x64"),
    ],
)
def test_bad_input(model: Model, batch: np.ndarray, options, message) -> None:
    with pytest.raises(InputError, match=message):
        drilldown(model, batch[:1], 0, **options)


def test_explain_command(tmp_path, capsys) -> None:
    from PIL import Image

    from cnnviz.cli import main

    path = tmp_path / "shape.png"
    Image.fromarray(make_shapes(1, seed=3).images[0]).save(path)
    argv = ["explain", "shapes", str(path), "--method", "occlusion-drilldown"]
    assert main([*argv, "--precision", "fp32", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "shape-occlusion-drilldown.png").exists()
    assert "positions_scored" in capsys.readouterr().out
    argv = ["explain", "shapes", str(path), "--method", "saliency", "--precision", "bf16"]
    assert main([*argv, "--out", str(tmp_path / "bad")]) == 1
    assert "--precision applies to occlusion, occlusion-drilldown" in capsys.readouterr().err


def test_composes_on_the_incremental_engine(model: Model, batch: np.ndarray, exact) -> None:
    full = drilldown(model, batch, [3, 5], window=8, stride=2, fill="grey", levels=0,
                     engine="incremental")  # fmt: skip
    scale = np.abs(exact.maps).max()
    assert np.abs(full.maps - exact.maps).max() <= 1e-5 * scale
    assert full.options["scorer"]["engine"] == "incremental"
    assert not full.options["scorer"]["approximate"]
    approx = drilldown(model, batch, [3, 5], window=8, stride=2, fill="grey", engine="incremental",
                       tau=0.5, reference=exact)  # fmt: skip
    assert approx.options["scorer"]["approximate"] and approx.options["scorer"]["tau"] == 0.5
    assert 0.5 < approx.metrics["approximation_error"]["map_correlation"] <= 1
