"""Gram matrices inside autograd, on the native kernels: the style statistic of Gatys et al.
(2015, "Texture Synthesis Using Convolutional Neural Networks"; 2016, "Image Style Transfer
Using Convolutional Neural Networks").

    from cnnviz_core.torch_bridge import gram_matrix

    g = gram_matrix(features)        # features (N, C, H, W) -> (N, C, C) = F F^T / (C * H * W)
    loss = (g - target).pow(2).mean()
    loss.backward()                  # dL/dF = (dG + dG^T) F / norm, by the native kernel

Forward and backward run :func:`cnnviz_core.kernels.gram` / :func:`~cnnviz_core.kernels.
gram_backward` for CPU float32 tensors (C++, zero-copy on the tensors' memory) and CUDA float32
tensors (the CUDA kernels on the tensors' memory and the current stream, when cnnviz was built
with CUDA), and ``torch.bmm`` for every other dtype or device (float64 included, so gradcheck
runs on the same formulas).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from .. import kernels

#: ``auto``: native kernels where they apply (CPU float32; CUDA float32 when built with CUDA),
#: torch otherwise; ``native``: native or an error; ``torch``: ``torch.bmm`` always
GramBackend = Literal["auto", "native", "torch"]
GRAM_BACKENDS: tuple[str, ...] = ("auto", "native", "torch")


def gram_matrix(
    features: torch.Tensor, norm: float | None = None, *, backend: GramBackend = "auto"
) -> torch.Tensor:
    """Gram matrices G = F F^T / norm of (N, C, H, W) feature maps (F: (N, C, H * W)).

    Args:
        features: float (N, C, H, W) (or (N, C, L)) tensor, any device.
        norm: the divisor; default C * H * W (the Gram entries are then means of products,
            comparable across layers and image sizes).
        backend: ``auto`` (default), ``native`` (CPU or CUDA float32 only: raises otherwise)
            or ``torch`` (``torch.bmm``, the reference).

    Returns:
        (N, C, C) tensor of the features' dtype and device, differentiable w.r.t. ``features``
        (first order).

    Raises:
        ValueError: a bad shape, norm or backend.
    """
    if backend not in GRAM_BACKENDS:
        raise ValueError(
            f"gram_matrix: unknown backend {backend!r}; expected one of: {', '.join(GRAM_BACKENDS)}"
        )
    if features.dim() not in (3, 4):
        raise ValueError(
            f"gram_matrix: features must be (N, C, H, W) or (N, C, L), got shape "
            f"{tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise ValueError(f"gram_matrix: features must be floating point, got {features.dtype}")
    n, c = features.shape[:2]
    length = 1
    for d in features.shape[2:]:
        length *= int(d)
    if norm is None:
        norm = float(c * length)
    norm = float(norm)
    if not (norm == norm and abs(norm) != float("inf")) or norm == 0:
        raise ValueError(f"gram_matrix: norm must be finite and nonzero, got {norm}")
    flat = features.reshape(n, c, length)
    kind = _kind(flat)
    if backend == "native" and kind == "torch":
        raise ValueError(
            "gram_matrix: backend='native' needs float32 tensors on the CPU (or on a CUDA "
            f"device with cnnviz built with CUDA), got {flat.dtype} on {flat.device}; use "
            "backend='auto' or 'torch'"
        )
    if backend == "torch":
        kind = "torch"
    return _Gram.apply(flat, norm, kind)


def native_gram_available(device: str | torch.device = "cpu") -> bool:
    """Whether float32 tensors on ``device`` get the native Gram kernels."""
    return _kind(torch.empty(0, 1, 1, device=device)) != "torch"


def _kind(flat: torch.Tensor) -> str:
    if flat.dtype != torch.float32:
        return "torch"
    if flat.device.type == "cpu":
        return "cpu"
    if flat.device.type == "cuda" and kernels.cuda_device_count() > 0:
        return "cuda"
    return "torch"


class _Gram(torch.autograd.Function):
    """G = F F^T / norm on (N, C, L); dL/dF = (dG + dG^T) F / norm."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, norm: float, kind: str) -> torch.Tensor:
        flat = flat.detach().contiguous()
        ctx.save_for_backward(flat)
        ctx.norm, ctx.kind = norm, kind
        if kind == "cpu":
            return torch.from_numpy(kernels.gram(flat.numpy(), norm, backend="native"))
        if kind == "cuda":
            return _cuda_gram(flat, norm)
        return torch.bmm(flat, flat.transpose(1, 2)) / norm

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (flat,) = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.kind == "cpu":
            out = kernels.gram_backward(flat.numpy(), grad.numpy(), ctx.norm, backend="native")
            return torch.from_numpy(out), None, None
        if ctx.kind == "cuda":
            return _cuda_gram_backward(flat, grad, ctx.norm), None, None
        return torch.bmm(grad + grad.transpose(1, 2), flat) / ctx.norm, None, None


def _cuda_gram(flat: torch.Tensor, norm: float) -> torch.Tensor:
    n, c, _ = flat.shape
    out = torch.empty((n, c, c), dtype=flat.dtype, device=flat.device)
    with torch.cuda.device(flat.device):
        stream = torch.cuda.current_stream(flat.device).cuda_stream
        return kernels.gram(flat, norm, out=out, device=str(flat.device), stream=stream)


def _cuda_gram_backward(flat: torch.Tensor, grad: torch.Tensor, norm: float) -> torch.Tensor:
    out = torch.empty_like(flat)
    with torch.cuda.device(flat.device):
        stream = torch.cuda.current_stream(flat.device).cuda_stream
        return kernels.gram_backward(
            flat, grad, norm, out=out, device=str(flat.device), stream=stream
        )
