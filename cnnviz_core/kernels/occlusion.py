"""The occlusion batch builder and the crop batch builder of incremental occlusion
(csrc/cpu/occlusion.cpp, csrc/cuda/occlusion.cu)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from ..geometry import IntPair, pair
from ._dispatch import (
    Backend,
    FloatArray,
    IndexArray,
    _native,
    c_contiguous,
    cuda_run,
    index_pairs,
    run,
)

Fill: TypeAlias = "float | ArrayLike"


def occlusion_batch(
    image: ArrayLike,
    positions: ArrayLike,
    window: IntPair,
    fill: Fill = 0.0,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    device: str = "cpu",
) -> FloatArray:
    """The batch of occluded copies of one image that occlusion sensitivity feeds to a model
    (Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional Networks").

    Output image p is ``image`` with rows [top, top + h) and columns [left, left + w) replaced
    by the fill, (top, left) = ``positions[p]``; windows are clipped to the image (a position
    may lie partly or wholly outside it).

    Args:
        image: (C, H, W).
        positions: integers (P, 2), the (top, left) corner of each window.
        window: (h, w) of the window, or an int for a square one.
        fill: a number (constant fill), a (C,) vector (e.g. the per-channel mean) or a
            (C, H, W) fill image (e.g. a blurred copy of ``image``).
        backend, out, num_threads, device: as in :func:`~cnnviz_core.kernels.relu_backward`.

    Returns:
        (P, C, H, W) in the promoted float dtype of image and fill (``out`` when given).
    """
    ia, pa, fa, win = _occlusion_args(image, positions, window, fill, "occlusion_batch")
    shape = (pa.shape[0], *ia.shape)
    c, h, w = ia.shape
    kind = {0: "constant", 1: "per_channel"}.get(fa.ndim, "image")
    return run(
        "occlusion_batch",
        ia.dtype,
        backend,
        device,
        out,
        shape,
        native=lambda o: _native.occlusion_batch(
            c_contiguous(ia),
            c_contiguous(pa),
            win,
            c_contiguous(fa),
            out=o,
            num_threads=num_threads,
        ),
        reference=lambda: occlusion_batch_reference(ia, pa, win, fa),
        cuda=lambda: cuda_run(
            "occlusion_batch",
            device,
            [ia, pa, fa],
            [(shape, np.float32)],
            lambda cuda, i, o, s: cuda.occlusion_batch(
                i[0], c, h, w, i[1], len(pa), win[0], win[1], i[2], kind, o[0], s
            ),
        ),
    )


def occlusion_batch_reference(
    image: ArrayLike, positions: ArrayLike, window: IntPair, fill: Fill = 0.0
) -> FloatArray:
    """NumPy reference of :func:`occlusion_batch` (the test oracle): a window mask per position,
    then one ``np.where``."""
    ia, pa, fa, (wh, ww) = _occlusion_args(image, positions, window, fill, "occlusion_batch")
    _, h, w = ia.shape
    top, left = pa[:, 0, None], pa[:, 1, None]
    rows = (np.arange(h) >= top) & (np.arange(h) < top + wh)  # (P, H)
    cols = (np.arange(w) >= left) & (np.arange(w) < left + ww)  # (P, W)
    inside = rows[:, None, :, None] & cols[:, None, None, :]  # (P, 1, H, W)
    fill_b = fa if fa.ndim != 1 else fa[:, None, None]
    return np.where(inside, fill_b, ia).astype(ia.dtype, copy=False)


def _occlusion_args(
    image: ArrayLike, positions: ArrayLike, window: IntPair, fill: Fill, fn: str
) -> tuple[FloatArray, IndexArray, FloatArray, tuple[int, int]]:
    ia = np.asarray(image)
    fa = np.asarray(fill)
    # a scalar fill takes the image's dtype (a Python float must not promote float32 to float64)
    dtype = np.result_type(ia.dtype, np.float32, *([fa.dtype] if fa.ndim else []))
    if dtype.kind != "f" or fa.dtype.kind not in "fiub":
        raise ValueError(f"{fn}: image and fill must be real numbers, got {ia.dtype}, {fa.dtype}")
    ia, fa = ia.astype(dtype, copy=False), fa.astype(dtype, copy=False)
    if ia.ndim != 3:
        raise ValueError(f"{fn}: image must be 3-D (C, H, W), got shape {ia.shape}")
    if fa.shape not in ((), (ia.shape[0],), ia.shape):
        raise ValueError(
            f"{fn}: fill must be a number, ({ia.shape[0]},) per channel or the image shape "
            f"{ia.shape}, got shape {fa.shape}"
        )
    pa = index_pairs(positions, fn, "positions", "(P, 2) (top, left)")
    win = pair(window, "window")
    if min(win) < 0:
        raise ValueError(f"{fn}: window must be >= 0, got {win}")
    return ia, pa, fa, win


def crop_batch(
    source: ArrayLike,
    corners: ArrayLike,
    size: IntPair,
    patch: ArrayLike | None = None,
    offsets: ArrayLike | None = None,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Crops of one map, each with its own patch written over it: incremental occlusion's
    gather step (a cached feature map cut around each window's changed region, with the
    region's recomputed values in place).

    Args:
        source: (C, H, W).
        corners: integers (B, 2), the (row, column) of each crop's first element; every crop
            lies inside ``source``.
        size: (h, w) of the crops, or an int for square ones.
        patch: (B, C, ph, pw) or None (plain crops).
        offsets: integers (B, 2), where ``patch[b]`` goes in crop b (clipped to the crop).
        backend, out, num_threads: as in :func:`relu_backward`.

    Returns:
        (B, C, h, w) in the promoted float dtype of source and patch (``out`` when given).
    """
    sa, ca, pa, oa, hw = _crop_args(source, corners, size, patch, offsets)
    return run(
        "crop_batch",
        sa.dtype,
        backend,
        "cpu",  # no CUDA twin: the incremental engine's gather runs on the host
        out,
        (len(ca), sa.shape[0], *hw),
        native=lambda o: _native.crop_batch(
            c_contiguous(sa),
            c_contiguous(ca),
            hw,
            None if pa is None else c_contiguous(pa),
            None if oa is None else c_contiguous(oa),
            out=o,
            num_threads=num_threads,
        ),
        reference=lambda: crop_batch_reference(sa, ca, hw, pa, oa),
    )


def crop_batch_reference(
    source: ArrayLike,
    corners: ArrayLike,
    size: IntPair,
    patch: ArrayLike | None = None,
    offsets: ArrayLike | None = None,
) -> FloatArray:
    """NumPy reference of :func:`crop_batch` (the test oracle): one slice copy per crop and
    per clipped patch."""
    sa, ca, pa, oa, (h, w) = _crop_args(source, corners, size, patch, offsets)
    out = np.empty((len(ca), sa.shape[0], h, w), sa.dtype)
    for b, (y, x) in enumerate(ca):
        out[b] = sa[:, y : y + h, x : x + w]
        if pa is not None and oa is not None:
            py, px = oa[b]
            r0, r1 = max(py, 0), min(py + pa.shape[2], h)
            c0, c1 = max(px, 0), min(px + pa.shape[3], w)
            if r1 > r0 and c1 > c0:
                out[b, :, r0:r1, c0:c1] = pa[b, :, r0 - py : r1 - py, c0 - px : c1 - px]
    return out


def _crop_args(
    source: ArrayLike,
    corners: ArrayLike,
    size: IntPair,
    patch: ArrayLike | None,
    offsets: ArrayLike | None,
) -> tuple[FloatArray, IndexArray, FloatArray | None, IndexArray | None, tuple[int, int]]:
    fn = "crop_batch"
    sa = np.asarray(source)
    pa = None if patch is None else np.asarray(patch)
    dtype = np.result_type(sa.dtype, np.float32, *([pa.dtype] if pa is not None else []))
    if dtype.kind != "f":
        raise ValueError(f"{fn}: source and patch must be real numbers, got {dtype}")
    sa = sa.astype(dtype, copy=False)
    if sa.ndim != 3:
        raise ValueError(f"{fn}: source must be 3-D (C, H, W), got shape {sa.shape}")

    ca = index_pairs(corners, fn, "corners", "(B, 2) (row, column)")
    hw = pair(size, "size")
    if min(hw) < 0:
        raise ValueError(f"{fn}: size must be >= 0, got {hw}")
    inside = (
        (ca >= 0).all(axis=1)
        & (ca[:, 0] + hw[0] <= sa.shape[1])
        & (ca[:, 1] + hw[1] <= sa.shape[2])
    )
    if len(ca) and not inside.all():
        b = int(np.flatnonzero(~inside)[0])
        raise ValueError(
            f"{fn}: crop {b} at {tuple(int(v) for v in ca[b])} of size {hw} is outside the "
            f"{sa.shape[1:]} source"
        )
    oa = None
    if pa is not None:
        pa = pa.astype(dtype, copy=False)
        if pa.ndim != 4 or pa.shape[:2] != (len(ca), sa.shape[0]):
            raise ValueError(
                f"{fn}: patch must have shape ({len(ca)}, {sa.shape[0]}, h, w) (one per crop, "
                f"the source's channels), got {pa.shape}"
            )
        if offsets is None:
            raise ValueError(f"{fn}: a patch needs its offsets")
        oa = index_pairs(offsets, fn, "offsets", "(B, 2) (row, column)")
        if len(oa) != len(ca):
            raise ValueError(
                f"{fn}: offsets must have one row per crop ({len(ca)}), got {oa.shape}"
            )
    return sa, ca, pa, oa, hw
