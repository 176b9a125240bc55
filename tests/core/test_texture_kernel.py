"""The Efros-Leung neighbourhood search (native kernel) against its NumPy reference: distances on
odd shapes, masks and batches, the (1 + epsilon) pick, exact copies and ties, threads, and bad
arguments."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core import _native, kernels


def _case(c: int, h: int, w: int, kh: int, kw: int, batch: int, seed: int):
    """A float32 sample, queries with NaN at the unknown taps, and Gaussian-times-mask weights
    (about half the taps known, tap (0, 0) always)."""
    rng = np.random.default_rng(seed)
    sample = rng.random((c, h, w), dtype=np.float32)
    queries = rng.random((batch, c, kh, kw), dtype=np.float32)
    known = rng.random((batch, kh, kw)) < 0.5
    known[:, 0, 0] = True
    yy, xx = np.mgrid[:kh, :kw] - np.array([kh // 2, kw // 2])[:, None, None]
    gauss = np.exp(-(yy**2 + xx**2) / (2 * (max(kh, kw) / 6.4) ** 2))
    weights = (gauss * known).astype(np.float32)
    queries[np.broadcast_to(~known[:, None], queries.shape)] = np.nan
    return sample, queries, weights


SHAPES = [
    # c, h, w, kh, kw, batch
    (3, 13, 17, 5, 3, 3),
    (1, 9, 11, 3, 5, 1),
    (2, 8, 8, 1, 1, 2),
    (3, 7, 70, 3, 3, 2),
    (3, 11, 11, 11, 11, 2),
    (4, 20, 9, 7, 7, 1),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_distances_match_reference(shape: tuple[int, ...]) -> None:
    sample, queries, weights = _case(*shape, seed=sum(shape))
    got = kernels.texture_distances(sample, queries, weights, "native")
    want = kernels.texture_distances_reference(
        sample.astype(np.float64), queries.astype(np.float64), weights
    )
    _, h, w, kh, kw, batch = shape
    assert got.dtype == np.float32 and got.shape == (batch, h - kh + 1, w - kw + 1)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_single_query_and_numpy_backend() -> None:
    sample, queries, weights = _case(3, 12, 10, 5, 5, 1, seed=1)
    native = kernels.texture_distances(sample, queries[0], weights[0])
    numpy = kernels.texture_distances(sample, queries[0], weights[0], "numpy")
    assert native.shape == numpy.shape == (8, 6)
    np.testing.assert_allclose(native, numpy, rtol=2e-5, atol=1e-6)
    # float64 inputs run the reference under "auto"
    assert (
        kernels.texture_distances(sample.astype(np.float64), queries, weights).dtype == np.float64
    )


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.5, 3.0])
def test_match_picks_like_reference(epsilon: float) -> None:
    sample, queries, weights = _case(3, 19, 23, 5, 5, 6, seed=7)
    uniforms = np.array([0.0, 0.2, 0.5, 0.77, 0.999, 1.0])
    got = kernels.texture_match(sample, queries, weights, epsilon, uniforms, "native")
    want = kernels.texture_match_reference(
        sample.astype(np.float64), queries.astype(np.float64), weights, epsilon, uniforms
    )
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_array_equal(got.candidates, want.candidates)
    np.testing.assert_allclose(got.best, want.best, rtol=2e-5)
    np.testing.assert_allclose(got.distance, want.distance, rtol=2e-5)
    assert (got.distance <= got.best * (1 + epsilon) * (1 + 1e-6)).all()
    if epsilon >= 0.5:
        assert (got.candidates > 1).any()  # the pick really chooses among several


def test_match_finds_an_exact_copy() -> None:
    rng = np.random.default_rng(3)
    sample = rng.random((3, 30, 26), dtype=np.float32)
    k, spots = 7, [(0, 0), (23, 19), (11, 4)]
    queries = np.stack([sample[:, y : y + k, x : x + k] for y, x in spots])
    _, _, weights = _case(3, 30, 26, k, k, len(spots), seed=4)
    m = kernels.texture_match(sample, queries, weights, 0.0, 0.5)
    pw = 26 - k + 1
    assert m.index.tolist() == [y * pw + x for y, x in spots]
    assert (m.best == 0).all() and (m.distance == 0).all() and (m.candidates == 1).all()


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_exact_ties_are_picked_uniformly_by_u(backend: str) -> None:
    # A sample of period 4 along x: every window 4 columns apart is the same, distance 0.
    rng = np.random.default_rng(5)
    tile = rng.random((3, 9, 4), dtype=np.float32)
    sample = np.ascontiguousarray(np.tile(tile, (1, 1, 5)))  # (3, 9, 20)
    k = 5
    query = sample[:, 2 : 2 + k, 3 : 3 + k].copy()
    weights = np.ones((k, k), np.float32)
    pw = 20 - k + 1
    zeros = [2 * pw + x for x in range(3, pw, 4)]  # x = 3, 7, 11, 15
    for i, u in enumerate([0.0, 0.3, 0.6, 0.99]):
        m = kernels.texture_match(sample, query, weights, 0.0, u, backend)
        assert m.candidates[0] == len(zeros) and m.best[0] == 0
        assert m.index[0] == zeros[i]


def test_threads_give_identical_distances() -> None:
    # Large enough for the native kernel to split the candidates over threads.
    sample, queries, weights = _case(3, 100, 100, 11, 11, 3, seed=9)
    runs = [kernels.texture_distances(sample, queries, weights, num_threads=t) for t in (1, 2, 3)]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)


def test_empty_batch() -> None:
    sample, queries, weights = _case(3, 8, 8, 3, 3, 1, seed=2)
    d = kernels.texture_distances(sample, queries[:0], weights[:0])
    assert d.shape == (0, 6, 6)
    m = kernels.texture_match(sample, queries[:0], weights[:0], 0.1, np.zeros(0))
    assert m.index.shape == (0,)
    r = kernels.texture_match_reference(sample, queries[:0], weights[:0], 0.1, np.zeros(0))
    assert r.index.shape == (0,)


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_matcher_agrees_with_texture_match(backend: str) -> None:
    sample, queries, weights = _case(3, 16, 18, 5, 5, 4, seed=11)
    match = kernels.texture_matcher(sample, 0.2, backend)
    for b, u in enumerate([0.1, 0.4, 0.8, 1.0]):
        want = kernels.texture_match(sample, queries[b], weights[b], 0.2, u, backend)
        index, distance = match(queries[b], weights[b], u)
        assert index == want.index[0]
        assert distance == pytest.approx(float(want.distance[0]), rel=1e-6)


BAD = [
    ("sample 2-D", lambda s, q, w: kernels.texture_distances(s[0], q, w), "3-D"),
    ("channels", lambda s, q, w: kernels.texture_distances(s[:2], q, w), "channels"),
    ("weights shape", lambda s, q, w: kernels.texture_distances(s, q, w[:, :2]), "weights"),
    ("window too big", lambda s, q, w: kernels.texture_distances(s[:, :4], q, w), "fit"),
    ("negative weight", lambda s, q, w: kernels.texture_distances(s, q, -w), ">= 0"),
    ("no known tap", lambda s, q, w: kernels.texture_distances(s, q, 0 * w), "no known tap"),
    ("negative weight ref", lambda s, q, w: kernels.texture_distances(s, q, -w, "numpy"), ">= 0"),
    (
        "no known tap ref",
        lambda s, q, w: kernels.texture_distances(s, q, 0 * w, "numpy"),
        "no known tap",
    ),
    ("epsilon", lambda s, q, w: kernels.texture_match(s, q, w, -0.1), "epsilon"),
    ("u > 1", lambda s, q, w: kernels.texture_match(s, q, w, 0.1, 1.5), "uniforms"),
    ("u count", lambda s, q, w: kernels.texture_match(s, q, w, 0.1, [0.1, 0.2]), "uniforms"),
    ("backend", lambda s, q, w: kernels.texture_match(s, q, w, 0.1, 0.5, "gpu"), "backend"),
    (
        "native float64",
        lambda s, q, w: kernels.texture_match(s.astype(np.float64), q, w, 0.1, 0.5, "native"),
        "float32",
    ),
    ("threads", lambda s, q, w: kernels.texture_distances(s, q, w, num_threads=-1), "num_threads"),
    ("matcher epsilon", lambda s, q, w: kernels.texture_matcher(s, float("nan")), "epsilon"),
]


@pytest.mark.parametrize("name, call, message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise(name: str, call, message: str) -> None:
    sample, queries, weights = _case(3, 8, 8, 5, 5, 1, seed=12)
    with pytest.raises(ValueError, match=message):
        call(sample, queries, weights)


def test_binding_checks_dtypes_and_shapes() -> None:
    sample, queries, weights = _case(3, 8, 8, 3, 3, 1, seed=13)
    u = np.zeros(1)
    with pytest.raises(TypeError, match="sample must have dtype float32"):
        _native.texture_match(sample.astype(np.float64), queries, weights, 0.1, u)
    with pytest.raises(TypeError, match="uniforms must have dtype float64"):
        _native.texture_match(sample, queries, weights, 0.1, u.astype(np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _native.texture_distances(sample[:, :, ::2], queries, weights)
    with pytest.raises(ValueError, match=r"weights must have shape \(B, kh, kw\)"):
        _native.texture_distances(sample, queries, weights[:, :2])
    with pytest.raises(ValueError, match="out must have shape"):
        _native.texture_distances(sample, queries, weights, out=np.zeros((1, 5, 5), np.float32))
    assert _native.texture_kernel_name() in ("avx512", "avx2", "generic")
