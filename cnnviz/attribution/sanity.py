"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps",
section 3, model parameter randomization): an explanation that does not change when the
weights it explains are destroyed explains nothing.

The weights (and biases) of the model's Conv and Gemm layers are re-drawn layer by layer,
from the top (``cascading``: each step randomizes one more layer, the layers above stay
random) or one layer at a time (independent: the others keep their trained weights); each
modified ONNX proto is rebuilt in memory by :meth:`~cnnviz_core.Model.with_graph` (same
preprocessing, labels, device and budgets), the method recomputes its maps for the SAME
targets as the original's, and each randomized map is compared with the original by

- the Spearman rank correlation of the absolute maps (the paper's "rank correlation (ABS)"),
- SSIM (Wang et al. 2004, 7x7 uniform window, the constants of scikit-image and Quantus)
  of the absolute maps, each scaled to [0, 1] by its maximum.

Verdict: a method passes when its maps decorrelate, i.e. the mean Spearman correlation
(over images) at the strongest randomization is below :data:`DEFAULT_THRESHOLD` (0.5): the
last cascading step (every layer random) or, independently, the layer whose randomization
changes the maps most. Adebayo et al. judge visually and give no number; 0.5 is the midpoint
between an unchanged ranking (1) and an unrelated one (0), and separates the shapes model's
saliency (about 0.2 with every layer random) from a map that ignores the model, such as an
edge detector (1).

Shape convention: maps (N, H, W); ``spearman`` and ``ssim`` tables (layers, N).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from cnnviz_core import InputError, Model

from ..render.display import Displayable
from ..render.images import tile_grid
from .base import Attribution, Images
from .methods import explain, method_spec

#: the verdict's cut-off on the mean Spearman rank correlation (see the module doc)
DEFAULT_THRESHOLD = 0.5
#: the layers whose initializers are re-drawn
RANDOMIZED_OPS = ("Conv", "Gemm")

#: ``progress(done, total)``: called after each randomized model's maps
Progress = Callable[[int, int], None]


@dataclass
class SanityResult(Displayable):
    """The model parameter randomization test of one method on one batch.

    Attributes:
        method: the method's registry name.
        cascading: cascading (True) or independent (False) randomization.
        layers: the randomized layers in the order of the steps (top first): step ``k``
            randomized ``layers[: k + 1]`` (cascading) or ``layers[k]`` alone.
        spearman: (steps, N) Spearman rank correlation of |original| and |randomized| maps.
        ssim: (steps, N) SSIM of the max-scaled absolute maps.
        threshold: the verdict's cut-off on the mean Spearman correlation.
        original: the trained model's maps.
        randomized: the maps of each step.
        seed: the seed of the random weights.
    """

    method: str
    cascading: bool
    layers: list[str]
    spearman: np.ndarray
    ssim: np.ndarray
    threshold: float
    original: Attribution
    randomized: list[Attribution] = field(repr=False)
    seed: int = 0

    @property
    def decisive_step(self) -> int:
        """The step the verdict reads: the last (cascading), else the one with the lowest
        mean correlation."""
        if self.cascading:
            return len(self.layers) - 1
        return int(np.argmin(self.spearman.mean(axis=1)))

    @property
    def passed(self) -> bool:
        """Whether the maps decorrelate: mean Spearman at :attr:`decisive_step` below the
        threshold."""
        return bool(self.spearman[self.decisive_step].mean() < self.threshold)

    def figures(self) -> dict[str, Any]:
        """The numbers as plain JSON-ready values (per layer: mean and per-image figures)."""
        return {
            "method": self.method,
            "mode": "cascading" if self.cascading else "independent",
            "seed": self.seed,
            "threshold": self.threshold,
            "decisive_layer": self.layers[self.decisive_step],
            "passed": self.passed,
            "targets": [t.label for t in self.original.targets],
            "layers": [
                {
                    "layer": name,
                    "spearman": float(self.spearman[k].mean()),
                    "ssim": float(self.ssim[k].mean()),
                    "spearman_per_image": [float(v) for v in self.spearman[k]],
                    "ssim_per_image": [float(v) for v in self.ssim[k]],
                }
                for k, name in enumerate(self.layers)
            ],
        }

    def picture(self) -> np.ndarray:
        """:meth:`strip` of every image: what Jupyter and ``plot()`` show."""
        return self.strip()

    def facts(self) -> list[tuple[str, object]]:
        """Method, mode, verdict and the decisive step's figures, for the HTML display."""
        step = self.decisive_step
        verdict = "pass (the maps decorrelate)" if self.passed else "FAIL (the maps stay)"
        return [
            ("method", self.method),
            ("randomization", "cascading" if self.cascading else "independent"),
            ("verdict", verdict),
            ("decisive layer", self.layers[step]),
            (
                "mean Spearman / SSIM there",
                f"{self.spearman[step].mean():.3f} / {self.ssim[step].mean():.3f} "
                f"(pass < {self.threshold:g})",
            ),
            ("columns", "input, original map, then one map per step: " + ", ".join(self.layers)),
        ]

    def strip(self, i: int | None = None, pad: int = 2) -> np.ndarray:
        """The paper's figure as one picture: per image (``i`` alone, or every image, one row
        each) the input, the original map, then the map of each step; (H, W, 3) uint8."""
        rows = range(len(self.original)) if i is None else [i]
        tiles = []
        for k in rows:
            tiles += [self.original.images[k], self.original.render(k)]
            tiles += [result.render(k) for result in self.randomized]
        return tile_grid(tiles, columns=2 + len(self.randomized), pad=pad, background=255)


def randomizable_layers(model: Model) -> list[str]:
    """The Conv / Gemm layers (their output tensor names) whose weight is an initializer,
    in graph order."""
    names = {init.name for init in model.proto.graph.initializer}
    return [
        node.output[0]
        for node in model.proto.graph.node
        if node.op_type in RANDOMIZED_OPS and len(node.input) > 1 and node.input[1] in names
    ]


def randomized_proto(proto: onnx.ModelProto, layers: Sequence[str], seed: int) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``layers`` (Conv / Gemm output names) have new weights and
    biases: Gaussian draws with each tensor's own mean and standard deviation (the scale a
    re-initialization gives), in the tensor's dtype. A tensor's draw depends on the seed and
    its name only, so a cascade keeps the layers above as they were drawn."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    wanted = set(layers)
    params = {
        name
        for node in copy.graph.node
        if node.output and node.output[0] in wanted
        for name in node.input[1:3]
        if name
    }
    for init in copy.graph.initializer:
        if init.name not in params:
            continue
        value = numpy_helper.to_array(init)
        reference = value.astype(np.float64)
        rng = np.random.default_rng([seed, *init.name.encode()])
        drawn = rng.normal(reference.mean(), reference.std(), size=value.shape)
        init.CopyFrom(numpy_helper.from_array(drawn.astype(value.dtype), init.name))
    return copy


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (average ranks for ties); 0 when one of
    them is constant (no ranking to agree with)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    da, db = ra - ra.mean(), rb - rb.mean()
    norm = np.sqrt((da * da).sum() * (db * db).sum())
    return float((da * db).sum() / norm) if norm > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Structural similarity of two (H, W) maps (Wang et al. 2004): the mean over the valid
    ``window`` x ``window`` uniform windows, sample covariances, K1 = 0.01, K2 = 0.03, the
    data range spanning both maps (scikit-image's ``structural_similarity`` as Quantus calls
    it)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"ssim needs two (H, W) maps of one shape; got {a.shape}, {b.shape}")
    if min(a.shape) < window:
        raise InputError(f"ssim window {window} is larger than the maps {a.shape}")
    data_range = max(a.max(), b.max()) - min(a.min(), b.min())
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    count = window * window
    mean = [_window_mean(x, window) for x in (a, b, a * a, b * b, a * b)]
    ua, ub, uaa, ubb, uab = mean
    scale = count / (count - 1)
    vaa, vbb, vab = scale * (uaa - ua * ua), scale * (ubb - ub * ub), scale * (uab - ua * ub)
    value = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua**2 + ub**2 + c1) * (vaa + vbb + c2))
    return float(value.mean())


def _window_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Means over every fully inside ``window`` x ``window`` square (summed-area table)."""
    table = np.zeros((x.shape[0] + 1, x.shape[1] + 1))
    table[1:, 1:] = x.cumsum(axis=0).cumsum(axis=1)
    w = window
    sums = table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]
    return sums / (w * w)


def _compare(original: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) Spearman and (N,) SSIM of absolute (N, H, W) maps."""
    rho, sim = np.empty(len(original)), np.empty(len(original))
    for i, (x, y) in enumerate(zip(np.abs(original), np.abs(other))):
        rho[i] = spearman(x, y)
        sim[i] = ssim(x / (x.max() or 1.0), y / (y.max() or 1.0))
    return rho, sim


def model_randomization(
    model: Model,
    images: Images,
    method: str,
    *,
    target: Any = None,
    cascading: bool = True,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> SanityResult:
    """Adebayo et al.'s model parameter randomization test of a registered method.

    Args:
        model: the trained model.
        images: what to explain (paths, arrays or a preprocessed batch).
        method: a name of :data:`~.methods.REGISTRY`.
        target: what the original maps explain (default: each image's predicted class);
            the randomized models explain the same resolved targets.
        cascading: randomize from the top, one more layer each step (else each layer
            alone).
        seed: seed of the random weights.
        layers: the Conv / Gemm layers to randomize (names or aliases; default: all of
            :func:`randomizable_layers`); always taken from the top.
        threshold: the verdict's cut-off on the mean Spearman correlation.
        options: the method's options of :func:`~.methods.explain` (``layer``,
            ``precision``), the same for every model.
        progress: ``progress(done, total)`` after each randomized model.

    Raises:
        InputError: an unknown method or an option it does not take, a layer that is not a
            Conv / Gemm with an initializer weight, or a model without one.
    """
    method_spec(method)  # an unknown name fails before any work
    given = dict(options or {})
    available = randomizable_layers(model)
    if not available:
        raise InputError(
            f"model {model.name!r} has no Conv or Gemm layer with initializer weights to randomize"
        )
    if layers is None:
        chosen = available
    elif not layers:
        raise InputError("layers= is empty; name at least one Conv / Gemm layer, or pass None")
    else:
        chosen = []
        for name in layers:
            tensor = model.layer(name).name
            if tensor not in available:
                raise InputError(
                    f"layers= {name!r} is not a Conv / Gemm layer with initializer weights; "
                    f"choose among {', '.join(available)}"
                )
            chosen.append(tensor)
    wanted = set(chosen)
    top_first = [name for name in reversed(available) if name in wanted]
    batch = model.prepare(images)
    original = explain(model, batch, method, target, **given)
    randomized, rhos, sims = [], [], []
    for step, name in enumerate(top_first):
        changed = top_first[: step + 1] if cascading else [name]
        proto = randomized_proto(model.proto, changed, seed)
        randomized_model = model.with_graph(proto, f"{model.name} (randomized)")
        result = explain(randomized_model, batch, method, original.targets, **given)
        rho, sim = _compare(original.heatmap, result.heatmap)
        randomized.append(result)
        rhos.append(rho)
        sims.append(sim)
        if progress is not None:
            progress(step + 1, len(top_first))
    return SanityResult(
        method=method,
        cascading=cascading,
        layers=top_first,
        spearman=np.array(rhos),
        ssim=np.array(sims),
        threshold=threshold,
        original=original,
        randomized=randomized,
        seed=seed,
    )


__all__ = [
    "DEFAULT_THRESHOLD",
    "RANDOMIZED_OPS",
    "SanityResult",
    "model_randomization",
    "randomizable_layers",
    "randomized_proto",
    "spearman",
    "ssim",
]
