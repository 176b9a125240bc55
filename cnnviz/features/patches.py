"""Maximally activating patches (Zeiler & Fergus 2014; Girshick et al. 2014): for each
channel of a layer, the k image regions of a data set that excite it most, found in one
streaming pass, cropped by the channel's exact receptive field, shown beside their
guided-backprop or deconvnet projection. Also the top whole images of any unit, fully
connected ones included.

Memory: one chunk of images and activations, plus a running top-k per channel (values,
ids and the k input crops): O(C * k * field size), independent of the data set's length.
Each chunk's candidates are cut to k per channel by ``np.argpartition`` and merged with the
running k (2k values per channel), so the pass costs O(activations) per chunk.

Shape convention: a layer's output (N, C, H, W) or (N, C); crops (C_in, h, w) in the model's
preprocessed space (the zero padding the network saw is zero there too).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnviz_core import InputError, Model, Preprocess
from cnnviz_core.graph import ReceptiveField

from ..render.display import Displayable
from ..render.images import text_box, text_width, tile_grid, upscale
from .sources import DEFAULT_BATCH, ENGINES, Chunk, Progress, Source, iter_chunks

log = logging.getLogger(__name__)

#: how a whole image scores for a spatial channel in :func:`top_images`
REDUCTIONS = ("max", "mean")
#: images per guided-backprop batch when computing projections
_PROJECTION_BATCH = 64


@dataclass
class TopPatches(Displayable):
    """The top-k hits of each chosen channel of a layer, strongest first.

    Attributes:
        layer: the layer (name as given).
        channels: int64 (C,) the channels, in the order of the other arrays' first axis.
        values: float32 (C, k) activation of each hit (-inf: empty slot, fewer hits).
        images: int64 (C, k) index of the hit's image in the data set (-1: empty).
        positions: int64 (C, k, 2) (y, x) of the hit in the layer's map; (-1, -1) for a
            vector layer.
        windows: int64 (C, k, 4) the input box (top, left, bottom, right), inclusive,
            clipped to the image; the whole image for whole-image hits.
        crops: float32 (C, k, C_in, h, w) the preprocessed input under each hit's full
            receptive field (zero where the field leaves the image), or the whole image.
        field: the layer's receptive field (None: whole images).
        image_size: (H, W) of the model input.
        kind: ``patch`` (receptive-field crops) or ``image`` (whole images).
        preprocess: the model's preprocessing (to show the crops without the model).
    """

    layer: str
    channels: np.ndarray
    values: np.ndarray
    images: np.ndarray
    positions: np.ndarray
    windows: np.ndarray
    crops: np.ndarray
    field: ReceptiveField | None
    image_size: tuple[int, int]
    kind: str
    preprocess: Preprocess | None = None

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def picture(self) -> np.ndarray:
        """The k-per-channel grid of :func:`render_top_patches` (crops, no projections),
        (H, W, 3) uint8: what Jupyter and ``plot()`` show."""
        return render_top_patches(None, self)

    def facts(self) -> list[tuple[str, object]]:
        """Layer, channels, hits per channel and the strongest activations, for the HTML
        display."""
        found = self.values[np.isfinite(self.values)]
        return [
            ("layer", self.layer),
            ("channels", ", ".join(str(int(c)) for c in self.channels)),
            (
                "hits per channel",
                f"{self.k} ({'receptive-field crops' if self.kind == 'patch' else 'whole images'})",
            ),
            ("activation range", f"{found.min():.4g} to {found.max():.4g}" if found.size else "-"),
        ]

    def field_box(self, c: int, slot: int) -> tuple[int, int, int, int]:
        """The unclipped receptive-field box (top, left, bottom, right) of a hit."""
        if self.field is None:
            h, w = self.image_size
            return 0, 0, h - 1, w - 1
        y, x = self.positions[c, slot]
        return self.field.window(int(y), int(x))

    def pixels(self, model: Model | None = None) -> np.ndarray:
        """The crops as the model sees them: uint8 (C, k, h, w, 3) (padding shows as the
        colour that preprocesses to 0), undone by ``model``'s preprocessing or, without a
        model, the one recorded in :attr:`preprocess`."""
        preprocess = model.preprocess if model is not None else self.preprocess
        if preprocess is None:
            raise InputError("these top patches record no preprocessing: pass the model")
        c, k = self.values.shape
        flat = self.crops.reshape(c * k, *self.crops.shape[2:])
        return preprocess.invert(flat).reshape(c, k, *flat.shape[2:], 3)


class RunningTopK:
    """The k largest (value, id) pairs per row, merged chunk by chunk.

    Ties keep the smaller id, in every step, so the result is the exact top k by (value
    descending, id ascending) of all candidates whatever the chunking: partial results
    (e.g. from Ray workers) merge to the same entries. ``update`` reports which slots
    changed, so callers can store data (crops) for the new entries only.
    """

    def __init__(self, rows: int, k: int):
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        self.k = k
        self.values = np.full((rows, k), -np.inf, np.float32)
        self.ids = np.full((rows, k), -1, np.int64)

    def update(self, values: np.ndarray, ids: np.ndarray) -> list[tuple[int, int, int]]:
        """Merge candidates.

        Args:
            values: (rows, m) candidate values.
            ids: (rows, m) or (m,) unique non-negative ids of the candidates.

        Returns:
            (row, slot, candidate column) for every slot that now holds a candidate.
        """
        rows, m = values.shape
        ids = np.broadcast_to(ids, values.shape)
        if m > self.k:
            part = _top_columns(values, ids, self.k)
        else:
            part = np.broadcast_to(np.arange(m), (rows, m))
        cand_values = np.take_along_axis(values, part, axis=1).astype(np.float32)
        cand_ids = np.take_along_axis(ids, part, axis=1)
        both_values = np.concatenate([self.values, cand_values], axis=1)
        both_ids = np.concatenate([self.ids, cand_ids], axis=1)
        # order by value (descending), then id (ascending); empty slots (id -1) last
        empty = both_ids < 0
        order = np.lexsort((np.where(empty, np.iinfo(np.int64).max, both_ids), -both_values))
        keep = order[:, : self.k]
        changed = []
        new_values = np.take_along_axis(both_values, keep, axis=1)
        new_ids = np.take_along_axis(both_ids, keep, axis=1)
        kept_old = np.zeros((rows, self.k), bool)
        old_slot = np.where(keep < self.k, keep, -1)
        rows_with_new = np.flatnonzero((keep >= self.k).any(axis=1))
        # keep old entries in their slots; put new ones into the slots freed by evictions
        final_values, final_ids = self.values.copy(), self.ids.copy()
        for r in rows_with_new:
            kept_old[r, old_slot[r][old_slot[r] >= 0]] = True
            free = np.flatnonzero(~kept_old[r])
            incoming = np.flatnonzero(keep[r] >= self.k)
            for slot, n in zip(free, incoming):
                final_values[r, slot] = new_values[r, n]
                final_ids[r, slot] = new_ids[r, n]
                changed.append((int(r), int(slot), int(part[r, keep[r, n] - self.k])))
        self.values, self.ids = final_values, final_ids
        return changed

    def sorted_order(self) -> np.ndarray:
        """(rows, k) slot order: value descending, then id ascending, empty slots last."""
        ids = np.where(self.ids < 0, np.iinfo(np.int64).max, self.ids)
        return np.lexsort((ids, -self.values))


def _top_columns(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) columns of the k largest values of each row, ties at the k-th value broken
    by the smaller id (``np.argpartition`` alone picks tied entries arbitrarily)."""
    part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(values, part, axis=1).min(axis=1, keepdims=True)
    for r in np.flatnonzero((values >= kth).sum(axis=1) > k):
        above = np.flatnonzero(values[r] > kth[r])
        tied = np.flatnonzero(values[r] == kth[r])
        need = k - len(above)
        if need < len(tied):  # ids are unique: the `need` smallest are one definite set
            tied = tied[np.argpartition(ids[r, tied], need - 1)[:need]]
        part[r] = np.concatenate([above, tied])
    return part


def _select_channels(model: Model, layer: str, channels: Sequence[int] | None) -> np.ndarray:
    shape = model.layer(layer).shape if model.tensor_name(layer) in _layer_names(model) else None
    count = shape[1] if shape and len(shape) >= 2 and isinstance(shape[1], int) else None
    if channels is None:
        if count is None:
            raise InputError(f"the channel count of layer {layer!r} is unknown; give channels")
        return np.arange(count, dtype=np.int64)
    chosen = np.asarray(list(channels), np.int64)
    if count is not None and (chosen.min(initial=0) < 0 or chosen.max(initial=0) >= count):
        raise InputError(f"layer {layer!r} has channels 0..{count - 1}; got {list(chosen)}")
    return chosen


def _layer_names(model: Model) -> set[str]:
    return {layer.name for layer in model.layers}


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(padded crop of the full box, clipped box) from one (C, H, W) image."""
    top, left, bottom, right = box
    height, width = image.shape[1:]
    out = np.zeros((image.shape[0], bottom - top + 1, right - left + 1), np.float32)
    t, lft = max(top, 0), max(left, 0)
    b, r = min(bottom, height - 1), min(right, width - 1)
    if t <= b and lft <= r:
        out[:, t - top : b - top + 1, lft - left : r - left + 1] = image[:, t : b + 1, lft : r + 1]
    return out, np.array([t, lft, b, r], np.int64)


class _TopState:
    """The running top-k of a layer's chosen channels with each hit's position, window and
    crop; fed chunk by chunk (:meth:`add`) or with other states (:meth:`merge`)."""

    def __init__(
        self,
        model: Model,
        layer: str,
        k: int,
        chosen: np.ndarray,
        whole: bool,
        reduce: str,
        distinct_images: bool,
    ):
        self.layer, self.chosen, self.preprocess = layer, chosen, model.preprocess
        self.whole, self.reduce, self.distinct = whole, reduce, distinct_images
        self.field = None if whole else model.layer(layer).receptive_field
        self.top = RunningTopK(len(chosen), k)
        self.c_in, self.height, self.width = model.input_shape
        self.positions = np.full((len(chosen), k, 2), -1, np.int64)
        self.windows = np.full((len(chosen), k, 4), -1, np.int64)
        self.crops: np.ndarray | None = None
        self.spatial_size: tuple[int, int] | None = None

    def add(self, chunk: Chunk, out: np.ndarray) -> None:
        """Merge one chunk's activations ``out`` (n, C, ...) at the layer."""
        n, chosen, k = len(out), self.chosen, self.top.k
        acts = out.reshape(n, out.shape[1], -1)[:, chosen]  # (n, C, P)
        if self.spatial_size is None:
            self.spatial_size = tuple(out.shape[2:4]) if out.ndim == 4 else (1, 1)  # type: ignore
            field, whole = self.field, self.whole
            if field is None and out.ndim == 4 and out.shape[2:] != (1, 1) and not whole:
                log.info("layer %r has no receptive field: showing whole images", self.layer)
            if field is None or out.ndim != 4:
                self.field = None
            box = (self.height, self.width) if self.field is None else self.field.size
            self.crops = np.zeros((len(chosen), k, self.c_in, *box), np.float32)
        crops, spatial_size, field = self.crops, self.spatial_size, self.field
        assert crops is not None
        per_image = acts.shape[2]
        if field is None or self.distinct:
            # one candidate per image: its best position (or the reduction for images)
            if field is None and self.reduce == "mean":
                best = np.zeros((n, len(chosen)), np.int64)
                values = acts.mean(axis=2)
            else:
                best = acts.argmax(axis=2)
                values = np.take_along_axis(acts, best[..., None], axis=2)[..., 0]
            ids = (chunk.start + np.arange(n))[:, None] * per_image + best  # (n, C)
            changed = self.top.update(values.T, ids.T)
            cand_ids = ids.T
        else:
            values = acts.transpose(1, 0, 2).reshape(len(chosen), n * per_image)
            flat_ids = chunk.start * per_image + np.arange(n * per_image, dtype=np.int64)
            changed = self.top.update(values, flat_ids)
            cand_ids = np.broadcast_to(flat_ids, values.shape)
        for row, slot, column in changed:
            gid = int(cand_ids[row, column])
            local, pos = divmod(gid, per_image)
            local -= chunk.start
            y, x = divmod(pos, spatial_size[1])
            if out.ndim == 4:
                self.positions[row, slot] = (y, x)
            image = chunk.batch[local]
            if field is None:
                crops[row, slot] = image
                self.windows[row, slot] = (0, 0, self.height - 1, self.width - 1)
            else:
                crops[row, slot], self.windows[row, slot] = _crop(image, field.window(y, x))

    def merge(self, other: _TopState) -> None:
        """Merge another state's hits (e.g. a worker's, over other chunks of the data set):
        the result equals one pass over both parts' chunks."""
        if other.crops is None:
            return
        if self.crops is None:
            self.field, self.spatial_size = other.field, other.spatial_size
            self.crops = np.zeros_like(other.crops)
        for row, slot, column in self.top.update(other.top.values, other.top.ids):
            self.positions[row, slot] = other.positions[row, column]
            self.windows[row, slot] = other.windows[row, column]
            self.crops[row, slot] = other.crops[row, column]

    def result(self) -> TopPatches:
        if self.crops is None or self.spatial_size is None:
            raise InputError("the data set is empty")
        order = self.top.sorted_order()
        take = np.arange(len(self.chosen))[:, None], order
        ids = self.top.ids[take]
        per_image = self.spatial_size[0] * self.spatial_size[1]
        return TopPatches(
            layer=self.layer,
            channels=self.chosen,
            values=self.top.values[take],
            images=np.where(ids >= 0, ids // per_image, -1),
            positions=self.positions[take],
            windows=self.windows[take],
            crops=self.crops[take],
            field=self.field,
            image_size=(self.height, self.width),
            kind="image" if self.field is None else "patch",
            preprocess=self.preprocess,
        )


def _chunk_top(model: Model, chunk: Chunk, state: _TopState) -> _TopState:
    """One chunk's top-k (a worker's job): ``state`` is an empty template."""
    part = copy.deepcopy(state)
    part.add(chunk, model.run(chunk.batch, taps=[state.layer], outputs=False)[state.layer])
    return part


def _stream(
    model: Model,
    source: Source,
    layer: str,
    k: int,
    channels: Sequence[int] | None,
    whole: bool,
    reduce: str,
    distinct_images: bool,
    batch_size: int,
    progress: Progress | None,
    engine: str = "local",
) -> TopPatches:
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    chosen = _select_channels(model, layer, channels)
    state = _TopState(model, layer, k, chosen, whole, reduce, distinct_images)
    if engine == "ray":
        from .distributed import map_chunks

        job = functools.partial(_chunk_top, state=copy.deepcopy(state))
        for _, part in map_chunks(model, source, job, batch_size=batch_size, progress=progress):
            state.merge(part)
        return state.result()
    for chunk in iter_chunks(model, source, batch_size, progress=progress):
        state.add(chunk, model.run(chunk.batch, taps=[layer], outputs=False)[layer])
    return state.result()


def top_patches(
    model: Model,
    source: Source,
    layer: str,
    k: int = 9,
    *,
    channels: Sequence[int] | None = None,
    distinct_images: bool = True,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    engine: str = "local",
) -> TopPatches:
    """The k input patches that activate each channel of a spatial layer most.

    Args:
        model: the model.
        source: a data set (see :mod:`cnnviz.features.sources`).
        layer: a layer with a receptive field (``cnnviz layers``); a layer without one
            (global pooling, fully connected) gives whole images, as :func:`top_images`.
        k: hits per channel.
        channels: which channels (default all).
        distinct_images: at most one hit per image and channel (its strongest position);
            else any k positions, several possibly from one image.
        batch_size: images per forward chunk.
        progress: ``progress(done, total)`` after each chunk.
        engine: ``local``, or ``ray`` to run the chunks on Ray workers (the ``distributed``
            extra; see :mod:`cnnviz.features.distributed`): the same result exactly.

    Returns:
        :class:`TopPatches`, strongest first; ties by value go to the smaller image index,
        then the earlier position.
    """
    return _stream(
        model,
        source,
        layer,
        k,
        channels,
        False,
        "max",
        distinct_images,
        batch_size,
        progress,
        engine,
    )


def top_images(
    model: Model,
    source: Source,
    layer: str,
    k: int = 9,
    *,
    channels: Sequence[int] | None = None,
    reduce: str = "max",
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    engine: str = "local",
) -> TopPatches:
    """The k whole images that activate each unit of any layer most (fully connected
    layers and logits included; a spatial channel scores its ``max`` or ``mean``);
    ``engine="ray"`` as in :func:`top_patches`."""
    if reduce not in REDUCTIONS:
        raise InputError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    return _stream(
        model, source, layer, k, channels, True, reduce, True, batch_size, progress, engine
    )


def projections(model: Model, result: TopPatches, mode: str = "guided") -> np.ndarray:
    """The guided-backprop (``guided``) or deconvnet (``deconvnet``) projection of every hit
    onto its input crop: float32, shaped like ``result.crops``.

    A unit depends only on the input under its receptive field, so each crop is pasted into
    an otherwise zero image and back-propagated from the unit there; the result equals the
    projection computed on the original image, restricted to the crop.
    """
    from cnnviz_core.backward import gradients
    from cnnviz_core.targets import Neuron

    modes = ("guided", "deconvnet")
    if mode not in modes:
        raise InputError(f"mode must be one of {modes}, got {mode!r}")
    c, k = result.values.shape
    height, width = result.image_size
    out = np.zeros_like(result.crops)
    hits = [(r, s) for r in range(c) for s in range(k) if result.images[r, s] >= 0]
    for start in range(0, len(hits), _PROJECTION_BATCH):
        part = hits[start : start + _PROJECTION_BATCH]
        canvas = np.zeros((len(part), result.crops.shape[2], height, width), np.float32)
        targets = []
        for n, (r, s) in enumerate(part):
            channel = int(result.channels[r])
            y, x = (int(v) for v in result.positions[r, s])
            if result.kind == "image":
                canvas[n] = result.crops[r, s]
                targets.append(
                    Neuron(result.layer, channel) if y < 0 else Neuron(result.layer, channel, y, x)
                )
                continue
            top, left, _, _ = result.field_box(r, s)
            _paste(canvas[n], result.crops[r, s], top, left)
            targets.append(Neuron(result.layer, channel, y, x))
        maps = gradients(model, model.prepare(canvas), targets, mode=mode).grads[model.input_name]
        for n, (r, s) in enumerate(part):
            if result.kind == "image":
                out[r, s] = maps[n]
            else:
                out[r, s] = _crop(maps[n], result.field_box(r, s))[0]
    return out


def _paste(canvas: np.ndarray, crop: np.ndarray, top: int, left: int) -> None:
    height, width = canvas.shape[1:]
    h, w = crop.shape[1:]
    t, lft = max(top, 0), max(left, 0)
    b, r = min(top + h, height), min(left + w, width)
    if t < b and lft < r:
        canvas[:, t:b, lft:r] = crop[:, t - top : b - top, lft - left : r - left]


def _projection_picture(maps: np.ndarray) -> np.ndarray:
    """(C, h, w) signed projection as uint8 (h, w, 3) around mid-grey."""
    scale = np.abs(maps).max()
    rgb = np.moveaxis(maps / (scale if scale > 0 else 1), 0, -1)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.rint(np.clip(0.5 + 0.5 * rgb[..., :3], 0, 1) * 255).astype(np.uint8)


def render_top_patches(
    model: Model | None,
    result: TopPatches,
    *,
    projected: np.ndarray | None = None,
    rows: Sequence[int] | None = None,
    min_side: int = 48,
    label_channels: bool = True,
    blocks: int | None = None,
) -> np.ndarray:
    """The k-per-channel grid: one row per channel, its hits strongest first, each followed
    by its projection when ``projected`` (from :func:`projections`) is given.

    Each row starts with its label (``ch 12``) when ``label_channels``; the rows are laid
    out in ``blocks`` side-by-side columns of channels (default: as many as make the
    picture about square), so many channels give a bounded height rather than one strip.

    ``model``: whose preprocessing shows the crops (None: the one the result records).

    Returns:
        uint8 (H, W, 3).
    """
    pixels = result.pixels(model)
    chosen = list(range(len(result.channels)) if rows is None else rows)
    blank = np.full_like(upscale(pixels[0, 0], min_side=min_side), 255)
    columns = result.k * (2 if projected is not None else 1)
    labels = [f"ch {int(result.channels[r])}" for r in chosen]
    label_width = max(text_width(label) for label in labels) + 8 if label_channels else 0
    strips = []
    for r, label in zip(chosen, labels):
        tiles = []
        for s in range(result.k):
            empty = result.images[r, s] < 0
            tiles.append(blank if empty else upscale(pixels[r, s], min_side=min_side))
            if projected is not None:
                picture = _projection_picture(projected[r, s])
                tiles.append(blank if empty else upscale(picture, min_side=min_side))
        strip = tile_grid(tiles, columns=columns, pad=2, background=255)
        if strip.ndim == 2 or strip.shape[2] == 1:
            strip = np.repeat(strip.reshape(*strip.shape[:2], 1), 3, axis=2)
        if label_channels:
            strip = np.concatenate([text_box(label, label_width, strip.shape[0]), strip], axis=1)
        strips.append(strip)
    height, width = strips[0].shape[:2]
    if blocks is None:
        blocks = max(1, round(math.sqrt(len(strips) * height / width)))
    blocks = max(1, min(blocks, len(strips)))
    per_block = math.ceil(len(strips) / blocks)
    empty_strip = np.full_like(strips[0], 255)
    strips += [empty_strip] * (blocks * per_block - len(strips))
    gap = np.full((per_block * height, 8, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for b in range(blocks):
        if parts:
            parts.append(gap)
        parts.append(np.concatenate(strips[b * per_block : (b + 1) * per_block], axis=0))
    return np.concatenate(parts, axis=1)
