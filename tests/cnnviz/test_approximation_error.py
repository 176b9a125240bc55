"""approximation_error: hand-computed correlations and relative differences on tiny maps,
and its deletion-AUC difference against the deletion curves it is built on."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution import Attribution, occlusion
from cnnviz.attribution.scoring import approximation_error, deletion
from cnnviz.data import make_shapes
from cnnviz_core import InputError


def _maps(*maps: list) -> Attribution:
    array = np.asarray(maps, np.float32)
    return Attribution(array, "occlusion", [], {}, np.zeros((*array.shape, 3), np.uint8))


@pytest.mark.parametrize(
    ("approx", "exact", "correlation", "relative"),
    [
        ([[1, 2], [3, 4]], [[2, 4], [6, 8]], 1.0, 4 / 8),  # scaled: perfect correlation
        ([[1, 0], [0, 1]], [[0, 1], [1, 0]], -1.0, 1.0),  # anti-correlated
        ([[0, 0], [0, 1]], [[0, 0], [1, 1]], 1 / np.sqrt(3), 1.0),  # cov 0.25, var .1875 / .25
        ([[5, 5], [5, 5]], [[5, 5], [5, 5]], 1.0, 0.0),  # equal constant maps
        ([[5, 5], [5, 5]], [[0, 1], [2, 3]], 0.0, 5 / 3),  # constant against varying
    ],
)
def test_hand_computed(approx, exact, correlation, relative) -> None:
    error = approximation_error(_maps(approx), _maps(exact))
    assert error["map_correlation"] == pytest.approx(correlation, abs=1e-12)
    assert error["max_abs_diff_rel"] == pytest.approx(relative, abs=1e-12)
    assert "deletion_auc_diff" not in error


def test_mean_over_images_and_shape_check() -> None:
    error = approximation_error(
        _maps([[1, 2], [3, 4]], [[1, 0], [0, 1]]), _maps([[1, 2], [3, 4]], [[0, 1], [1, 0]])
    )
    assert error["map_correlation"] == pytest.approx(0.0)  # mean of 1 and -1
    with pytest.raises(InputError, match=r"approximate maps \(1, 2, 2\) and exact maps"):
        approximation_error(_maps([[1, 2], [3, 4]]), _maps([[1, 2, 3], [4, 5, 6]]))


def test_deletion_difference_matches_the_curves() -> None:
    model = load_model("shapes")
    batch = model.prepare(make_shapes(2, seed=3).images)
    exact = occlusion(model, batch, [1, 2], window=16, stride=8)
    reversed_ = Attribution(-exact.maps, "occlusion", exact.targets, {}, exact.images)
    error = approximation_error(reversed_, exact, model, batch, steps=8)
    want = deletion(model, reversed_, batch, steps=8).auc
    want = want - deletion(model, exact, batch, steps=8).auc
    assert error["deletion_auc_diff"] == pytest.approx(float(want.mean()), abs=1e-12)
    assert error["deletion_auc_diff"] > 0.1  # least important first: the class survives
    assert error["map_correlation"] == pytest.approx(-1)
    same = approximation_error(exact, exact, model, batch, steps=8)
    assert same["deletion_auc_diff"] == 0 and same["map_correlation"] == pytest.approx(1)
