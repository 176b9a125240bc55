"""Native CPU kernels vs their NumPy references, and elementwise-like kernels vs the machine's
copy bandwidth (a large ``np.copyto`` timed the same way in the same run).

GB/s counts the bytes a kernel must read plus the bytes it writes; operands are >= 64 MiB
(``--quick`` shrinks them by 4 and times fewer rounds). The occlusion batch builder counts the
batch it writes plus one read of the image and fill. Gram rows count C^2 * N FLOPs (the symmetric
product) and compare with numpy ``F @ F.T`` (BLAS syrk) and with the machine's sgemm rate (numpy
dot of two 2048 x 2048 float32 matrices, or 1024 x 1024 where that is faster, same run); they
also give the time with one thread, to check the default thread count (one per physical core)
for these compute-bound kernels.

The machine is shared (other processes take the cores at random): each group of timings (a
kernel, its reference and the ceilings) is interleaved round by round and each keeps its best
round, so that a busy moment does not fall on one side of a ratio only. The ceilings (copy,
sgemm) keep their best over every group."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from timing import interleaved_best

from cnnviz_core import kernels

MIB = 1 << 20
SGEMM_SIZES = (2048, 1024)
BLAS_SETTLE = 0.2  # seconds for OpenBLAS's spinning worker threads to go to sleep


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
    rounds = 3 if quick else 15
    scale = 4 if quick else 1
    rng = np.random.default_rng(0)

    # The ceiling: a copy of 64 MiB reads and writes 64 MiB each; timed within every group.
    src = rng.standard_normal(64 * MIB // 4 // scale, dtype=np.float32)
    dst = np.empty_like(src)
    copy = {"copy": lambda: np.copyto(dst, src)}
    times: dict[str, float] = {}

    def timed(fns: dict[str, Callable[[], object]]) -> None:
        for name, t in interleaved_best({**copy, **fns}, rounds).items():
            times[name] = min(times.get(name, float("inf")), t)

    # ReLU backward (guided): reads x and g, writes out.
    x, g, out = src, rng.standard_normal(src.size, dtype=np.float32), dst.copy()
    timed(
        {
            "relu": lambda: kernels.relu_backward(x, g, "guided", out=out),
            "relu ref": lambda: kernels.relu_backward_reference(x, g, "guided"),
        }
    )

    # Max pooling 2x2/2 of a (16/scale, 64, 128, 128) map (64 MiB) and its unpooling.
    image = rng.standard_normal((16 // scale, 64, 128, 128), dtype=np.float32)
    y, sw = kernels.max_pool2d(image, 2)
    unpooled = np.empty_like(image)
    timed(
        {
            "pool": lambda: kernels.max_pool2d(image, 2, out=y, switches_out=sw),
            "pool ref": lambda: kernels.max_pool2d_reference(image, 2),
            "unpool": lambda: kernels.max_unpool2d(y, sw, image.shape[2:], out=unpooled),
            "unpool ref": lambda: kernels.max_unpool2d_reference(y, sw, image.shape[2:]),
        }
    )
    pool_bytes = image.nbytes + y.nbytes + sw.nbytes

    # im2col / col2im of a VGG-like 3x3/1 pad 1 layer (cols of 8/scale x 576 x 3136: 55 MiB).
    feat = rng.standard_normal((8 // scale, 64, 56, 56), dtype=np.float32)
    cols = kernels.im2col(feat, 3, 1, 1)
    back = np.empty_like(feat)
    timed(
        {
            "im2col": lambda: kernels.im2col(feat, 3, 1, 1, out=cols),
            "im2col ref": lambda: kernels.im2col_reference(feat, 3, 1, 1),
            "col2im": lambda: kernels.col2im(cols, (56, 56), 3, 1, 1, out=back),
            "col2im ref": lambda: kernels.col2im_reference(cols, (56, 56), 3, 1, 1),
        }
    )

    # Occlusion: 64/scale windows of 56x56 over a 3x224x224 image, per-channel mean fill (38 MiB).
    img = rng.standard_normal((3, 224, 224), dtype=np.float32)
    pos = np.array([(t, s) for t in range(0, 224, 28) for s in range(0, 224, 28)], np.int64)
    pos = pos[: 64 // scale]
    fill = img.mean(axis=(1, 2))
    batch = np.empty((len(pos), *img.shape), np.float32)
    timed(
        {
            "occlusion": lambda: kernels.occlusion_batch(img, pos, 56, fill, out=batch),
            "occlusion ref": lambda: kernels.occlusion_batch_reference(img, pos, 56, fill),
        }
    )
    occ_bytes = batch.nbytes + img.nbytes + fill.nbytes

    copy_gbs = 2 * src.nbytes / times["copy"] / 1e9
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
    for name, key, shape, nbytes in [
        ("relu_backward guided", "relu", x.shape, 3 * x.nbytes),
        ("max_pool2d 2x2/2", "pool", image.shape, pool_bytes),
        ("max_unpool2d 2x2/2", "unpool", image.shape, pool_bytes),
        ("im2col 3x3/1 p1", "im2col", feat.shape, None),
        ("col2im 3x3/1 p1", "col2im", feat.shape, None),
        ("occlusion_batch 56x56", "occlusion", batch.shape, occ_bytes),
    ]:
        rows.append(row(name, shape, times[key], times[key + " ref"], nbytes, copy_gbs))

    # Gram: VGG-like layers, batch 1, vs numpy F @ F.T and the sgemm ceiling (timed within every
    # shape's group). The ceiling is the better rate of a 2048^2 and a 1024^2 product: a 2048^2
    # call takes ~80 ms, long enough to rarely fall in a quiet moment of a shared machine, which
    # would lower the ceiling that the 1-3 ms Gram calls are held to.
    mats = {size: rng.standard_normal((size, size), dtype=np.float32) for size in SGEMM_SIZES}
    sgemms = {f"sgemm {size}": (lambda m=m: np.dot(m, m), 2 * size**3) for size, m in mats.items()}
    gram_times = [
        gram_times_of(rng, c, n, scale, rounds, {k: fn for k, (fn, _) in sgemms.items()})
        for c, n in [(64, 224 * 224), (128, 112 * 112), (256, 56 * 56), (512, 28 * 28)]
    ]
    rates = {
        k: flops / min(t[k] for _, _, t in gram_times) / 1e9 for k, (_, flops) in sgemms.items()
    }
    sgemm = max(rates.values())
    for size in SGEMM_SIZES:
        rate = rates[f"sgemm {size}"]
        rows.append(
            {
                "kernel": f"np.dot {size}^2 (sgemm)",
                "shape": f"{size}x{size}",
                "GFLOP/s": round(rate, 1),
                "% of sgemm": round(100 * rate / sgemm),
            }
        )
    for shape, flops, t in gram_times:
        rows.append(
            {
                **gram_row("gram", shape, t["fwd"], t["fwd ref"], flops, sgemm),
                "1-thread ms": round(t["fwd 1"] * 1e3, 2),
            }
        )
        rows.append(
            {
                **gram_row("gram_backward", shape, t["bwd"], t["bwd ref"], 2 * flops, sgemm),
                "1-thread ms": round(t["bwd 1"] * 1e3, 2),
            }
        )
    return rows


def gram_times_of(
    rng: np.random.Generator,
    c: int,
    n: int,
    scale: int,
    rounds: int,
    sgemms: dict[str, Callable[[], object]],
) -> tuple[tuple[int, ...], int, dict[str, float]]:
    """Gram forward and backward of one (1, c, n / scale) feature map, ours (default threads and
    one thread) and numpy's, interleaved with the sgemm ceiling: (shape, FLOPs, best times)."""
    f = rng.standard_normal((1, c, n // scale), dtype=np.float32)
    dg = rng.standard_normal((1, c, c), dtype=np.float32)
    g_out = np.empty((1, c, c), np.float32)
    d_out = np.empty_like(f)
    # OpenBLAS worker threads spin for ~0.1 s after each call (THREAD_TIMEOUT), holding the
    # cores: ours run first in each round, the BLAS calls last, and each round starts after a
    # BLAS_SETTLE pause, so that no timing shares the cores with a spinning BLAS thread.
    times = interleaved_best(
        {
            "fwd": lambda: kernels.gram(f, c * n, out=g_out),
            "bwd": lambda: kernels.gram_backward(f, dg, c * n, out=d_out),
            # The thread policy (num_threads=0: one thread per physical core) against one thread.
            "fwd 1": lambda: kernels.gram(f, c * n, out=g_out, num_threads=1),
            "bwd 1": lambda: kernels.gram_backward(f, dg, c * n, out=d_out, num_threads=1),
            **sgemms,
            "fwd ref": lambda: f[0] @ f[0].T / np.float32(c * n),
            "bwd ref": lambda: kernels.gram_backward_reference(f, dg, c * n),
        },
        rounds,
        settle=BLAS_SETTLE,
        rotate=False,
    )
    return f.shape, c * c * f.shape[2], times


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
