"""Object segmentation without supervision from a saliency map (Simonyan et al. 2014, §3.1).

The most salient pixels seed the foreground and the least salient the background; colour
models of the two and a contrast-sensitive smoothness term then decide every pixel by a
graph cut, the colour models refit on the result a few times as GrabCut does. OpenCV's
GrabCut is used when ``opencv-python-headless`` is installed (extra ``segmentation``);
otherwise a similar energy is minimised here with SciPy's max-flow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import maximum_flow

from cnnviz_core import CnnvizError, Model
from cnnviz_core.targets import TargetLike

from ..render.images import upscale
from ..render.report import (
    MIN_DISPLAY_SIDE,
    Markup,
    Page,
    ReportContext,
    Section,
    escape,
    register_section,
)
from .base import Images, Method
from .saliency import saliency

#: integer scale of the capacities (SciPy's max-flow takes integers)
_CAPACITY_SCALE = 1000


def segment(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    method: Method = saliency,
    foreground_quantile: float = 0.95,
    background_quantile: float = 0.30,
    smoothness: float = 50.0,
    iterations: int = 3,
    backend: str = "auto",
) -> np.ndarray:
    """Foreground masks (N, H, W) bool for the images, from ``method``'s maps.

    Args:
        model, images, target: as for any attribution method.
        method: the attribution whose maps seed the segmentation (default: saliency).
        foreground_quantile: pixels above this quantile of the map seed the object.
        background_quantile: pixels below it seed the background.
        smoothness: weight of the pairwise (contrast-sensitive Potts) term.
        iterations: colour-model refits (GrabCut-style).
        backend: ``grabcut`` (OpenCV), ``graphcut`` (SciPy max-flow) or ``auto``.
    """
    if backend not in ("auto", "grabcut", "graphcut"):
        raise ValueError(f"backend must be auto, grabcut or graphcut, got {backend!r}")
    result = method(model, images, target)
    maps = result.heatmap
    cut = _choose_backend(backend)
    masks = []
    for image, heat in zip(result.images, maps):
        fg = heat >= np.quantile(heat, foreground_quantile)
        bg = heat <= np.quantile(heat, background_quantile)
        masks.append(cut(image, fg, bg, smoothness=smoothness, iterations=iterations))
    return np.stack(masks)


def intersection_over_union(masks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of each predicted mask with its ground truth, (N,)."""
    masks, truth = np.asarray(masks, bool), np.asarray(truth, bool)
    inter = (masks & truth).reshape(len(masks), -1).sum(1)
    union = (masks | truth).reshape(len(masks), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def centred_box(shape: tuple[int, int], area: float = 0.25) -> np.ndarray:
    """The baseline 'segmentation': a centred box covering ``area`` of the image."""
    h, w = shape
    side = np.sqrt(area)
    top, left = round(h * (1 - side) / 2), round(w * (1 - side) / 2)
    box = np.zeros(shape, bool)
    box[top : h - top, left : w - left] = True
    return box


def _choose_backend(backend: str) -> Any:
    if backend in ("auto", "grabcut"):
        try:
            import cv2  # noqa: F401
        except ImportError:
            if backend == "grabcut":
                raise ImportError(
                    "backend='grabcut' needs OpenCV: pip install 'cnnviz[segmentation]'"
                ) from None
        else:
            return _grabcut_opencv
    return graph_cut


def _grabcut_opencv(
    image: np.ndarray, fg: np.ndarray, bg: np.ndarray, *, smoothness: float, iterations: int
) -> np.ndarray:
    import cv2

    mask = np.full(image.shape[:2], cv2.GC_PR_BGD, np.uint8)
    mask[fg] = cv2.GC_FGD
    mask[bg] = cv2.GC_BGD
    models = (np.zeros((1, 65)), np.zeros((1, 65)))
    no_rect = (0, 0, 0, 0)  # GC_INIT_WITH_MASK reads the mask, not a rectangle
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), mask, no_rect, *models, iterations,
                cv2.GC_INIT_WITH_MASK)  # fmt: skip
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def graph_cut(
    image: np.ndarray,
    fg: np.ndarray,
    bg: np.ndarray,
    *,
    smoothness: float = 50.0,
    iterations: int = 3,
    bins: int = 8,
) -> np.ndarray:
    """A GrabCut-like energy minimised by an s-t minimum cut (SciPy max-flow).

    Unary terms: negative log-likelihoods under smoothed colour histograms (``bins`` per
    channel) of the current foreground and background (Boykov & Jolly 2001), refit each
    iteration; pairwise terms: ``smoothness * exp(-beta |I_p - I_q|^2)`` between
    4-neighbours; the seeds are hard constraints.
    """
    h, w = image.shape[:2]
    colour_bin = _colour_bins(image, bins)
    fg, bg = fg.ravel(), bg.ravel()
    label = ~bg  # start: everything not seeded as background is foreground
    edges, weights = _neighbour_edges(image, smoothness)
    for _ in range(iterations):
        if label.all() or not label.any():
            break
        cost_fg = _neg_log_likelihood(colour_bin, label, bins**3)
        cost_bg = _neg_log_likelihood(colour_bin, ~label, bins**3)
        new = _min_cut(h * w, cost_fg, cost_bg, fg, bg, edges, weights)
        if np.array_equal(new, label):
            break
        label = new
    return label.reshape(h, w)


def _colour_bins(image: np.ndarray, bins: int) -> np.ndarray:
    """Histogram bin of each pixel's colour, (H * W,)."""
    q = (image.reshape(-1, 3).astype(np.int64) * bins) // 256
    return (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]


def _neg_log_likelihood(colour_bin: np.ndarray, member: np.ndarray, size: int) -> np.ndarray:
    """-log p(colour | region), the region's colour histogram smoothed by one count a bin."""
    counts = np.bincount(colour_bin[member], minlength=size) + 1.0
    return -np.log(counts / counts.sum())[colour_bin]


def _neighbour_edges(image: np.ndarray, smoothness: float) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbour pairs (E, 2) and their contrast-sensitive weights."""
    h, w = image.shape[:2]
    index = np.arange(h * w).reshape(h, w)
    colour = image.astype(np.float64)
    pairs, diffs = [], []
    for a, b, d in (
        (index[:, :-1], index[:, 1:], colour[:, :-1] - colour[:, 1:]),
        (index[:-1, :], index[1:, :], colour[:-1, :] - colour[1:, :]),
    ):
        pairs.append(np.stack([a.ravel(), b.ravel()], 1))
        diffs.append((d**2).sum(-1).ravel())
    squared = np.concatenate(diffs)
    beta = 1.0 / (2.0 * max(squared.mean(), 1e-9))
    return np.concatenate(pairs), smoothness * np.exp(-beta * squared)


def _min_cut(
    n: int,
    cost_fg: np.ndarray,
    cost_bg: np.ndarray,
    fg: np.ndarray,
    bg: np.ndarray,
    edges: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Labels minimising sum(unary) + sum(pairwise) (True = foreground = source side)."""
    hard = 1e9
    # cutting s->p puts p in the background (pays cost_bg); cutting p->t pays cost_fg
    source_cap = np.where(fg, hard, np.where(bg, 0.0, cost_bg))
    sink_cap = np.where(bg, hard, np.where(fg, 0.0, cost_fg))
    offset = np.minimum(source_cap, sink_cap)  # same total for both labels: drop it
    source_cap, sink_cap = source_cap - offset, sink_cap - offset
    s, t = n, n + 1
    nodes = np.arange(n)
    rows = np.concatenate([np.full(n, s), nodes, edges[:, 0], edges[:, 1]])
    cols = np.concatenate([nodes, np.full(n, t), edges[:, 1], edges[:, 0]])
    caps = np.concatenate([source_cap, sink_cap, weights, weights])
    caps = np.minimum(np.rint(caps * _CAPACITY_SCALE), 2**30).astype(np.int32)
    keep = caps > 0
    graph = coo_matrix((caps[keep], (rows[keep], cols[keep])), shape=(n + 2, n + 2)).tocsr()
    flow = maximum_flow(graph, s, t).flow
    residual = graph - flow
    # the source side of the minimum cut: reachable from s through unsaturated edges
    reached = np.zeros(n + 2, bool)
    reached[s] = True
    frontier = [s]
    residual = residual.tocsr()
    while frontier:
        row = residual[frontier]
        nxt = np.unique(row.indices[row.data > 0])
        nxt = nxt[~reached[nxt]]
        reached[nxt] = True
        frontier = list(nxt)
    return reached[:n]


@register_section("segmentation", order=120)
def segmentation_section(ctx: ReportContext, page: Page) -> Section | None:
    """For every image: the input, its saliency and the object mask grown from it."""
    if not ctx.names:
        return None
    try:
        result = saliency(ctx.model, ctx.batch)
    except CnnvizError as exc:
        return Section("segmentation", "Segmentation from saliency",
                       Markup(f'<p class="muted">not available: {escape(exc)}</p>'))  # fmt: skip
    cut = _choose_backend("auto")
    rows = []
    for i, name in enumerate(ctx.names):
        heat = result.heatmap[i]
        fg = heat >= np.quantile(heat, 0.95)
        bg = heat <= np.quantile(heat, 0.30)
        mask = cut(result.images[i], fg, bg, smoothness=50.0, iterations=3)
        tinted = result.images[i].copy()
        tinted[~mask] = tinted[~mask] // 3  # darken the background
        pictures = [(result.images[i], "input"), (result.render(i), "saliency"),
                    (tinted, "object mask")]  # fmt: skip
        cells = [
            page.image(upscale(array, min_side=MIN_DISPLAY_SIDE), f"{i}-{caption}",
                       alt=f"{caption} of {name}")
            for array, caption in pictures
        ]  # fmt: skip
        rows.append([name, *cells])
    intro = (
        "<p>Object masks without supervision (Simonyan et al. 2014): the 5% most salient "
        "pixels seed the object, the 30% least salient the background, and a graph cut "
        "decides the rest from colour and contrast.</p>"
    )
    table = page.table(["image", "input", "saliency", "object mask"], rows)
    return Section("segmentation", "Segmentation from saliency", Markup(intro + table))
