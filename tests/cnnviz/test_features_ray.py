"""engine="ray" (the ``distributed`` extra) on a local 2-CPU Ray instance: embeddings and
top-k patches / images equal the single-machine run exactly."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import cnnviz  # noqa: E402
from cnnviz.data import make_shapes  # noqa: E402
from cnnviz.features import RunningTopK, extract, top_images, top_patches  # noqa: E402
from cnnviz_core import InputError  # noqa: E402

# Ray Data's own deprecation notices about its context's fields (raised inside ray.data.context
# when a Dataset is built)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # someone else's: leave it running
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return cnnviz.load_model("shapes")


@pytest.fixture(scope="module")
def data():
    return make_shapes(96, seed=3)


def _same(local, remote, fields):
    for name in fields:
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)


def test_embeddings_equal_the_local_run(cluster, model, data):
    seen = []
    kwargs = dict(pooling="avg", predictions=True, batch_size=20)
    local = extract(model, data, "relu_2", **kwargs)
    remote = extract(
        model, data, "relu_2", **kwargs, engine="ray", progress=lambda d, t: seen.append((d, t))
    )
    _same(local, remote, ["features", "labels", "predictions"])
    assert remote.names == local.names and remote.features.dtype == np.float32
    assert seen == [(min(n, 96), 96) for n in range(20, 120, 20)]


@pytest.mark.parametrize("distinct", [True, False])
def test_top_patches_equal_the_local_run(cluster, model, data, distinct):
    kwargs = dict(k=6, channels=[0, 3, 5, 17], distinct_images=distinct, batch_size=16)
    local = top_patches(model, data, "relu_2", **kwargs)
    remote = top_patches(model, data, "relu_2", **kwargs, engine="ray")
    _same(local, remote, ["channels", "values", "images", "positions", "windows", "crops"])
    assert remote.kind == local.kind == "patch" and remote.field == local.field


def test_ties_go_to_the_smaller_id_whatever_the_chunking():
    # ReLU layers tie at 0 a lot: the k-th value's ties must not be picked arbitrarily
    rng = np.random.default_rng(0)
    values = np.maximum(rng.standard_normal((3, 500)), 0).astype(np.float32)
    values[1] = 0
    expected = np.lexsort((np.broadcast_to(np.arange(500), values.shape), -values))[:, :40]
    one = RunningTopK(3, 40)
    one.update(values, np.arange(500))
    merged = RunningTopK(3, 40)
    for start in range(0, 500, 70):
        part = RunningTopK(3, 40)
        part.update(values[:, start : start + 70], np.arange(start, min(start + 70, 500)))
        merged.update(part.values, part.ids)
    for top in (one, merged):
        np.testing.assert_array_equal(top.ids[np.arange(3)[:, None], top.sorted_order()], expected)


def test_unknown_engine(model, data):
    with pytest.raises(InputError, match="engine"):
        extract(model, data, "view", engine="spark")
    with pytest.raises(InputError, match="engine"):
        top_images(model, data, "logits", engine="spark")
