"""Saliency-based segmentation: the graph cut is a true minimum cut, and on held-out shapes
images the masks beat a centred-box baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution.segmentation import (
    _min_cut,
    _neighbour_edges,
    centred_box,
    graph_cut,
    intersection_over_union,
    segment,
)
from cnnviz.data import make_shapes


def energy(label, cost_fg, cost_bg, edges, weights):
    unary = np.where(label, cost_fg, cost_bg).sum()
    return unary + weights[label[edges[:, 0]] != label[edges[:, 1]]].sum()


@pytest.mark.parametrize("seed", range(4))
def test_min_cut_equals_brute_force_minimum(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    edges, weights = _neighbour_edges(image, smoothness=rng.uniform(0.5, 3))
    cost_fg, cost_bg = rng.uniform(0, 4, 9), rng.uniform(0, 4, 9)
    fg, bg = np.zeros(9, bool), np.zeros(9, bool)
    fg[0], bg[8] = True, True
    ours = _min_cut(9, cost_fg, cost_bg, fg, bg, edges, weights)
    best = min(
        energy(np.array(bits, bool), cost_fg, cost_bg, edges, weights)
        for bits in itertools.product([False, True], repeat=9)
        if bits[0] and not bits[8]
    )
    assert ours[0] and not ours[8]
    assert energy(ours, cost_fg, cost_bg, edges, weights) == pytest.approx(best, abs=1e-2)


def test_graph_cut_separates_a_two_colour_image():
    image = np.zeros((20, 20, 3), np.uint8)
    image[...] = (30, 120, 200)
    image[5:15, 6:14] = (250, 60, 20)
    image = np.clip(image + np.random.default_rng(0).normal(0, 8, image.shape), 0, 255)
    image = image.astype(np.uint8)
    fg = np.zeros((20, 20), bool)
    fg[9:11, 9:11] = True
    bg = np.zeros((20, 20), bool)
    bg[0, :] = True
    truth = np.zeros((20, 20), bool)
    truth[5:15, 6:14] = True
    mask = graph_cut(image, fg, bg)
    assert intersection_over_union(mask[None], truth[None])[0] > 0.95


def test_saliency_segmentation_beats_a_centred_box_on_held_out_shapes():
    model = load_model("shapes")
    data = make_shapes(200, seed=7)  # not the training (1) or held-out (2) seed
    masks = segment(model, list(data.images), list(data.labels), backend="graphcut")
    ours = intersection_over_union(masks, data.masks).mean()
    box = intersection_over_union(np.repeat(centred_box((64, 64))[None], 200, 0), data.masks)
    assert ours > box.mean() + 0.1, (ours, box.mean())


def test_grabcut_backend_when_opencv_is_installed():
    pytest.importorskip("cv2")
    model = load_model("shapes")
    data = make_shapes(8, seed=9)
    masks = segment(model, list(data.images), list(data.labels), backend="grabcut")
    assert masks.shape == (8, 64, 64) and masks.dtype == bool
    assert intersection_over_union(masks, data.masks).mean() > 0.2
