"""Native CPU kernels vs their NumPy references, and elementwise-like kernels vs the machine's
copy bandwidth (a large ``np.copyto`` timed the same way in the same run).

GB/s counts the bytes a kernel must read plus the bytes it writes; operands are >= 64 MiB
(``--quick`` shrinks them by 4 and times fewer rounds)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cnnviz_core import kernels

MIB = 1 << 20


def best_seconds(fn: Callable[[], object], rounds: int) -> float:
    """Fastest of ``rounds`` timed calls after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(
    name: str, shape: tuple[int, ...], ours: float, ref: float, nbytes: int | None, copy_gbs: float
) -> dict:
    result = {
        "kernel": name,
        "shape": "x".join(map(str, shape)),
        "ours ms": round(ours * 1e3, 2),
        "numpy ms": round(ref * 1e3, 2),
        "speedup": round(ref / ours, 1),
    }
    if nbytes is not None:
        gbs = nbytes / ours / 1e9
        result["GB/s"] = round(gbs, 1)
        result["% of copy"] = round(100 * gbs / copy_gbs)
    return result


def run(quick: bool = False) -> list[dict]:
    rounds = 3 if quick else 7
    scale = 4 if quick else 1
    rng = np.random.default_rng(0)

    # The ceiling: a copy of 64 MiB reads and writes 64 MiB each.
    src = rng.standard_normal(64 * MIB // 4 // scale, dtype=np.float32)
    dst = np.empty_like(src)
    copy_gbs = 2 * src.nbytes / best_seconds(lambda: np.copyto(dst, src), rounds) / 1e9
    rows: list[dict] = [
        {
            "kernel": "np.copyto (ceiling)",
            "shape": str(src.size),
            "ours ms": "",
            "numpy ms": "",
            "speedup": "",
            "GB/s": round(copy_gbs, 1),
            "% of copy": 100,
        }
    ]

    # ReLU backward (guided): reads x and g, writes out.
    x, g, out = src, rng.standard_normal(src.size, dtype=np.float32), dst
    ours = best_seconds(lambda: kernels.relu_backward(x, g, "guided", out=out), rounds)
    ref = best_seconds(lambda: kernels.relu_backward_reference(x, g, "guided"), rounds)
    rows.append(row("relu_backward guided", x.shape, ours, ref, 3 * x.nbytes, copy_gbs))

    # Max pooling 2x2/2 of a (16/scale, 64, 128, 128) map (64 MiB) and its unpooling.
    image = rng.standard_normal((16 // scale, 64, 128, 128), dtype=np.float32)
    y, sw = kernels.max_pool2d(image, 2)
    ours = best_seconds(lambda: kernels.max_pool2d(image, 2), rounds)
    ref = best_seconds(lambda: kernels.max_pool2d_reference(image, 2), 1)
    pool_bytes = image.nbytes + y.nbytes + sw.nbytes
    rows.append(row("max_pool2d 2x2/2", image.shape, ours, ref, pool_bytes, copy_gbs))
    unpooled = np.empty_like(image)
    ours = best_seconds(lambda: kernels.max_unpool2d(y, sw, image.shape[2:], out=unpooled), rounds)
    ref = best_seconds(lambda: kernels.max_unpool2d_reference(y, sw, image.shape[2:]), 1)
    rows.append(row("max_unpool2d 2x2/2", image.shape, ours, ref, pool_bytes, copy_gbs))

    # im2col / col2im of a VGG-like 3x3/1 pad 1 layer (cols of 8/scale x 576 x 3136: 55 MiB).
    feat = rng.standard_normal((8 // scale, 64, 56, 56), dtype=np.float32)
    cols = kernels.im2col(feat, 3, 1, 1)
    ours = best_seconds(lambda: kernels.im2col(feat, 3, 1, 1, out=cols), rounds)
    ref = best_seconds(lambda: kernels.im2col_reference(feat, 3, 1, 1), rounds)
    rows.append(row("im2col 3x3/1 p1", feat.shape, ours, ref, None, copy_gbs))
    back = np.empty_like(feat)
    ours = best_seconds(lambda: kernels.col2im(cols, (56, 56), 3, 1, 1, out=back), rounds)
    ref = best_seconds(lambda: kernels.col2im_reference(cols, (56, 56), 3, 1, 1), rounds)
    rows.append(row("col2im 3x3/1 p1", feat.shape, ours, ref, None, copy_gbs))
    return rows
