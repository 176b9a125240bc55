"""Fourier / decorrelated-colour image parameterization (Olah, Mordvintsev & Schubert 2017,
"Feature visualization", Distill; the Lucid library).

The optimized variable is the image's 2-D real spectrum, scaled by ``1 / frequency**decay``
so that gradient steps move low frequencies as much as high ones (pixel-space ascent is
dominated by high-frequency patterns); the three channels it produces are decorrelated
colours, mapped to RGB by a fixed 3x3 matrix (the square root of ImageNet's colour
covariance, as Lucid), and a sigmoid keeps every pixel inside [0, 255].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import InputError, Model

from .base import require_torch
from .template import Parameterization

#: square root of ImageNet's RGB colour covariance (Lucid's ``color_correlation_svd_sqrt``),
#: columns: decorrelated channels, rows: R, G, B
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)


class FourierImage(Parameterization):
    """A batch of images as learnable spectra (a :class:`~.template.Parameterization`):
    ``params`` to optimize, ``image()`` the (N, C, H, W) model input they make
    (differentiable, a new tensor every call).

    Args:
        model: the model (3-channel input: RGB or BGR).
        n: images.
        seed: seeds the initial spectrum (Gaussian, ``std``).
        decay: the spectrum is scaled by ``1 / frequency**decay`` (1, as Lucid).
        std: standard deviation of the initial spectrum (0.01: a nearly grey start).
    """

    fresh = True

    def __init__(self, model: Model, n: int, seed: int, decay: float = 1.0, std: float = 0.01):
        torch = require_torch()
        c, h, w = model.input_shape
        pre = model.preprocess
        if c != 3 or pre.channel_order not in ("RGB", "BGR"):
            raise InputError(
                f"the fourier parameterization needs a 3-channel RGB/BGR input, got {c} "
                f"channels ({pre.channel_order})"
            )
        self.size = (h, w)
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        freqs = np.sqrt(fx**2 + fy**2)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay
        # irfft2's default normalization divides by h*w; sqrt(h*w) makes it orthonormal
        self.scale = torch.from_numpy((scale * np.sqrt(h * w)).astype(np.float32))
        rng = np.random.default_rng(seed)
        spectrum = rng.standard_normal((n, 3, *scale.shape, 2)).astype(np.float32) * std
        self.spectrum = torch.from_numpy(spectrum).requires_grad_(True)
        colors = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))
        if pre.channel_order == "BGR":
            colors = colors[::-1]
        self.colors = torch.from_numpy(np.ascontiguousarray(colors))
        # model input = (255 * rgb * scale - mean) / std, per channel (in the model's order)
        mean = np.asarray(pre.mean, np.float32) * np.ones(3, np.float32)
        sd = np.asarray(pre.std, np.float32) * np.ones(3, np.float32)
        self.gain = torch.from_numpy(255.0 * pre.scale / sd).view(1, 3, 1, 1).float()
        self.offset = torch.from_numpy(-mean / sd).view(1, 3, 1, 1).float()

    @property
    def params(self) -> list[Any]:
        return [self.spectrum]

    def image(self) -> Any:
        """The current images as a model-input batch (N, 3, H, W)."""
        torch = require_torch()
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size) / 4.0
        image = torch.einsum("dc,nchw->ndhw", self.colors, image)
        return torch.sigmoid(image) * self.gain + self.offset
