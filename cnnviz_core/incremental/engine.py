"""Occlusion scorers: the naive one (one full forward per window, batched) and the
incremental one (Krypton, Nakandala et al. SIGMOD 2019): per window, only the region of each
early feature map that the window can change is recomputed, on crops of the cached maps of
the unoccluded image; once a region covers most of its map the rest of the network runs in
full from the maps assembled per window.

Both implement :class:`OcclusionScorer`: ``scores(image, positions, fill) -> (scores, taps)``,
the model's scores and tapped tensors for the occluded copies of one image.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import onnxruntime as ort

from .. import graph, kernels
from ..errors import InputError, UnsupportedOpError
from ..geometry import pair
from ..model import Model, run_session
from .plan import Plan, Step, build_plan, rest_model, static_types, step_model

log = logging.getLogger(__name__)

#: windows per batch by default (also bounded by the model's memory budget)
DEFAULT_BATCH = 64
#: default area fraction of a map above which the network is computed in full
DEFAULT_THRESHOLD = 0.5


class OcclusionScorer(Protocol):
    """Maps window positions of one image to the model's outputs for the occluded copies."""

    approximate: bool

    def scores(
        self,
        image_chw: np.ndarray,
        positions: np.ndarray,
        fill: np.ndarray,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


def _check_positions(positions: np.ndarray) -> np.ndarray:
    """(P, 2) int64 [top, left], at least one."""
    array = np.asarray(positions)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise InputError(f"positions must be a non-empty (P, 2) array; got shape {array.shape}")
    return array.astype(np.int64)


def kernel_fill(fill: np.ndarray | float) -> np.ndarray:
    """A fill as the occlusion kernel takes it: a number, (C,) or (C, H, W) float32 (a
    (C, 1, 1) one becomes (C,))."""
    f = np.asarray(fill, np.float32)
    return f[:, 0, 0] if f.ndim == 3 and f.shape[1:] == (1, 1) else f


def _fill_chw(fill: np.ndarray | float, c: int) -> np.ndarray:
    """A fill as (C, 1, 1) or (C, H, W) float32."""
    f = np.asarray(fill, np.float32)
    if f.ndim == 0:
        return np.full((c, 1, 1), f, np.float32)
    if f.ndim == 1:
        return f.reshape(-1, 1, 1)
    return f


class NaiveOcclusion:
    """One full forward per window: occluded copies built by the native kernel, run through
    onnxruntime in batches (the floor incremental occlusion is measured against). Subclasses
    change how a batch runs by overriding :meth:`forward` (the bf16 scorer does)."""

    approximate = False
    #: windows per forward by default (also bounded by the model's memory budget)
    default_batch = DEFAULT_BATCH

    def __init__(self, model: Model, window: int | Sequence[int], taps: Sequence[str] = ()) -> None:
        self.model = model
        self.window = pair(window, "window")
        self.score_name = model.score_tensor
        self.taps = [model.tensor_name(t) for t in taps]
        self.outputs = list(dict.fromkeys([self.score_name, *self.taps]))
        self.stats: dict = {"engine": "naive"}

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The scores and taps of a batch of occluded images."""
        return self.model.run(x, taps=self.outputs, outputs=False)

    def scores(
        self,
        image_chw: np.ndarray,
        positions: np.ndarray,
        fill: np.ndarray,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scores (P, K) float64 and taps for the windows at ``positions`` (P, 2) [top, left];
        ``progress(done, P)`` after each batch."""
        image = np.ascontiguousarray(image_chw, np.float32)
        if image.ndim != 3:
            raise InputError(f"image must be (C, H, W); got shape {image.shape}")
        positions = _check_positions(positions)
        chunk = max(1, min(batch_size or self.default_batch, self.model.max_batch))
        fill_arr = kernel_fill(fill)
        buffer = np.empty((min(chunk, len(positions)), *image.shape), np.float32)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(positions), chunk):
            where = positions[start : start + chunk]
            x = kernels.occlusion_batch(
                image,
                where,
                self.window,
                fill_arr,
                out=buffer[: len(where)],
                device=self.model.device,
            )
            parts.append(self.forward(x))
            if progress is not None:
                progress(start + len(where), len(positions))
        out = {k: np.concatenate([p[k] for p in parts]) for k in self.outputs}
        self.stats["batch_size"] = chunk
        return out[self.score_name].reshape(len(positions), -1).astype(np.float64), out


class _Prepared:
    """A plan with its sessions for one image size."""

    def __init__(
        self,
        plan: Plan,
        steps: list,
        rest: ort.InferenceSession | None,
        divisors: dict[str, np.ndarray],
        shapes: dict[str, tuple[int, ...]],
    ):
        self.plan = plan
        self.steps = steps
        self.rest = rest
        self.divisors = divisors
        self.shapes = shapes


class IncrementalOcclusion:
    """Incremental (exact, or approximate with ``tau``) occlusion scores of one model.

    Args:
        model: the model (float32 input).
        window: (h, w) of the occluding window, or an int.
        taps: tensors returned besides the scores (layer names or aliases).
        threshold: a layer whose changed region covers more than this fraction of its map
            is computed in full, with everything after it.
        tau: projective-field threshold (Krypton's approximate mode): each changed region's
            side is capped at ``tau`` x its map's side; values outside keep their cached value.
            None (default) is exact.
        strict: raise :class:`UnsupportedOpError` when an op stops incremental computation
            early; otherwise one warning, and the network runs in full from that op (when no
            layer can be incremental, that is the naive forward).

    Attributes:
        stats: FLOPs per window (naive vs computed), the theoretical speed-up ceiling, per
            layer regions and modes, where the switch to full happened, batch size used.
    """

    def __init__(
        self,
        model: Model,
        window: int | Sequence[int],
        taps: Sequence[str] = (),
        threshold: float = DEFAULT_THRESHOLD,
        tau: float | None = None,
        *,
        strict: bool = False,
    ) -> None:
        if not 0 < threshold <= 1:
            raise InputError(f"threshold must be in (0, 1]; got {threshold}")
        if tau is not None and not 0 < tau <= 1:
            raise InputError(f"tau must be in (0, 1] or None; got {tau}")
        self.model = model
        self.window = pair(window, "window")
        self.threshold = float(threshold)
        self.tau = tau
        self.strict = strict
        self.approximate = tau is not None
        self.score_name = model.score_tensor
        self.taps = [model.tensor_name(t) for t in taps]
        self.outputs = list(dict.fromkeys([self.score_name, *self.taps]))
        self._prepared: dict[tuple, _Prepared] = {}
        self._types: dict[tuple, dict] = {}
        self._sessions: dict[tuple, ort.InferenceSession] = {}
        self._warned: set[tuple[str, str]] = set()
        self._buffers: dict[tuple[str, int], np.ndarray] = {}
        self._base_key: tuple | None = None
        self._base: dict[str, np.ndarray] = {}
        # per image: maps derived from the cached ones (padded copies, summed-area tables)
        self._derived: dict[str, np.ndarray] = {}
        self._weights = model.constants  # shared with the model (no copy per scorer)
        self.stats: dict = {}

    # ------------------------------------------------------------------------- planning

    def plan(self, image_chw: tuple[int, int, int], positions: np.ndarray | None = None) -> Plan:
        """The plan for images of this (C, H, W) and these window positions (P, 2) (default:
        any position)."""
        chw = tuple(int(d) for d in image_chw)
        return self._prepare(chw, self._starts(chw, positions)).plan  # type: ignore[arg-type]

    def supported(self, image_chw: tuple[int, int, int]) -> bool:
        """Whether any layer runs incrementally, with no op blocking it early."""
        plan = self.plan(image_chw)
        return plan.incremental and plan.blocked is None

    def _starts(
        self, chw: tuple[int, ...], positions: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distinct clamped window starts per axis."""
        _, h, w = chw
        wh, ww = self.window
        if wh > h or ww > w:
            raise InputError(f"window {self.window} must fit the {h}x{w} image")
        if positions is None:
            return np.arange(h - wh + 1), np.arange(w - ww + 1)
        return (
            np.unique(np.clip(positions[:, 0], 0, h - wh)),
            np.unique(np.clip(positions[:, 1], 0, w - ww)),
        )

    def _prepare(
        self, chw: tuple[int, int, int], starts: tuple[np.ndarray, np.ndarray]
    ) -> _Prepared:
        key = (chw, starts[0].tobytes(), starts[1].tobytes())
        ready = self._prepared.get(key)
        if ready is not None:
            return ready
        for (size, _, _), ready in self._prepared.items():
            # a plan for more starts serves these too (drill-down's subsets of the grid it
            # was planned for): no new plan, and no first runs of new crop shapes
            served = ready.plan.starts
            if size == chw and all(np.isin(s, t).all() for s, t in zip(starts, served)):
                return ready
        types = self._types.get(chw)
        if types is None:
            types = self._types[chw] = static_types(self.model.runnable, self.model.input_name, chw)
        plan = build_plan(
            self.model.runnable,
            self.model.input_name,
            chw,
            self.window,
            self.outputs,
            threshold=self.threshold,
            tau=self.tau,
            starts=starts,
            types=types,
            weights=self._weights,
        )
        if plan.blocked is not None and plan.blocked not in self._warned:
            op, node = plan.blocked
            message = (
                f"incremental occlusion: {op} node {node!r} cannot be computed on crops "
                f"({plan.switch_reason}); the network runs in full from there"
                + ("" if plan.incremental else " (the naive path)")
            )
            if self.strict:
                raise UnsupportedOpError(message)
            self._warned.add(plan.blocked)
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        shapes = self._shapes(chw, plan)
        steps = []
        divisors = {}
        opsets = self.model.runnable.opset_import
        for step in plan.steps:
            skey = (step.kind, tuple(n.name or n.output[0] for n in step.nodes))
            session = self._sessions.get(skey)
            if session is None:
                model = step_model(step, self._weights, opsets)
                session = self._sessions[skey] = self.model.session_factory(model, spin=False)
            steps.append((step, session))
            if step.nodes[0].op_type == "AveragePool":
                divisors[step.output] = _average_divisor(step, shapes[step.inputs[0]][1:])
        rest = None
        if plan.rest_outputs:
            rkey = ("rest", tuple(plan.frontier), tuple(plan.rest_outputs), chw)
            rest = self._sessions.get(rkey)
            if rest is None:
                model = rest_model(self.model.runnable, plan, shapes)
                rest = self._sessions[rkey] = self.model.session_factory(model, spin=False)
        ready = _Prepared(plan, steps, rest, divisors, shapes)
        if len(self._prepared) >= 16:
            self._prepared.pop(next(iter(self._prepared)))
        self._prepared[key] = ready
        return ready

    def _shapes(self, chw: tuple[int, int, int], plan: Plan) -> dict[str, tuple[int, ...]]:
        """(C, H, W) of every tensor the plan reads, from the step shapes (and the input),
        and the shapes of the spatial means."""
        shapes = {self.model.input_name: tuple(chw)}
        for step in plan.steps:
            shapes[step.output] = step.shape
        shapes.update({name: out_shape for name, (_, out_shape) in plan.means.items()})
        for step in plan.steps:
            for name in step.inputs:
                if name not in shapes:  # pragma: no cover - every input is a step output
                    raise UnsupportedOpError(f"no shape known for {name!r}")
        return shapes

    # ------------------------------------------------------------------------ execution

    def _cache(self, image: np.ndarray, ready: _Prepared) -> None:
        """The unoccluded image's maps the plan reads (one tapped forward per image)."""
        key = (image.shape, hash(image.tobytes()))
        if key != self._base_key:
            self._base = {self.model.input_name: image}
            self._derived = {}
            self._base_key = key
        missing = [s.output for s in ready.plan.steps if s.output not in self._base]
        if missing:
            values = self._base_session(ready).run(missing, {self.model.input_name: image[None]})
            self._base.update({k: v[0] for k, v in zip(missing, values)})

    def _base_session(self, ready: _Prepared) -> ort.InferenceSession:
        """One session exposing every (C, H, W) map of the graph, whatever the plan (a
        session per set of taps would hold a copy of the weights each)."""
        chw = ready.shapes[self.model.input_name]
        session = self._sessions.get(("base", chw))
        if session is None:
            types = self._types[chw]
            maps = [
                o
                for node in graph.data_nodes(self.model.runnable, self.model.input_name)
                for o in node.output
                if o and len(types.get(o, (0, ()))[1] or ()) == 4
            ]
            proto = graph.expose(self.model.runnable, maps, types)
            session = self._sessions[("base", chw)] = self.model.session_factory(proto, spin=False)
        return session

    def _buffer(self, name: str, index: int, shape: tuple[int, ...]) -> np.ndarray:
        """A reused float32 work buffer (fresh large allocations cost page faults)."""
        key = (name, index)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[key] = np.empty(shape, np.float32)
        return buffer

    def _padded_input(self, step: Step) -> np.ndarray:
        key = f"{step.inputs[0]}|{step.geometry}|{step.pad_value}"
        padded = self._derived.get(key)
        if padded is None:
            g = step.geometry
            assert g is not None
            base = self._base[step.inputs[0]]
            ends = g.covering_ends(base.shape[1:])
            padded = np.pad(
                base,
                ((0, 0), (g.begins[0], ends[0]), (g.begins[1], ends[1])),
                constant_values=step.pad_value,
            )
            self._derived[key] = padded
        return padded

    def scores(
        self,
        image_chw: np.ndarray,
        positions: np.ndarray,
        fill: np.ndarray | float,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scores (P, K) float64 and the tapped tensors (P, ...) of the occluded copies of
        ``image_chw`` (C, H, W), one per window at ``positions`` (P, 2) = [top, left], filled
        with ``fill`` (a number, (C,), (C, 1, 1) or (C, H, W)): what a forward of the
        occluded images gives, without running it in full. ``progress(done, P)`` is called
        after each batch."""
        image = np.ascontiguousarray(image_chw, np.float32)
        if image.ndim != 3:
            raise InputError(f"image must be (C, H, W); got shape {image.shape}")
        positions = _check_positions(positions)
        chw = image.shape
        ready = self._prepare(chw, self._starts(chw, positions))  # type: ignore[arg-type]
        fill_arr = _fill_chw(fill, image.shape[0])
        self._cache(image, ready)
        chunk = max(1, batch_size or self._default_batch(ready))
        parts = []
        for start in range(0, len(positions), chunk):
            parts.append(self._batch(ready, image, positions[start : start + chunk], fill_arr))
            if progress is not None:
                progress(min(start + chunk, len(positions)), len(positions))
        out = {k: np.concatenate([p[k] for p in parts]) for k in self.outputs}
        plan = ready.plan
        self.stats = {
            "engine": "incremental",
            "approximate": self.approximate,
            "tau": self.tau,
            "threshold": self.threshold,
            "flops_naive": plan.flops_naive,
            "flops_incremental": plan.flops_incremental,
            "flops_ratio": plan.flops_naive / max(plan.flops_incremental, 1),
            "switch": plan.switch,
            "switch_reason": plan.switch_reason,
            "blocked": plan.blocked,
            "layers": plan.layers,
            "batch_size": chunk,
        }
        return out[self.score_name].reshape(len(positions), -1).astype(np.float64), out

    def _default_batch(self, ready: _Prepared) -> int:
        per_window = ready.plan.elements_per_window * 4 * 3  # crops, outputs, rest buffers
        budget = max(1, self.model.memory_budget // max(per_window, 1))
        return int(min(DEFAULT_BATCH, budget))

    def _batch(
        self, ready: _Prepared, image: np.ndarray, positions: np.ndarray, fill: np.ndarray
    ) -> dict[str, np.ndarray]:
        plan = ready.plan
        _, h, w = image.shape
        wh, ww = self.window
        cy_img = np.clip(positions[:, 0], 0, h - wh)
        cx_img = np.clip(positions[:, 1], 0, w - ww)
        patches = {
            self.model.input_name: _input_patches(image, positions, cy_img, cx_img, (wh, ww), fill)
        }
        # rows of the plan's tables: the index of each window's start among those served
        ay = np.searchsorted(plan.starts[0], cy_img)
        ax = np.searchsorted(plan.starts[1], cx_img)
        for step, session in ready.steps:
            sy, sx = step.axes[0].start[ay], step.axes[1].start[ax]
            ny, nx = step.axes[0].size, step.axes[1].size
            if step.kind == "unary":
                feeds = {"x0": patches[step.inputs[0]]}
            elif step.kind == "window":
                g = step.geometry
                assert g is not None
                name = step.inputs[0]
                src_axes = plan.regions[name]
                hc = (ny - 1) * g.stride[0] + g.span(0)
                wc = (nx - 1) * g.stride[1] + g.span(1)
                cy, cx = sy * g.stride[0], sx * g.stride[1]  # padded coordinates
                py = src_axes[0].start[ay] + g.begins[0] - cy
                px = src_axes[1].start[ax] + g.begins[1] - cx
                feeds = {
                    "x0": _crops(
                        self._padded_input(step),
                        (cy, cx),
                        (hc, wc),
                        patches[name],
                        (py, px),
                        self._buffer(step.output, 0, (len(sy), self._base[name].shape[0], hc, wc)),
                    )
                }
            else:
                feeds = {}
                for i, name in enumerate(step.inputs):
                    src_axes = plan.regions[name]
                    py = src_axes[0].start[ay] - sy
                    px = src_axes[1].start[ax] - sx
                    buffer = self._buffer(
                        step.output, i, (len(sy), self._base[name].shape[0], ny, nx)
                    )
                    feeds[f"x{i}"] = _crops(
                        self._base[name], (sy, sx), (ny, nx), patches[name], (py, px), buffer
                    )
            y = run_session(session, None, feeds, f"the incremental step {step.output!r}")[0]
            divisor = ready.divisors.get(step.output)
            if divisor is not None:
                y *= kernels.crop_batch(divisor[None], np.stack([sy, sx], -1), (ny, nx))
            patches[step.output] = y
        out: dict[str, np.ndarray] = {}
        if ready.rest is not None:
            feeds = {}
            for name in plan.frontier:
                feeds[name] = self._materialize(name, plan, patches, ay, ax, image, positions, fill)
            values = ready.rest.run(plan.rest_outputs, feeds)
            out.update(zip(plan.rest_outputs, values))
        for name in self.outputs:
            if name not in out:  # a copy: the work buffer is reused by the next batch
                full = self._materialize(name, plan, patches, ay, ax, image, positions, fill)
                out[name] = full.copy()
        return out

    def _mean(self, source: str, plan: Plan, patches, ay, ax) -> np.ndarray:
        """(B, C) spatial means of ``source`` per window, without its full maps: the
        unoccluded map's sum, minus the region's cached values, plus its recomputed ones
        (float64: exact to float32 rounding)."""
        base = self._base[source]
        key = f"{source}|integral"
        integral = self._derived.get(key)
        if integral is None:
            integral = np.zeros((base.shape[0], base.shape[1] + 1, base.shape[2] + 1))
            integral[:, 1:, 1:] = base.astype(np.float64).cumsum(1).cumsum(2)
            self._derived[key] = integral
        axes = plan.regions[source]
        y0, x0 = axes[0].start[ay], axes[1].start[ax]
        patch = patches[source]
        old = _region_sums(integral, y0, x0, axes[0].size, axes[1].size)
        new = patch.sum(axis=(2, 3), dtype=np.float64)
        total = integral[:, -1, -1]
        return ((total - old + new) / (base.shape[1] * base.shape[2])).astype(np.float32)

    def _materialize(self, name, plan, patches, ay, ax, image, positions, fill) -> np.ndarray:
        """Full maps (B, C, H, W) of a changed tensor: the cached map with each window's
        region pasted in."""
        if name == self.model.input_name:
            f = fill[:, 0, 0] if fill.shape[1:] == (1, 1) else fill
            return kernels.occlusion_batch(
                image, positions, self.window, f, device=self.model.device
            )
        if name in plan.means:
            source, out_shape = plan.means[name]
            return self._mean(source, plan, patches, ay, ax).reshape(len(ay), *out_shape)
        base = self._base[name]
        axes = plan.regions[name]
        return kernels.crop_batch(
            base,
            np.zeros((len(ay), 2), np.int64),
            base.shape[1:],
            patches[name],
            np.stack([axes[0].start[ay], axes[1].start[ax]], -1),
            out=self._buffer(name, -1, (len(ay), *base.shape)),
        )


def _crops(
    source: np.ndarray,
    corners: tuple[np.ndarray, np.ndarray],
    size: tuple[int, int],
    patch: np.ndarray,
    offsets: tuple[np.ndarray, np.ndarray],
    out: np.ndarray,
) -> np.ndarray:
    """(B, C, h, w) crops of ``source`` at ``corners`` (rows, columns) with each window's
    ``patch`` written in at ``offsets``: the patch itself when it is every crop whole (a 1x1
    conv or a merge of equal regions), else :func:`kernels.crop_batch` into ``out``."""
    if patch.shape[2:] == tuple(size) and not offsets[0].any() and not offsets[1].any():
        return patch
    return kernels.crop_batch(
        source, np.stack(corners, -1), size, patch, np.stack(offsets, -1), out=out
    )


def _region_sums(integral: np.ndarray, y0, x0, ny: int, nx: int) -> np.ndarray:
    """(B, C) sums of the (ny, nx) regions at (y0[b], x0[b]) from a (C, H + 1, W + 1)
    summed-area table."""
    y1, x1 = y0 + ny, x0 + nx
    return (integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]).T


def _input_patches(
    image: np.ndarray,
    positions: np.ndarray,
    ay: np.ndarray,
    ax: np.ndarray,
    window: tuple[int, int],
    fill: np.ndarray,
) -> np.ndarray:
    """(B, C, wh, ww): the occluded image on each window's clamped region."""
    wh, ww = window
    c, h, w = image.shape
    out = np.empty((len(positions), c, wh, ww), np.float32)
    for b, ((top, left), y, x) in enumerate(zip(positions, ay, ax)):
        out[b] = image[:, y : y + wh, x : x + ww]
        r0, r1 = max(top, 0), min(top + wh, h)
        c0, c1 = max(left, 0), min(left + ww, w)
        if r1 > r0 and c1 > c0:
            if fill.shape[1:] == (1, 1):
                out[b, :, r0 - y : r1 - y, c0 - x : c1 - x] = fill
            else:
                out[b, :, r0 - y : r1 - y, c0 - x : c1 - x] = fill[:, r0:r1, c0:c1]
    return out


def _average_divisor(step: Step, in_hw: tuple[int, ...]) -> np.ndarray:
    """(Ho, Wo) factors turning the crop's ``sum / (kh * kw)`` into the op's average: the
    ONNX divisor counts the pads only with count_include_pad, never the ceil-mode overhang."""
    g = step.geometry
    assert g is not None
    attrs = graph.attributes(step.nodes[0])
    include = bool(attrs.get("count_include_pad", 0))
    h, w = in_hw
    (top, left), (bottom, right) = g.begins, g.ends
    padded_h, padded_w = g.padded_size(in_hw)
    ones = np.zeros((padded_h, padded_w))
    if include:
        ones[: top + h + bottom, : left + w + right] = 1
    else:
        ones[top : top + h, left : left + w] = 1
    ho, wo = step.shape[1:]
    kh, kw = g.kernel
    sums = np.empty((ho, wo))
    integral = np.pad(ones.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.arange(ho) * g.stride[0]
    xs = np.arange(wo) * g.stride[1]
    sums = (
        integral[ys[:, None] + kh, xs[None] + kw]
        - integral[ys[:, None], xs[None] + kw]
        - integral[ys[:, None] + kh, xs[None]]
        + integral[ys[:, None], xs[None]]
    )
    return (kh * kw / np.maximum(sums, 1)).astype(np.float32)


__all__ = ["DEFAULT_BATCH", "IncrementalOcclusion", "NaiveOcclusion", "OcclusionScorer"]
