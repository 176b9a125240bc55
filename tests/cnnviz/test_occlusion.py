"""Occlusion: Captum's Occlusion as the oracle on a torch twin of the shipped shapes model,
a NumPy float64 loop as a second reference, Z&F figure 7 extras, fills, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution import Channel, occlusion
from cnnviz.attribution.perturbation import fill_values, window_positions
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model, TargetError, UnsupportedOpError

N = 2


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def batch(model: Model) -> np.ndarray:
    return model.prepare(make_shapes(N, seed=11).images)


def _twin(model: Model):
    """The shapes model in torch.nn.functional from the ONNX weights."""
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    c = {k: torch.from_numpy(v.copy()) for k, v in model.constants.items()}

    def forward(x):
        for k in range(1, 5):
            x = f.relu(
                f.conv2d(x, c[f"features.conv{k}.weight"], c[f"features.conv{k}.bias"], padding=1)
            )
            if k < 4:
                x = f.max_pool2d(x, 2)
        return f.linear(x.mean(dim=(2, 3)), c["classifier.weight"], c["classifier.bias"])

    return torch, forward


@pytest.mark.parametrize(
    ("window", "stride", "fill", "output"),
    [
        (8, 4, "grey", "logit"),
        (11, 5, "zeros", "probability"),  # last window clipped at the edge
        ((7, 12), (3, 6), "blur", "logit"),  # per-axis window and stride, fill image
    ],
)
def test_equals_captum(model: Model, batch: np.ndarray, window, stride, fill, output) -> None:
    pytest.importorskip("captum")
    from captum.attr import Occlusion

    torch, forward = _twin(model)
    fn = forward if output == "logit" else (lambda x: torch.softmax(forward(x), dim=1))
    targets = [3, 5]
    ours = occlusion(model, batch, targets, window=window, stride=stride, fill=fill, output=output)
    wh, ww = (window, window) if isinstance(window, int) else window
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    fills = fill_values(model, batch, fill)
    for i in range(N):
        base = (
            fills[i]
            if fills.ndim == 4
            else np.broadcast_to(fills[i][:, None, None], batch.shape[1:])
        )
        x = torch.from_numpy(batch[i : i + 1].astype(np.float64))
        theirs = Occlusion(lambda t: fn(t.float()).double()).attribute(
            x,
            sliding_window_shapes=(3, wh, ww),
            strides=(3, sh, sw),
            baselines=torch.from_numpy(np.ascontiguousarray(base, np.float64))[None],
            target=targets[i],
        )
        theirs = theirs.numpy()[0]
        np.testing.assert_allclose(theirs[0], theirs[2])  # same map on every channel
        scale = np.abs(theirs).max()
        diff = np.abs(ours.maps[i] - theirs[0]).max()
        assert diff <= 1e-5 * scale, (diff, scale)


def test_float64_reference_loop(model: Model, batch: np.ndarray) -> None:
    """Per window: occlude, score, add the drop to the covered pixels; divide by counts."""
    window, stride = 9, 6
    result = occlusion(model, batch[:1], 2, window=window, stride=stride, fill="mean")
    x = batch[0]
    fill = x.mean(axis=(1, 2))
    base = model.scores(x[None])[0, 2]
    total = np.zeros(x.shape[1:])
    count = np.zeros(x.shape[1:])
    tops, lefts = window_positions(x.shape[1:], (window, window), (stride, stride))
    for t in tops:
        for left in lefts:
            occluded = x.copy()
            occluded[:, t : t + window, left : left + window] = fill[:, None, None]
            drop = base - model.scores(occluded[None])[0, 2]
            total[t : t + window, left : left + window] += drop
            count[t : t + window, left : left + window] += 1
    expected = total / count
    assert np.abs(result.maps[0] - expected).max() <= 1e-5 * np.abs(expected).max()
    grid = result.extras["grid"][0]
    assert grid.shape == (len(tops), len(lefts))


def test_extras_and_several_targets(model: Model, batch: np.ndarray) -> None:
    calls = []
    result = occlusion(
        model,
        batch,
        None,
        window=16,
        stride=8,
        fill="blur",  # a grey 16x16 patch on shapes reads as a "square"
        classes=[0, "star"],
        feature_layer="relu_3",
        batch_size=10,
        progress=lambda done, total: calls.append((done, total)),
    )
    ph = len(window_positions((64, 64), (16, 16), (8, 8))[0])
    assert result.extras["activation"].shape == (N, ph, ph)
    assert result.extras["label"].shape == (N, ph, ph)
    assert result.extras["class_drops"].shape == (N, 2, 64, 64)
    assert calls[-1] == (N * ph * ph, N * ph * ph) and len(calls) > N
    # one pass, several targets: the extra class maps equal separate runs
    for j, k in enumerate([0, 3]):
        alone = occlusion(model, batch, k, window=16, stride=8, fill="blur")
        np.testing.assert_allclose(result.extras["class_drops"][:, j], alone.maps, atol=1e-5)
    # the label map: the unoccluded prediction where the window misses the object
    predicted = model.scores(batch).argmax(axis=1)
    for i in range(N):
        assert (result.extras["label"][i] == predicted[i]).mean() > 0.5
    # the strongest channel by default, its activation drops when the object is hidden
    acts = model.run(batch, taps=["relu_3"], outputs=False)["relu_3"]
    strongest = acts.sum(axis=(2, 3)).argmax(axis=1)
    np.testing.assert_array_equal(result.extras["feature_channel"], strongest)
    # probability and logit drops both present, logit by default
    np.testing.assert_array_equal(result.maps, result.extras["logit_drop"])


def test_channel_target_and_memory_bound(model: Model, batch: np.ndarray) -> None:
    small = Model(model.proto.SerializeToString(), memory_budget=1 << 20)
    assert small.max_batch < 64
    a = occlusion(small, batch, Channel("relu_3", 4), window=8, stride=8)
    b = occlusion(model, batch, Channel("relu_3", 4), window=8, stride=8)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)
    assert "probability_drop" not in a.extras


def test_interrupt_propagates(model: Model, batch: np.ndarray) -> None:
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        occlusion(model, batch, 0, progress=stop)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"window": 65}, InputError, "fit the 64x64"),
        ({"window": (8, 70)}, InputError, "fit the"),
        ({"window": 0}, InputError, "at least 1"),
        ({"stride": 0}, InputError, "stride must be >= 1"),
        ({"stride": (2, 0)}, InputError, "stride must be >= 1"),
        ({"fill": np.zeros((3, 10, 10))}, InputError, "fill array must have shape"),
        ({"fill": "purple"}, InputError, "unknown fill"),
        ({"output": "odds"}, InputError, "unknown output"),
        ({"target": 8}, TargetError, "out of range"),
        ({"classes": [9]}, TargetError, "out of range"),
        ({"engine": "fast"}, InputError, "unknown engine"),
        ({"engine": "naive", "tau": 0.5}, InputError, "tau=0.5"),
        ({"tau": 1.5}, InputError, "in \\(0, 1\\]"),
    ],
)
def test_bad_input_before_work(model: Model, batch: np.ndarray, options, error, message) -> None:
    calls = []
    options = {"target": 0, **options}
    target = options.pop("target")
    with pytest.raises(error, match=message):
        occlusion(model, batch, target, progress=lambda d, t: calls.append(d), **options)
    assert not calls


@pytest.mark.parametrize("fill", ["blur", "grey"])
def test_incremental_engine_equals_naive(model: Model, batch: np.ndarray, fill: str) -> None:
    """Krypton's exact incremental inference: every map and extra equals the naive pass."""
    options = dict(
        window=12, stride=5, fill=fill, classes=[1, "star"], feature_layer="relu_2", batch_size=9
    )
    calls: list[tuple[int, int]] = []
    inc = occlusion(
        model,
        batch,
        None,
        engine="incremental",
        progress=lambda d, t: calls.append((d, t)),
        **options,
    )
    naive = occlusion(model, batch, None, engine="naive", **options)
    assert inc.options["engine"] == "incremental" and naive.options["engine"] == "naive"
    assert not inc.options["approximate"]
    scale = np.abs(naive.maps).max()
    assert np.abs(inc.maps - naive.maps).max() <= 1e-5 * scale
    for key in ("class_drops", "activation", "probability_drop", "grid"):
        assert (
            np.abs(inc.extras[key] - naive.extras[key]).max()
            <= 1e-5 * np.abs(naive.extras[key]).max()
        )
    np.testing.assert_array_equal(inc.extras["feature_channel"], naive.extras["feature_channel"])
    assert inc.metrics["flop_ratio"] > 1.5 and inc.metrics["flops_computed"] > 0
    total = N * len(naive.extras["positions_y"]) * len(naive.extras["positions_x"])
    assert calls[-1] == (total, total) and len(calls) > N
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_auto_picks_incremental_and_tau_is_recorded(model: Model, batch: np.ndarray) -> None:
    auto = occlusion(model, batch, 2, window=8, stride=4)
    assert auto.options["engine"] == "incremental" and auto.options["tau"] is None
    approx = occlusion(model, batch, 2, window=8, stride=4, tau=0.5)
    assert approx.options["approximate"] and approx.options["tau"] == 0.5
    assert approx.metrics["flops_computed"] < auto.metrics["flops_computed"]
    corr = np.corrcoef(approx.maps.ravel(), auto.maps.ravel())[0, 1]
    assert 0.5 < corr < 1.0 - 1e-6


def _resize_first() -> Model:
    """Resize (not computable on crops) before the convolutions."""
    from onnx import helper

    from tests.conftest import make_graph_model

    rng = np.random.default_rng(3)
    w = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "scales": np.ones(4, np.float32),
        "fc": rng.standard_normal((4, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["rs"], "upsample", mode="nearest"),
        helper.make_node("Conv", ["rs", "w1"], ["c1"], "c1", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c1"], ["g"], "g"),
        helper.make_node("Flatten", ["g"], ["f"], "f"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], "fc"),
    ]
    proto = make_graph_model(nodes, w, ["N", 3, 16, 16], "logits")
    return Model(proto.SerializeToString(), name="resize")


def test_unsupported_graph_auto_is_naive_incremental_raises() -> None:
    model = _resize_first()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    auto = occlusion(model, x, 1, window=4, stride=4)  # silently naive (warnings are errors)
    assert auto.options["engine"] == "naive" and not auto.metrics
    with pytest.raises(UnsupportedOpError, match="Resize node 'upsample'"):
        occlusion(model, x, 1, window=4, stride=4, engine="incremental")
