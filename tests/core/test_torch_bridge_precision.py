"""bf16 occlusion scorer: float32 onnxruntime scores as the oracle (within bf16 rounding),
its probe reports the error it has, and drill-down / occlusion maps made with it stay close
to exact."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from cnnviz import load_model
from cnnviz.attribution import occlusion
from cnnviz.attribution.drilldown import drilldown
from cnnviz.attribution.occlusion import occlusion_scorer
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model
from cnnviz_core.incremental import NaiveOcclusion
from cnnviz_core.torch_bridge.precision import Bf16Occlusion


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def batch(model: Model) -> np.ndarray:
    return model.prepare(make_shapes(2, seed=5).images)


@pytest.mark.parametrize("fill", [0.0, np.array([0.1, -0.2, 0.3], np.float32), "image"])
def test_scores_match_float32_within_bf16(model: Model, batch: np.ndarray, fill) -> None:
    image = batch[0]
    if isinstance(fill, str):
        fill = image[::-1].copy()  # a (C, H, W) fill
    positions = np.array([[0, 0], [8, 16], [40, 56], [-4, 60], [60, -3]])
    scorer = Bf16Occlusion(model, (8, 12), taps=["relu_3"], probe=3)
    scores, taps = scorer.scores(image, positions, fill, batch_size=2)
    exact, exact_taps = NaiveOcclusion(model, (8, 12), taps=["relu_3"]).scores(
        image, positions, fill
    )
    scale = np.abs(exact).max()
    diff = np.abs(scores - exact).max() / scale
    assert 1e-5 < diff < 3e-2  # really bf16 (not float32), within its rounding
    assert scores.dtype == np.float64 and scores.shape == exact.shape
    relu = exact_taps[model.tensor_name("relu_3")]
    assert taps[model.tensor_name("relu_3")].shape == relu.shape
    # the probe re-scores 3 of the windows in float32: its error is the error there
    stats = scorer.stats
    assert stats["precision"] == "bf16" and stats["probe_positions"] == 3
    picked = np.array([0, 2, 4])
    assert stats["probe_max_abs_diff_rel"] == pytest.approx(
        np.abs(scores[picked] - exact[picked]).max() / np.abs(exact[picked]).max(), rel=1e-6
    )
    assert scorer.approximate


def test_maps_stay_close_and_report_their_error(model: Model, batch: np.ndarray) -> None:
    exact = occlusion(model, batch, [1, 4], window=8, stride=4)
    approx = drilldown(model, batch, [1, 4], window=8, stride=4, levels=0, precision="bf16",
                       reference=exact)  # fmt: skip
    error = approx.metrics["approximation_error"]
    assert error["map_correlation"] > 0.99
    assert error["max_abs_diff_rel"] < 0.05
    assert abs(error["deletion_auc_diff"]) < 0.05
    assert approx.options["scorer"]["precision"] == "bf16"


def test_bad_probe_and_precision(model: Model) -> None:
    with pytest.raises(InputError, match="probe must be >= 0"):
        Bf16Occlusion(model, 8, probe=-1)
    grid = np.zeros((1, 2), np.int64)
    with pytest.raises(InputError, match="unknown precision 'fp16'"):
        occlusion_scorer(model, (8, 8), [], (3, 64, 64), grid, precision="fp16")
    with pytest.raises(InputError, match="precision='bf16' runs whole forwards"):
        occlusion_scorer(model, (8, 8), [], (3, 64, 64), grid, engine="incremental",
                         precision="bf16")  # fmt: skip
    with pytest.raises(InputError, match=r"image must be \(C, H, W\)"):
        Bf16Occlusion(model, 8).scores(np.zeros((64, 64), np.float32), np.zeros((1, 2)), 0.0)
    with pytest.raises(InputError, match="non-empty"):
        Bf16Occlusion(model, 8).scores(np.zeros((3, 64, 64), np.float32), np.zeros((0, 2)), 0.0)


def test_occlusion_in_bf16_reports_its_error(model: Model, batch: np.ndarray) -> None:
    exact = occlusion(model, batch, [1, 4], window=8, stride=4, engine="naive")
    approx = occlusion(model, batch, [1, 4], window=8, stride=4, precision="bf16",
                       reference=exact)  # fmt: skip
    assert approx.options["precision"] == "bf16" and approx.options["approximate"]
    assert approx.metrics["scorer"]["precision"] == "bf16"
    error = approx.metrics["approximation_error"]
    assert error["map_correlation"] > 0.99
    scale = np.abs(exact.maps).max()
    assert 0 < np.abs(approx.maps - exact.maps).max() < 0.05 * scale  # bf16, and close
