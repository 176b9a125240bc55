"""gram_matrix inside autograd: native float32 kernels (forward and backward) against torch
autograd of ``torch.bmm``, the torch path's backward by gradcheck in float64, CUDA when lent."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnviz_core import kernels  # noqa: E402
from cnnviz_core.torch_bridge import gram_matrix  # noqa: E402
from cnnviz_core.torch_bridge.gram import native_gram_available  # noqa: E402

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 64, 9, 11), (3, 17, 4, 33), (2, 8, 40)]


def reference(features, norm=None):
    """torch autograd's Gram of (N, C, ...) features."""
    n, c = features.shape[:2]
    flat = features.reshape(n, c, -1)
    if norm is None:
        norm = flat.shape[1] * flat.shape[2]
    return torch.bmm(flat, flat.transpose(1, 2)) / norm


def random_features(shape, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype).requires_grad_(True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", [None, 7.5])
def test_native_float32_matches_torch_autograd(shape, norm):
    x = random_features(shape, torch.float32, seed=sum(shape))
    x_ref = x.detach().clone().requires_grad_(True)
    weight = torch.randn((shape[0], shape[1], shape[1]), generator=torch.Generator().manual_seed(1))
    g = gram_matrix(x, norm)
    g_ref = reference(x_ref, norm)
    assert g.shape == g_ref.shape and g.dtype == torch.float32
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(g, g.transpose(1, 2))  # the kernel's output is exactly symmetric
    (g * weight).sum().backward()  # a non-symmetric cotangent
    (g_ref * weight).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_native_kernels_are_what_runs(monkeypatch):
    calls = []
    gram, backward = kernels.gram, kernels.gram_backward
    monkeypatch.setattr(kernels, "gram", lambda *a, **k: calls.append("f") or gram(*a, **k))
    monkeypatch.setattr(
        kernels, "gram_backward", lambda *a, **k: calls.append("b") or backward(*a, **k)
    )
    x = random_features((2, 4, 3, 3), torch.float32, seed=3)
    gram_matrix(x).pow(2).sum().backward()
    assert calls == ["f", "b"]
    calls.clear()
    gram_matrix(x.detach().double().requires_grad_(True)).sum().backward()
    gram_matrix(x, backend="torch").sum().backward()
    assert calls == []
    assert native_gram_available("cpu")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 6, 2, 3)])
def test_torch_path_gradcheck_float64(shape):
    x = random_features(shape, torch.float64, seed=5)
    assert torch.autograd.gradcheck(lambda t: gram_matrix(t, 3.0), (x,), eps=1e-6, atol=1e-7)
    torch.testing.assert_close(gram_matrix(x), reference(x), rtol=1e-12, atol=1e-14)


def test_native_gradient_matches_float64_finite_differences():
    """The float32 native backward against central differences of the float64 Gram."""
    x = random_features((1, 3, 4, 4), torch.float32, seed=9)
    w = torch.randn((1, 3, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (gram_matrix(x).double() * w).sum().backward()
    x64 = x.detach().double()
    eps = 1e-6
    numeric = torch.zeros_like(x64)
    for i in range(x64.numel()):
        d = torch.zeros_like(x64).view(-1)
        d[i] = eps
        d = d.view_as(x64)
        numeric.view(-1)[i] = ((reference(x64 + d) * w).sum() - (reference(x64 - d) * w).sum()) / (
            2 * eps
        )
    np.testing.assert_allclose(x.grad.double().numpy(), numeric.numpy(), rtol=1e-5, atol=1e-6)


def test_inside_a_larger_graph():
    """Gram of a conv's output: gradients reach the input as torch's do."""
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = random_features((2, 3, 10, 12), torch.float32, seed=4)
    x_ref = x.detach().clone().requires_grad_(True)
    target = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    (gram_matrix(torch.relu(conv(x))) - target).pow(2).mean().backward()
    (reference(torch.relu(conv(x_ref))) - target).pow(2).mean().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(norm=0.0), "norm must be finite and nonzero"),
        (dict(norm=float("nan")), "norm must be finite and nonzero"),
        (dict(backend="bmm"), "unknown backend 'bmm'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gram_matrix(torch.ones(1, 2, 3, 3), **kwargs)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        gram_matrix(torch.ones(3, 3))
    with pytest.raises(ValueError, match="floating point"):
        gram_matrix(torch.ones(1, 2, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend='native' needs float32"):
        gram_matrix(torch.ones(1, 2, 3, 3, dtype=torch.float64), backend="native")


def test_cuda_native_matches_torch():
    if kernels.cuda_device_count() == 0 or not torch.cuda.is_available():
        pytest.skip("no CUDA device for the native CUDA Gram")
    x = random_features((2, 32, 13, 17), torch.float32, seed=6).cuda().detach()
    x.requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    w = torch.randn((2, 32, 32), device="cuda", generator=None)
    assert native_gram_available("cuda")
    g = gram_matrix(x, backend="native")
    torch.testing.assert_close(g, reference(x_ref), rtol=1e-5, atol=1e-6)
    (g * w).sum().backward()
    (reference(x_ref) * w).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
