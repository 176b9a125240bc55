"""Reduced-precision occlusion scores: the occluded copies run in bfloat16 through the torch
bridge, an approximate occlusion mode whose error is measured and reported.

bf16 keeps float32's exponent range with an 8-bit mantissa (relative rounding ~4e-3 per
value). The scores of a bf16 forward differ from float32 by ~1e-2 relative; where a window's
drop is large against that (a trained network's class logit), the map keeps its shape, where
it is not (random-weight networks with large logits) the map gets noisy: what it costs is
therefore reported, never assumed. Each call re-scores a few windows in float32
(onnxruntime) and records the difference in :attr:`Bf16Occlusion.stats`, and
:func:`cnnviz.attribution.scoring.approximation_error` compares whole maps. It is never a
mode for gradients (a bf16 VGG-16 input gradient is far from the float32 one).

Speed depends on the CPU and the network. onnxruntime's CPU provider has no bf16
convolution, so bf16 runs in torch (oneDNN). On this project's 2-core AMD EPYC (AVX512-BF16,
no AMX), batch 32 (VGG: 8), best of 3 interleaved against onnxruntime float32: VGG-16-like
1.48x faster, ResNet-18-like 0.64x, SqueezeNet 1.1 0.58x (small 1x1 convolutions and
unfused ReLU/Concat dominate there). Weights and activations in bf16 with channels-last
layout was the fastest torch variant (``torch.autocast`` on float32 weights casts per op; bf16
in NCHW layout reorders per op), so the module is converted, not autocast. CPUs with AMX
run bf16 products several times faster.

torch is imported lazily (this module is only imported by code that asked for bf16).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import kernels
from ..errors import InputError
from ..incremental import NaiveOcclusion
from ..incremental.engine import kernel_fill
from ..model import Model
from . import require_torch, to_torch

#: windows re-scored in float32 per call to measure the bf16 error (0: none)
DEFAULT_PROBE = 4


class Bf16Occlusion(NaiveOcclusion):
    """Occlusion scores with the occluded forwards in bfloat16 (an approximate
    :class:`~cnnviz_core.incremental.OcclusionScorer`): the naive scorer's batches, run by
    the torch bridge in bf16 instead of onnxruntime in float32.

    Args:
        model: the model (float32 input); converted once with :func:`~.to_torch`.
        window: (h, w) of the occluding window, or an int.
        taps: tensors returned besides the scores (layer names or aliases).
        probe: windows re-scored per call in float32 by onnxruntime (evenly spread over the
            positions) to measure the score error; 0 skips the check.
        channels_last: run in channels-last layout (the faster one for bf16 on CPUs).

    Attributes:
        stats: ``engine``, ``precision``, ``batch_size`` and, after a call with ``probe`` >
            0, ``probe_positions`` and ``probe_max_abs_diff_rel`` (max |bf16 - fp32| score
            over the probed windows / max |fp32 score|).
    """

    approximate = True
    default_batch = 32

    def __init__(
        self,
        model: Model,
        window: int | Sequence[int],
        taps: Sequence[str] = (),
        *,
        probe: int = DEFAULT_PROBE,
        channels_last: bool = True,
    ) -> None:
        torch = require_torch()
        if probe < 0:
            raise InputError(f"probe must be >= 0 windows; got {probe}")
        super().__init__(model, window, taps)
        self.probe = int(probe)
        self.channels_last = channels_last
        net = to_torch(model, outputs=[self.score_name]).eval().to(torch.bfloat16)
        self._format = torch.channels_last if channels_last else torch.contiguous_format
        # torch's stubs omit Module.to's documented memory_format keyword
        self.net = net.to(memory_format=self._format)  # type: ignore[call-overload]
        self.stats = {"engine": "torch", "precision": "bf16"}

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The scores and taps of a float32 (B, C, H, W) batch, run in bf16, as float32."""
        torch = require_torch()
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(torch.bfloat16).contiguous(memory_format=self._format)
            values = self.net(xt, taps=self.outputs, outputs=False)
            return {k: values[k].float().contiguous().numpy() for k in self.outputs}

    def scores(
        self,
        image_chw: np.ndarray,
        positions: np.ndarray,
        fill: np.ndarray,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """As :meth:`NaiveOcclusion.scores`, computed in bf16; then ``probe`` windows are
        re-scored in float32 and the difference recorded in :attr:`stats`."""
        scores, out = super().scores(image_chw, positions, fill, batch_size, progress)
        if self.probe:
            self._probe(np.ascontiguousarray(image_chw, np.float32), positions, fill, scores)
        return scores, out

    def _probe(
        self, image: np.ndarray, positions: np.ndarray, fill: Any, scores: np.ndarray
    ) -> None:
        """Re-score a few windows in float32 (onnxruntime) and record the difference."""
        positions = np.asarray(positions, np.int64)
        pick = np.unique(np.linspace(0, len(positions) - 1, min(self.probe, len(positions))))
        pick = pick.astype(np.int64)
        x = kernels.occlusion_batch(image, positions[pick], self.window, kernel_fill(fill))
        exact = self.model.run(x, taps=[self.score_name], outputs=False)[self.score_name]
        exact = exact.reshape(len(pick), -1).astype(np.float64)
        scale = max(float(np.abs(exact).max()), 1e-30)
        self.stats["probe_positions"] = len(pick)
        self.stats["probe_max_abs_diff_rel"] = float(np.abs(scores[pick] - exact).max() / scale)


__all__ = ["DEFAULT_PROBE", "Bf16Occlusion"]
