"""Occlusion and crop batch builders and Gram matrices (cnnviz_core.kernels) against the NumPy
references, scalar loops and torch autograd (Gram backward)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core import _native, kernels

# --- occlusion ---------------------------------------------------------------------------------

# (C, H, W), window, positions: inside, clipped on each side, wholly outside, larger than the image.
OCCLUSION_CASES = [
    ((1, 1, 1), (1, 1), [[0, 0], [1, 1]]),
    ((3, 7, 9), (3, 2), [[0, 0], [2, 5], [-2, -1], [6, 8], [-5, 3], [10, 10]]),
    ((2, 5, 4), (8, 8), [[-1, -2], [3, 3]]),
    ((3, 33, 31), (5, 6), [[t, s] for t in range(-4, 33, 7) for s in range(-5, 31, 9)]),
]


def loop_occlusion(image, positions, window, fill):
    """Scalar-loop oracle, independent of the vectorized reference."""
    _, h, w = image.shape
    out = np.repeat(image[None], len(positions), axis=0)
    fa = np.asarray(fill, image.dtype)
    fill_img = fa if fa.ndim == 3 else np.broadcast_to(fa.reshape(-1, 1, 1), image.shape)
    for p, (top, left) in enumerate(positions):
        for y in range(max(top, 0), min(top + window[0], h)):
            for x in range(max(left, 0), min(left + window[1], w)):
                out[p, :, y, x] = fill_img[:, y, x]
    return out


@pytest.mark.parametrize("fill_kind", ["constant", "per_channel", "image"])
@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("case", OCCLUSION_CASES, ids=lambda c: f"{c[0]}-w{c[1]}")
def test_occlusion_matches_loops_and_reference(case, num_threads, fill_kind):
    shape, window, positions = case
    rng = np.random.default_rng(sum(shape))
    image = rng.standard_normal(shape).astype(np.float32)
    fill = {
        "constant": 0.5,
        "per_channel": rng.standard_normal(shape[0]).astype(np.float32),
        "image": rng.standard_normal(shape).astype(np.float32),
    }[fill_kind]
    pos = np.array(positions, np.int64)
    got = kernels.occlusion_batch(image, pos, window, fill, num_threads=num_threads)
    assert got.dtype == np.float32 and got.shape == (len(pos), *shape)
    np.testing.assert_array_equal(got, loop_occlusion(image, pos, window, fill))
    np.testing.assert_array_equal(got, kernels.occlusion_batch_reference(image, pos, window, fill))


def test_occlusion_large_batch_streams_and_writes_into_out():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((3, 101, 99)).astype(np.float32)  # odd planes: unaligned rows
    pos = rng.integers(-10, 100, size=(150, 2))
    out = np.empty((150, 3, 101, 99), np.float32)  # > 16 MiB: the streaming-store path
    got = kernels.occlusion_batch(image, pos, (17, 13), image.mean(axis=(1, 2)), out=out)
    assert got is out
    ref = kernels.occlusion_batch_reference(image, pos, (17, 13), image.mean(axis=(1, 2)))
    np.testing.assert_array_equal(out, ref)


def test_occlusion_float64_uses_reference_and_window_int():
    image = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    got = kernels.occlusion_batch(image, [[1, 1]], 2, -1.0)
    assert got.dtype == np.float64
    assert (got[0, :, 1:3, 1:3] == -1).all() and got[0, 0, 0, 0] == 0


@pytest.mark.parametrize(
    ("image", "positions", "window", "fill", "match"),
    [
        (np.zeros((4, 4), np.float32), [[0, 0]], 2, 0.0, "3-D"),
        (np.zeros((1, 4, 4), np.float32), [[0, 0, 0]], 2, 0.0, r"\(P, 2\)"),
        (np.zeros((1, 4, 4), np.float32), [[0.5, 0]], 2, 0.0, "integers"),
        (np.zeros((2, 4, 4), np.float32), [[0, 0]], 2, np.zeros(3), "fill"),
        (np.zeros((1, 4, 4), np.float32), [[0, 0]], -1, 0.0, "window"),
    ],
)
def test_occlusion_bad_arguments(image, positions, window, fill, match):
    with pytest.raises(ValueError, match=match):
        kernels.occlusion_batch(image, positions, window, fill)


def test_native_occlusion_checks_arrays():
    image = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="fill"):
        _native.occlusion_batch(image, np.zeros((1, 2), np.int64), (2, 2), np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="int64"):
        _native.occlusion_batch(
            image, np.zeros((1, 2), np.int32), (2, 2), np.float32(0).reshape(())
        )


# --- crop batch (incremental occlusion's gather) -----------------------------------------------


def loop_crops(source, corners, size, patch, offsets):
    """Scalar-loop oracle: every output element from the patch where it covers it, else the
    source."""
    c = source.shape[0]
    out = np.empty((len(corners), c, *size), source.dtype)
    for b, (y, x) in enumerate(corners):
        for i in range(size[0]):
            for j in range(size[1]):
                pi, pj = (i - offsets[b][0], j - offsets[b][1]) if patch is not None else (-1, -1)
                inside = patch is not None and 0 <= pi < patch.shape[2] and 0 <= pj < patch.shape[3]
                out[b, :, i, j] = patch[b, :, pi, pj] if inside else source[:, y + i, x + j]
    return out


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("with_patch", [True, False])
def test_crop_batch_matches_loops_and_reference(num_threads, with_patch):
    rng = np.random.default_rng(num_threads)
    source = rng.standard_normal((3, 13, 11), dtype=np.float32)
    size = (5, 4)
    corners = np.array([[0, 0], [8, 7], [4, 3], [0, 7], [8, 0]])
    patch = rng.standard_normal((5, 3, 3, 6), dtype=np.float32) if with_patch else None
    offsets = np.array([[1, -1], [-2, 2], [4, -5], [9, 0], [0, 0]]) if with_patch else None
    want = loop_crops(source, corners, size, patch, offsets)
    got = kernels.crop_batch(source, corners, size, patch, offsets, num_threads=num_threads)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(kernels.crop_batch_reference(source, corners, size, patch,
                                                               offsets), want)  # fmt: skip
    out = np.full((5, 3, *size), np.nan, np.float32)
    assert kernels.crop_batch(source, corners, size, patch, offsets, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_crop_batch_random_shapes_and_float64():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c, h, w = (int(v) for v in rng.integers(1, 9, 3))
        b = int(rng.integers(0, 5))
        size = (int(rng.integers(0, h + 1)), int(rng.integers(0, w + 1)))
        corners = np.stack(
            [rng.integers(0, h - size[0] + 1, b), rng.integers(0, w - size[1] + 1, b)], -1
        )
        patch = rng.standard_normal((b, c, *rng.integers(0, 6, 2)), dtype=np.float32)
        offsets = rng.integers(-6, 9, (b, 2))
        source = rng.standard_normal((c, h, w), dtype=np.float32)
        want = loop_crops(source, corners, size, patch, offsets)
        np.testing.assert_array_equal(
            kernels.crop_batch(source, corners, size, patch, offsets), want
        )
    as64 = kernels.crop_batch(source.astype(np.float64), corners, size)  # the NumPy path
    assert as64.dtype == np.float64
    np.testing.assert_array_equal(as64, loop_crops(source, corners, size, None, None))


@pytest.mark.parametrize(
    ("corners", "size", "patch", "offsets", "match"),
    [
        ([[3, 0]], 2, None, None, "outside"),
        ([[0, -1]], 2, None, None, "outside"),
        ([[0, 0, 0]], 2, None, None, r"\(B, 2\)"),
        ([[0, 0]], -1, None, None, "size"),
        ([[0, 0]], 2, np.zeros((1, 2, 2, 2), np.float32), [[0, 0]], "patch"),
        ([[0, 0]], 2, np.zeros((1, 1, 2, 2), np.float32), None, "offsets"),
        ([[0, 0]], 2, np.zeros((1, 1, 2, 2), np.float32), [[0, 0], [1, 1]], "offsets"),
    ],
)
def test_crop_batch_bad_arguments(corners, size, patch, offsets, match):
    source = np.zeros((1, 4, 4), np.float32)
    for backend in ("native", "numpy"):
        with pytest.raises(ValueError, match=match):
            kernels.crop_batch(source, corners, size, patch, offsets, backend=backend)


def test_native_crop_batch_checks_arrays():
    source = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="outside"):
        _native.crop_batch(source, np.array([[3, 0]], np.int64), (2, 2))
    with pytest.raises(TypeError, match="int64"):
        _native.crop_batch(source, np.zeros((1, 2), np.int32), (2, 2))
    with pytest.raises(ValueError, match="offsets"):
        _native.crop_batch(
            source, np.zeros((1, 2), np.int64), (2, 2), np.zeros((1, 1, 2, 2), np.float32)
        )


# --- Gram --------------------------------------------------------------------------------------

# The last three are large enough for several threads: n long against c (threads split n into
# partial triangles, odd n and c), and n short against c (threads split the triangle's rows).
GRAM_SHAPES = [
    (1, 1, 1),
    (1, 3, 5),
    (2, 13, 77),
    (1, 17, 300),
    (3, 33, 513),
    (1, 70, 1001),
    (2, 37, 7001),
    (1, 50, 9001),
    (1, 300, 200),
]


@pytest.mark.parametrize("num_threads", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", GRAM_SHAPES, ids=str)
def test_gram_matches_float64(shape, num_threads):
    f = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    norm = shape[1] * shape[2]
    got = kernels.gram(f, norm, num_threads=num_threads)
    want = kernels.gram_reference(f.astype(np.float64), norm)
    assert got.dtype == np.float32 and got.shape == (shape[0], shape[1], shape[1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(got, got.transpose(0, 2, 1))


# C > 512 takes the backward's k-blocked path (a second pass accumulates into out).
GRAM_BACKWARD_SHAPES = [*GRAM_SHAPES, (1, 530, 70)]


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("shape", GRAM_BACKWARD_SHAPES, ids=str)
def test_gram_backward_matches_float64(shape, num_threads):
    rng = np.random.default_rng(sum(shape) + 1)
    f = rng.standard_normal(shape).astype(np.float32)
    dg = rng.standard_normal((shape[0], shape[1], shape[1])).astype(np.float32)
    got = kernels.gram_backward(f, dg, shape[2], num_threads=num_threads)
    want = kernels.gram_backward_reference(f.astype(np.float64), dg.astype(np.float64), shape[2])
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_gram_backward_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    f = rng.standard_normal((2, 9, 4, 5))  # (B, C, H, W), float64
    dg = rng.standard_normal((2, 9, 9))
    ft = torch.from_numpy(f).requires_grad_()
    flat = ft.reshape(2, 9, 20)
    (torch.bmm(flat, flat.transpose(1, 2)) / 180.0).backward(torch.from_numpy(dg))
    np.testing.assert_allclose(kernels.gram_backward(f, dg, 180.0), ft.grad.numpy(), rtol=1e-10)
    got32 = kernels.gram_backward(f.astype(np.float32), dg.astype(np.float32), 180.0)
    np.testing.assert_allclose(got32, ft.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_gram_backward_finite_differences():
    rng = np.random.default_rng(6)
    f = rng.standard_normal((1, 3, 7))
    dg = rng.standard_normal((1, 3, 3))

    def loss(x):
        return float((kernels.gram(x, 21.0) * dg).sum())

    grad = kernels.gram_backward(f, dg, 21.0)
    eps = 1e-6
    for idx in np.ndindex(f.shape):
        up, down = f.copy(), f.copy()
        up[idx] += eps
        down[idx] -= eps
        assert abs((loss(up) - loss(down)) / (2 * eps) - grad[idx]) < 1e-6


def test_gram_shapes_2d_4d_and_out():
    f = np.random.default_rng(7).standard_normal((2, 5, 3, 4)).astype(np.float32)
    g4 = kernels.gram(f, 12)
    np.testing.assert_allclose(g4, kernels.gram_reference(f.reshape(2, 5, 12), 12), rtol=1e-5)
    g2 = kernels.gram(f[0].reshape(5, 12), 12)
    assert g2.shape == (5, 5)
    out = np.empty((2, 5, 5), np.float32)
    kernels.gram(f, 12, out=out)
    np.testing.assert_array_equal(out, g4)
    d = kernels.gram_backward(f, np.ones((2, 5, 5), np.float32), 12)
    assert d.shape == f.shape


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: kernels.gram(np.zeros(4, np.float32), 1.0), "features"),
        (lambda: kernels.gram(np.zeros((1, 2, 3), np.float32), 0.0), "norm"),
        (lambda: kernels.gram_backward(np.zeros((1, 2, 3)), np.zeros((1, 3, 3)), 1.0), "grad"),
        (lambda: _native.gram(np.zeros((2, 3), np.float32), 1.0), "3-D"),
        (lambda: _native.gram(np.zeros((1, 2, 3), np.float32), float("nan")), "norm"),
        (
            lambda: _native.gram_backward(
                np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 3), np.float32), 1.0
            ),
            "grad",
        ),
    ],
)
def test_gram_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
