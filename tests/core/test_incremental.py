"""Incremental occlusion (Krypton) against the naive one-forward-per-window scorer, which is
the oracle: the exact engine must match it to 1e-5 x max|scores| on the shapes model, a
VGG-like and a ResNet-like graph built here (stride-2, padding, groups, dilation, ceil-mode
max pooling, average pooling with and without counted pads, BN, LRN, residual Add, Concat)
and SqueezeNet; tau mode is approximate and says so; unsupported ops warn or raise."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cnnviz import load_model
from cnnviz_core import InputError, Model, UnsupportedOpError
from cnnviz_core.incremental import IncrementalOcclusion, NaiveOcclusion
from tests.conftest import make_graph_model

RNG = np.random.default_rng(7)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _bn(name: str, x: str, c: int, weights: dict) -> helper.NodeProto:
    weights[f"{name}_s"] = (1 + 0.2 * RNG.standard_normal(c)).astype(np.float32)
    weights[f"{name}_b"] = _w(c, scale=0.1)
    weights[f"{name}_m"] = _w(c, scale=0.1)
    weights[f"{name}_v"] = (1 + RNG.random(c)).astype(np.float32)
    return helper.make_node(
        "BatchNormalization",
        [x, f"{name}_s", f"{name}_b", f"{name}_m", f"{name}_v"],
        [name],
        name,
    )


def vgg_like(size: int = 40) -> Model:
    """Convs (padding, stride 2, depthwise groups, dilation), BN, ReLU, LRN, max pooling
    with ceil mode, average pooling with and without counted pads, GAP and a dense head."""
    w: dict = {
        "w1": _w(8, 3, 3, 3),
        "b1": _w(8),
        "w2": _w(12, 8, 3, 3),
        "w3": _w(12, 1, 3, 3),
        "w4": _w(16, 12, 3, 3),
        "b4": _w(16),
        "w5": _w(16, 16, 1, 1),
        "fc": _w(16, 5),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], "c1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], "r1"),
        n("Conv", ["r1", "w2"], ["c2"], "c2", pads=[1, 0, 1, 1], strides=[2, 2]),
        _bn("bn2", "c2", 12, w),
        n("LeakyRelu", ["bn2"], ["r2"], "r2", alpha=0.1),
        n("MaxPool", ["r2"], ["p2"], "p2", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        n("Conv", ["p2", "w3"], ["c3"], "c3", pads=[1, 1, 1, 1], group=12),
        n("Clip", ["c3", "lo", "hi"], ["r3"], "r3"),
        n("AveragePool", ["r3"], ["a3"], "a3", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Conv", ["a3", "w4", "b4"], ["c4"], "c4", pads=[2, 2, 2, 2], dilations=[2, 2]),
        n("LRN", ["c4"], ["l4"], "l4", size=3),
        n("Relu", ["l4"], ["r4"], "r4"),
        n(
            "AveragePool",
            ["r4"],
            ["a4"],
            "a4",
            kernel_shape=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
            strides=[2, 2],
        ),
        n("Conv", ["a4", "w5"], ["c5"], "c5"),
        n("Sigmoid", ["c5"], ["s5"], "s5"),
        n("GlobalAveragePool", ["s5"], ["g"], "g"),
        n("Flatten", ["g"], ["f"], "f"),
        n("MatMul", ["f", "fc"], ["logits"], "fc"),
    ]
    w["lo"], w["hi"] = np.float32(-0.5), np.float32(2.0)
    proto = make_graph_model(nodes, w, ["N", 3, size, size], "logits")
    return Model(proto.SerializeToString(), name="vgg_like")


def resnet_like(size: int = 48) -> Model:
    """A stem (stride-2 conv, BN, pad-1 max pool), an identity residual block, a stride-2
    block with a 1x1 projection, a fire-like Concat of two branches, GAP and Gemm."""
    w: dict = {
        "s": _w(8, 3, 5, 5),
        "a1": _w(8, 8, 3, 3),
        "a2": _w(8, 8, 3, 3),
        "d1": _w(12, 8, 3, 3),
        "d2": _w(12, 12, 3, 3),
        "dp": _w(12, 8, 1, 1),
        "e1": _w(6, 12, 1, 1),
        "e3": _w(6, 12, 3, 3),
        "fc": _w(4, 12),
        "fcb": _w(4),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "s"], ["stem"], "stem", pads=[2, 2, 2, 2], strides=[2, 2]),
        _bn("stem_bn", "stem", 8, w),
        n("Relu", ["stem_bn"], ["stem_r"], "stem_r"),
        n(
            "MaxPool",
            ["stem_r"],
            ["pool"],
            "pool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        n("Conv", ["pool", "a1"], ["a1c"], "a1c", pads=[1, 1, 1, 1]),
        _bn("a1bn", "a1c", 8, w),
        n("Relu", ["a1bn"], ["a1r"], "a1r"),
        n("Conv", ["a1r", "a2"], ["a2c"], "a2c", pads=[1, 1, 1, 1]),
        _bn("a2bn", "a2c", 8, w),
        n("Add", ["a2bn", "pool"], ["a_add"], "a_add"),
        n("Relu", ["a_add"], ["a_out"], "a_out"),
        n("Conv", ["a_out", "d1"], ["d1c"], "d1c", pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Relu", ["d1c"], ["d1r"], "d1r"),
        n("Conv", ["d1r", "d2"], ["d2c"], "d2c", auto_pad="SAME_UPPER"),
        n("Conv", ["a_out", "dp"], ["dpc"], "dpc", strides=[2, 2]),
        _bn("dpbn", "dpc", 12, w),
        n("Add", ["d2c", "dpbn"], ["d_add"], "d_add"),
        n("Relu", ["d_add"], ["d_out"], "d_out"),
        n("Conv", ["d_out", "e1"], ["e1c"], "e1c"),
        n("Conv", ["d_out", "e3"], ["e3c"], "e3c", pads=[1, 1, 1, 1]),
        n("Concat", ["e1c", "e3c"], ["cat"], "cat", axis=1),
        n("Relu", ["cat"], ["cat_r"], "cat_r"),
        n("GlobalAveragePool", ["cat_r"], ["g"], "g"),
        n("Flatten", ["g"], ["f"], "f"),
        n("Gemm", ["f", "fc", "fcb"], ["logits"], "fc", transB=1),
    ]
    proto = make_graph_model(nodes, w, ["N", 3, size, size], "logits")
    return Model(proto.SerializeToString(), name="resnet_like")


def _positions(size: int, window: int, stride: int) -> np.ndarray:
    """Captum's grid (the last window clipped at the edge) plus two partly outside."""
    tops = np.arange(-(-(size - window) // stride) + 1) * stride
    grid = np.stack(np.meshgrid(tops, tops, indexing="ij"), -1).reshape(-1, 2)
    return np.concatenate([grid, [[-3, size - window + 2], [size - 2, -5]]])


def _check_exact(model: Model, window: int, stride: int, taps=(), **options) -> dict:
    c, size = model.channels, model.input_shape[1]
    image = RNG.standard_normal((c, size, size)).astype(np.float32)
    fill = RNG.standard_normal((c, 1, 1)).astype(np.float32)
    positions = _positions(size, window, stride)
    ours = IncrementalOcclusion(model, window, taps=taps, **options)
    got, got_taps = ours.scores(image, positions, fill, batch_size=7)
    want, want_taps = NaiveOcclusion(model, window, taps=taps).scores(image, positions, fill)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    for name, value in want_taps.items():
        assert np.abs(got_taps[name] - value).max() <= 1e-5 * np.abs(value).max()
    return ours.stats


@pytest.mark.parametrize("threshold", [0.3, 0.6, 1.0])
@pytest.mark.parametrize(("window", "stride"), [(5, 3), (9, 4)])
def test_vgg_like_matches_naive(threshold: float, window: int, stride: int) -> None:
    stats = _check_exact(vgg_like(), window, stride, taps=["r2"], threshold=threshold)
    assert stats["flops_incremental"] < stats["flops_naive"]
    assert not stats["approximate"]
    assert any(layer["mode"] == "incremental" for layer in stats["layers"])


@pytest.mark.parametrize("threshold", [0.3, 1.0])
@pytest.mark.parametrize(("window", "stride"), [(6, 5), (11, 6)])
def test_resnet_like_matches_naive(threshold: float, window: int, stride: int) -> None:
    stats = _check_exact(resnet_like(), window, stride, taps=["d_out"], threshold=threshold)
    assert stats["flops_incremental"] < stats["flops_naive"]
    ops = {layer["op"] for layer in stats["layers"] if layer["mode"] == "incremental"}
    if threshold == 1.0:  # everything up to the global pooling on crops
        assert {"Add+Relu", "Concat+Relu"} <= ops


def test_shapes_model_matches_naive() -> None:
    stats = _check_exact(load_model("shapes"), 8, 4)
    assert stats["switch"] is not None and stats["flops_ratio"] > 1.5


def test_colour_fill_image_matches_naive() -> None:
    """A (C, H, W) fill (the blur fill) pastes the fill image's own pixels."""
    model = vgg_like(32)
    image = RNG.standard_normal((3, 32, 32)).astype(np.float32)
    fill = RNG.standard_normal((3, 32, 32)).astype(np.float32)
    positions = _positions(32, 7, 5)
    got, _ = IncrementalOcclusion(model, 7).scores(image, positions, fill)
    want, _ = NaiveOcclusion(model, 7).scores(image, positions, fill)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_squeezenet_matches_naive(shared_data) -> None:
    model = Model(shared_data / "models" / "squeezenet1.1_fp32.onnx", preprocess="caffe")
    image = model.prepare(str(shared_data / "photos" / "fish.png"))[0]
    positions = np.array([[0, 0], [40, 96], [104, 8], [208, 208], [120, 150]])
    fill = image.mean(axis=(1, 2))
    ours = IncrementalOcclusion(model, 16)
    got, _ = ours.scores(image, positions, fill)
    want, _ = NaiveOcclusion(model, 16).scores(image, positions, fill)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert ours.stats["flops_ratio"] > 1.5


@pytest.mark.parametrize(("tau", "min_corr"), [(0.6, 0.95), (1.0, 1.0 - 1e-9)])
def test_tau_is_approximate_and_close(tau: float, min_corr: float) -> None:
    """Capped regions (Krypton's projective-field threshold) change the drops a little and
    compute fewer FLOPs; tau = 1 caps nothing (the exact result)."""
    size, window = 64, 8
    model = vgg_like(size)
    image = RNG.standard_normal((3, size, size)).astype(np.float32)
    fill = np.zeros((3, 1, 1), np.float32)
    positions = _positions(size, window, 4)[:-2]
    exact = IncrementalOcclusion(model, window, threshold=1.0)
    want, _ = exact.scores(image, positions, fill)
    approx = IncrementalOcclusion(model, window, threshold=1.0, tau=tau)
    got, _ = approx.scores(image, positions, fill)
    assert approx.stats["approximate"] and approx.stats["tau"] == tau
    base, _ = NaiveOcclusion(model, window).scores(image, np.array([[-99, -99]]), fill)
    corr = np.corrcoef((base - want).ravel(), (base - got).ravel())[0, 1]
    assert corr >= min_corr
    if tau < 1:
        assert approx.stats["flops_incremental"] < exact.stats["flops_incremental"]
        assert np.abs(got - want).max() > 1e-4 * np.abs(want).max()  # really approximate


def _with_resize() -> Model:
    """Conv -> Resize (not computable on crops) -> Conv -> GAP."""
    w = {"w1": _w(4, 3, 3, 3), "w2": _w(5, 4, 3, 3), "scales": np.ones(4, np.float32)}
    n = helper.make_node
    nodes = [
        n("Resize", ["x", "", "scales"], ["rs"], "upsample", mode="nearest"),
        n("Conv", ["rs", "w1"], ["c1"], "c1", pads=[1, 1, 1, 1]),
        n("Conv", ["c1", "w2"], ["c2"], "c2"),
        n("GlobalAveragePool", ["c2"], ["g"], "g"),
        n("Flatten", ["g"], ["logits"], "f"),
    ]
    proto = make_graph_model(nodes, w, ["N", 3, 16, 16], "logits")
    return Model(proto.SerializeToString(), name="resize")


def test_unsupported_op_warns_once_and_stays_exact() -> None:
    model = _with_resize()
    ours = IncrementalOcclusion(model, 4)
    image = RNG.standard_normal((3, 16, 16)).astype(np.float32)
    positions = _positions(16, 4, 3)
    with pytest.warns(RuntimeWarning, match="Resize node 'upsample'"):
        got, _ = ours.scores(image, positions, 0.5)
    got2, _ = ours.scores(image, positions, 0.5)  # planned once: no second warning
    want, _ = NaiveOcclusion(model, 4).scores(image, positions, 0.5)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    np.testing.assert_array_equal(got, got2)
    assert ours.stats["blocked"] == ("Resize", "upsample")


def test_strict_raises_on_unsupported_op() -> None:
    with pytest.raises(UnsupportedOpError, match="Resize"):
        IncrementalOcclusion(_with_resize(), 4, strict=True).plan((3, 16, 16))


@pytest.mark.parametrize("scorer", [IncrementalOcclusion, NaiveOcclusion])
def test_empty_positions_are_refused(scorer) -> None:
    image = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(InputError, match="non-empty"):
        scorer(_with_resize(), 4).scores(image, np.zeros((0, 2), np.int64), 0.0)


def test_windows_a_strided_layer_never_sees() -> None:
    """A 1x1 stride-3 convolution skips two of three pixels: a 1-pixel window there changes
    nothing downstream (an empty region, computed as one unchanged value)."""
    w = {"w1": _w(4, 3, 1, 1), "w2": _w(5, 4, 3, 3)}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], "c1", strides=[3, 3]),
        n("Relu", ["c1"], ["r1"], "r1"),
        n("Conv", ["r1", "w2"], ["c2"], "c2", pads=[1, 1, 1, 1]),
        n("GlobalAveragePool", ["c2"], ["g"], "g"),
        n("Flatten", ["g"], ["logits"], "f"),
    ]
    model = Model(make_graph_model(nodes, w, ["N", 3, 12, 12], "logits").SerializeToString())
    image = RNG.standard_normal((3, 12, 12)).astype(np.float32)
    ours = IncrementalOcclusion(model, 1, threshold=1.0)
    for positions in ([[1, 2], [4, 5]], [[1, 1], [1, 2], [4, 5], [0, 0], [11, 10]]):
        got, _ = ours.scores(image, np.array(positions), 0.7)
        want, _ = NaiveOcclusion(model, 1).scores(image, np.array(positions), 0.7)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
        assert ours.stats["layers"][0]["region"] == (1, 1)


def _with_dropout(mask_read: bool) -> Model:
    """Conv -> Dropout (mask output declared; multiplied back in or unread) -> Conv -> GAP."""
    w = {"w1": _w(4, 3, 3, 3), "w2": _w(5, 4, 3, 3)}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], "c1", pads=[1, 1, 1, 1]),
        n("Dropout", ["c1"], ["d1", "mask"], "drop"),
        n("Conv", ["dm" if mask_read else "d1", "w2"], ["c2"], "c2", pads=[1, 1, 1, 1]),
        n("GlobalAveragePool", ["c2"], ["g"], "g"),
        n("Flatten", ["g"], ["logits"], "f"),
    ]
    if mask_read:
        nodes[2:2] = [
            n("Cast", ["mask"], ["mf"], "cast", to=1),
            n("Mul", ["d1", "mf"], ["dm"], "mul"),
        ]
    proto = make_graph_model(nodes, w, ["N", 3, 24, 24], "logits")
    return Model(proto.SerializeToString(), name="dropout")


@pytest.mark.parametrize("mask_read", [False, True])
def test_dropout_mask_nobody_reads_stays_incremental(mask_read: bool) -> None:
    """An inference Dropout is the identity: with its mask output unread it is fused into the
    conv before it (SqueezeNet's fire9/concat_2); a mask something reads is a second output
    the crops cannot give, so the network runs in full from there (and stays exact)."""
    if mask_read:
        with pytest.warns(RuntimeWarning, match="Dropout node 'drop'.*several outputs"):
            stats = _check_exact(_with_dropout(mask_read), 5, 3, threshold=1.0)
    else:
        stats = _check_exact(_with_dropout(mask_read), 5, 3, threshold=1.0)
    modes = {layer["node"]: layer["mode"] for layer in stats["layers"]}
    if mask_read:
        assert modes["drop"] == "full" and stats["blocked"] == ("Dropout", "drop")
    else:
        assert "drop" not in modes and modes["c2"] == "incremental"  # fused into c1's step
        assert stats["blocked"] is None


@pytest.mark.parametrize(("op", "keepdims"), [("GlobalAveragePool", 1), ("ReduceMean", 1),
                                              ("ReduceMean", 0)])  # fmt: skip
def test_spatial_mean_head_updates_by_region(op: str, keepdims: int) -> None:
    """The classifier's spatial mean is updated from each window's region (map sum - old
    region + new region) instead of materializing the maps; the scores stay exact, with
    and without tau."""
    w = {"w1": _w(6, 3, 3, 3), "w2": _w(7, 6, 3, 3), "fc": _w(7, 4), "axes": np.array([2, 3])}
    n = helper.make_node
    mean = (
        n("GlobalAveragePool", ["r2"], ["g"], "mean")
        if op == "GlobalAveragePool"
        else n("ReduceMean", ["r2", "axes"], ["g"], "mean", keepdims=keepdims)
    )
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], "c1", pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Relu", ["c1"], ["r1"], "r1"),
        n("Conv", ["r1", "w2"], ["c2"], "c2", pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["r2"], "r2"),
        mean,
        n("Flatten", ["g"], ["f"], "f"),
        n("MatMul", ["f", "fc"], ["logits"], "fc"),
    ]
    model = Model(make_graph_model(nodes, w, ["N", 3, 32, 32], "logits").SerializeToString())
    stats = _check_exact(model, 6, 4, taps=["g"], threshold=1.0)
    modes = {layer["node"]: layer["mode"] for layer in stats["layers"]}
    assert modes["mean"] == "incremental" and modes["f"] == "full"
    approx = IncrementalOcclusion(model, 6, taps=["g"], threshold=1.0, tau=0.5)
    image = RNG.standard_normal((3, 32, 32)).astype(np.float32)
    got, taps = approx.scores(image, _positions(32, 6, 4), 0.0)
    assert np.isfinite(got).all() and taps["g"].shape[1] == 7


def test_subsets_of_a_planned_grid_reuse_its_plan() -> None:
    """Drill-down scores subsets of the grid it planned: the grid's plan serves them (no new
    plan, no first runs of new crop shapes), and the scores stay exact."""
    model = vgg_like(40)
    image = RNG.standard_normal((3, 40, 40)).astype(np.float32)
    grid = _positions(40, 9, 4)[:-2]
    ours = IncrementalOcclusion(model, 9)
    ours.plan(image.shape, grid)
    subset = grid[::5]
    got, _ = ours.scores(image, subset, 0.0)
    assert len(ours._prepared) == 1
    want, _ = NaiveOcclusion(model, 9).scores(image, subset, 0.0)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    ours.scores(image, np.array([[1, 2]]), 0.0)  # a start the grid lacks: a plan of its own
    assert len(ours._prepared) == 2
