"""Native CPU kernels vs their NumPy references, and elementwise-like kernels vs the machine's
copy bandwidth (a large ``np.copyto`` timed the same way in the same run).

GB/s counts the bytes a kernel must read plus the bytes it writes; operands are >= 64 MiB
(``--quick`` shrinks them by 4 and times fewer rounds). The occlusion batch builder counts the
batch it writes plus one read of the image and fill. Gram rows count C^2 * N FLOPs (the symmetric
product) and compare with numpy ``F @ F.T`` (BLAS syrk) and with the machine's sgemm rate (numpy
dot of two 2048 x 2048 float32 matrices, same run); they also give the time with one thread, to
check the default thread count (one per physical core) for these compute-bound kernels."""

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
    ours = best_seconds(lambda: kernels.max_pool2d(image, 2, out=y, switches_out=sw), rounds)
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

    # Occlusion: 64/scale windows of 56x56 over a 3x224x224 image, per-channel mean fill (38 MiB).
    img = rng.standard_normal((3, 224, 224), dtype=np.float32)
    pos = np.array([(t, s) for t in range(0, 224, 28) for s in range(0, 224, 28)], np.int64)
    pos = pos[: 64 // scale]
    fill = img.mean(axis=(1, 2))
    batch = np.empty((len(pos), *img.shape), np.float32)
    ours = best_seconds(lambda: kernels.occlusion_batch(img, pos, 56, fill, out=batch), rounds)
    ref = best_seconds(lambda: kernels.occlusion_batch_reference(img, pos, 56, fill), rounds)
    occ_bytes = batch.nbytes + img.nbytes + fill.nbytes
    rows.append(row("occlusion_batch 56x56", batch.shape, ours, ref, occ_bytes, copy_gbs))

    # Gram: VGG-like layers, batch 1, vs numpy F @ F.T and the sgemm ceiling.
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    sgemm = 2 * 2048**3 / best_seconds(lambda: np.dot(a, b), rounds) / 1e9
    rows.append(
        {
            "kernel": "np.dot 2048^2 (sgemm ceiling)",
            "shape": "2048x2048",
            "GFLOP/s": round(sgemm, 1),
            "% of sgemm": 100,
        }
    )
    for c, n in [(64, 224 * 224), (128, 112 * 112), (256, 56 * 56), (512, 28 * 28)]:
        rows.extend(gram_rows(rng, c, n, scale, rounds, sgemm))
    return rows


def gram_rows(
    rng: np.random.Generator, c: int, n: int, scale: int, rounds: int, sgemm: float
) -> list[dict]:
    """Gram forward and backward of one (1, c, n / scale) feature map."""
    f = rng.standard_normal((1, c, n // scale), dtype=np.float32)
    dg = rng.standard_normal((1, c, c), dtype=np.float32)
    flops = c * c * f.shape[2]
    g_out = np.empty((1, c, c), np.float32)
    ours = best_seconds(lambda: kernels.gram(f, c * n, out=g_out), rounds)
    ref = best_seconds(lambda: f[0] @ f[0].T / np.float32(c * n), rounds)
    d_out = np.empty_like(f)
    ours_b = best_seconds(lambda: kernels.gram_backward(f, dg, c * n, out=d_out), rounds)
    ref_b = best_seconds(lambda: kernels.gram_backward_reference(f, dg, c * n), rounds)
    # The thread policy (num_threads=0: one thread per physical core) against one thread.
    one = best_seconds(lambda: kernels.gram(f, c * n, out=g_out, num_threads=1), rounds)
    one_b = best_seconds(
        lambda: kernels.gram_backward(f, dg, c * n, out=d_out, num_threads=1), rounds
    )
    return [
        {**gram_row("gram", f.shape, ours, ref, flops, sgemm), "1-thread ms": round(one * 1e3, 2)},
        {
            **gram_row("gram_backward", f.shape, ours_b, ref_b, 2 * flops, sgemm),
            "1-thread ms": round(one_b * 1e3, 2),
        },
    ]


def gram_row(
    name: str, shape: tuple[int, ...], ours: float, ref: float, flops: int, sgemm: float
) -> dict:
    rate = flops / ours / 1e9
    return {
        "kernel": name,
        "shape": "x".join(map(str, shape)),
        "ours ms": round(ours * 1e3, 2),
        "numpy ms": round(ref * 1e3, 2),
        "speedup": round(ref / ours, 1),
        "GFLOP/s": round(rate, 1),
        "% of sgemm": round(100 * rate / sgemm),
    }
