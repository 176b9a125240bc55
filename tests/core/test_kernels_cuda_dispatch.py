"""A model loaded with device="cuda" runs the CUDA twins of the kernels: guided backprop (ReLU
backward, max pooling and unpooling) and occlusion (the batch builder), with the same results
as on the CPU. The CUDA route is checked by spying on the CUDA bindings the dispatch calls.
Skipped without the CUDA kernels, a CUDA device or onnxruntime's CUDA provider."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_classifier

from cnnviz_core import DeviceError, Model, Preprocess, kernels
from cnnviz_core.backward import gradients
from cnnviz_core.geometry import Window
from cnnviz_core.incremental import NaiveOcclusion
from cnnviz_core.kernels import _dispatch as dispatch

native_cuda = pytest.importorskip("cnnviz_core._native_cuda", reason="built without CUDA")

SPIED = ("relu_backward", "relu_backward_clip", "max_pool2d", "max_unpool2d", "occlusion_batch")


@pytest.fixture
def cuda_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the CUDA kernels called during a test."""
    calls: list[str] = []
    for name in SPIED:
        original = getattr(native_cuda, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(native_cuda, name, spy)
    return calls


def models() -> tuple[Model, Model]:
    if kernels.cuda_device_count() == 0:
        pytest.skip("no CUDA device")
    proto = tiny_classifier().SerializeToString()
    try:
        gpu = Model(proto, preprocess=Preprocess(scale=1.0), device="cuda")
    except DeviceError as exc:
        pytest.skip(f"onnxruntime cannot run on CUDA here: {exc}")
    return gpu, Model(proto, preprocess=Preprocess(scale=1.0))


def test_guided_backprop_on_cuda_runs_the_cuda_kernels(cuda_calls):
    gpu, cpu = models()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    seed = {"logits": np.eye(4, dtype=np.float32)[[1, 3]]}
    ours = gradients(gpu, x, seed, mode="guided")[gpu.input_name]
    assert {"relu_backward", "max_pool2d", "max_unpool2d"} <= set(cuda_calls)
    calls = len(cuda_calls)
    expected = gradients(cpu, x, seed, mode="guided")[cpu.input_name]
    assert len(cuda_calls) == calls  # the CPU model stays on the CPU kernels
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_occlusion_on_cuda_builds_its_batches_with_the_cuda_kernel(cuda_calls):
    gpu, cpu = models()
    image = np.random.default_rng(1).standard_normal((3, 16, 16)).astype(np.float32)
    positions = np.array([[0, 0], [4, 8], [12, 12]], np.int64)
    fill = np.zeros((3, 1, 1), np.float32)
    ours, _ = NaiveOcclusion(gpu, 4).scores(image, positions, fill)
    assert "occlusion_batch" in cuda_calls
    expected, _ = NaiveOcclusion(cpu, 4).scores(image, positions, fill)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_cpu_model_never_reaches_the_cuda_dispatch(cuda_calls):
    cpu = Model(tiny_classifier().SerializeToString(), preprocess=Preprocess(scale=1.0))
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    gradients(cpu, x, {"logits": np.eye(4, dtype=np.float32)[[0]]}, mode="guided")
    assert cuda_calls == []


class FakeCuda:
    """A stand-in for :mod:`cnnviz_core._native_cuda` on host memory: the same bindings, each
    computing with the NumPy reference, so the CUDA route of the dispatch (pointers, shapes,
    argument order, copies in and out) is checked on machines without a GPU."""

    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.calls: list[str] = []
        fake = self

        class DeviceBuffer:
            def __init__(self, nbytes: int) -> None:
                self.ptr = 4096 * (len(fake.memory) + 1)
                fake.memory[self.ptr] = np.zeros(max(nbytes, 1), np.uint8)

            @staticmethod
            def upload(array: np.ndarray) -> DeviceBuffer:
                buffer = DeviceBuffer(array.nbytes)
                fake.memory[buffer.ptr][: array.nbytes] = array.reshape(-1).view(np.uint8)
                return buffer

            def download(self, array: np.ndarray) -> None:
                array.reshape(-1).view(np.uint8)[:] = fake.memory[self.ptr][: array.nbytes]

        self.DeviceBuffer = DeviceBuffer

    def set_device(self, index: int) -> None:
        assert index == 0

    def _get(self, ptr: int, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.memory[ptr][:size].view(dtype).reshape(shape)

    def relu_backward(self, x, g, out, n, mode, slope, stream):
        self.calls.append("relu_backward")
        ref = kernels.relu_backward_reference(self._get(x, (n,)), self._get(g, (n,)), mode, slope)
        self._get(out, (n,))[:] = ref

    def max_pool2d(self, x, y, sw, planes, h, w, kernel, stride, pads, dilation, ceil, stream):
        self.calls.append("max_pool2d")
        xa = self._get(x, (1, planes, h, w))
        yr, sr = kernels.max_pool2d_reference(xa, kernel, stride, pads, dilation, ceil)
        self._get(y, yr.shape)[:] = yr
        self._get(sw, sr.shape, np.int64)[:] = sr

    def max_unpool2d(self, g, sw, out, planes, pooled, h, w, stream):
        self.calls.append("max_unpool2d")
        ga = self._get(g, (1, planes, pooled, 1))
        ref = kernels.max_unpool2d_reference(ga, self._get(sw, ga.shape, np.int64), (h, w))
        self._get(out, ref.shape)[:] = ref

    def im2col(self, x, cols, n, c, h, w, kernel, stride, pads, dilation, stream):
        self.calls.append("im2col")
        ref = kernels.im2col_reference(self._get(x, (n, c, h, w)), kernel, stride, pads, dilation)
        self._get(cols, ref.shape)[:] = ref

    def col2im(self, cols, x, n, c, h, w, kernel, stride, pads, dilation, stream):
        self.calls.append("col2im")
        ho, wo = Window.of(kernel, stride, pads, dilation).output_size((h, w))
        taps = kernel[0] * kernel[1]
        ca = self._get(cols, (n, c * taps, ho * wo))
        ref = kernels.col2im_reference(ca, (h, w), kernel, stride, pads, dilation)
        self._get(x, ref.shape)[:] = ref

    def occlusion_batch(self, image, c, h, w, pos, count, wh, ww, fill, kind, out, stream):
        self.calls.append("occlusion_batch")
        shape = {"constant": (), "per_channel": (c,), "image": (c, h, w)}[kind]
        ref = kernels.occlusion_batch_reference(
            self._get(image, (c, h, w)),
            self._get(pos, (count, 2), np.int64),
            (wh, ww),
            self._get(fill, shape),
        )
        self._get(out, ref.shape)[:] = ref

    def gram(self, f, out, b, c, n, norm, stream):
        self.calls.append("gram")
        self._get(out, (b, c, c))[:] = kernels.gram_reference(self._get(f, (b, c, n)), norm)

    def gram_backward(self, f, g, out, b, c, n, norm, workspace, stream):
        self.calls.append("gram_backward")
        ref = kernels.gram_backward_reference(
            self._get(f, (b, c, n)), self._get(g, (b, c, c)), norm
        )
        self._get(out, (b, c, n))[:] = ref


class FakeDeviceArray:
    """A float32 array in the fake device memory, exposing ``__cuda_array_interface__``."""

    def __init__(self, fake: FakeCuda, array: np.ndarray) -> None:
        self.fake, self.shape = fake, array.shape
        self.buffer = fake.DeviceBuffer.upload(np.ascontiguousarray(array, np.float32))
        self.__cuda_array_interface__ = {
            "shape": array.shape,
            "typestr": "<f4",
            "data": (self.buffer.ptr, False),
            "strides": None,
            "version": 3,
        }

    def host(self) -> np.ndarray:
        return self.fake._get(self.buffer.ptr, self.shape).copy()


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(dispatch, "_native_cuda", fake)
    return fake


def test_cuda_route_passes_the_kernels_their_arguments(fake_cuda):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for mode in ("gradient", "guided", "deconvnet"):
        np.testing.assert_array_equal(
            kernels.relu_backward(x, g, mode, 0.1, device="cuda"),
            kernels.relu_backward(x, g, mode, 0.1),
        )
    pool_args = ((3, 2), (2, 1), (1, 0, 1, 1), (1, 2), True)
    y, sw = kernels.max_pool2d(x, *pool_args, device="cuda")
    y_cpu, sw_cpu = kernels.max_pool2d(x, *pool_args)
    np.testing.assert_array_equal(y, y_cpu)
    np.testing.assert_array_equal(sw, sw_cpu)
    np.testing.assert_allclose(
        kernels.max_unpool2d(y, sw, (9, 8), device="cuda:0"),
        kernels.max_unpool2d(y, sw, (9, 8)),
        rtol=1e-6,
    )
    conv = ((3, 3), (2, 1), (1, 0, 1, 2), (1, 1))
    cols = kernels.im2col(x, *conv, device="cuda")
    np.testing.assert_array_equal(cols, kernels.im2col(x, *conv))
    np.testing.assert_allclose(
        kernels.col2im(cols, (9, 8), *conv, device="cuda"),
        kernels.col2im(cols, (9, 8), *conv),
        rtol=1e-5,
        atol=1e-6,
    )
    positions = np.array([[0, 0], [-2, 5], [7, 7]], np.int64)
    for fill in (0.5, np.arange(3, dtype=np.float32), x[0]):
        out = np.empty((3, 3, 9, 8), np.float32)
        got = kernels.occlusion_batch(x[0], positions, (3, 4), fill, out=out, device="cuda")
        assert got is out
        np.testing.assert_array_equal(got, kernels.occlusion_batch(x[0], positions, (3, 4), fill))
    np.testing.assert_allclose(
        kernels.gram(x, 7.0, device="cuda"), kernels.gram(x, 7.0), rtol=1e-5, atol=1e-6
    )
    assert set(fake_cuda.calls) == {
        "relu_backward",
        "max_pool2d",
        "max_unpool2d",
        "im2col",
        "col2im",
        "occlusion_batch",
        "gram",
    }


def test_float64_and_numpy_backend_stay_on_the_reference(fake_cuda):
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 5))
    kernels.relu_backward(x, x, "guided", device="cuda")
    kernels.max_pool2d(x.astype(np.float32), 2, backend="numpy", device="cuda")
    assert fake_cuda.calls == []


def test_cuda_device_without_the_cuda_kernels_says_so(monkeypatch):
    monkeypatch.setattr(dispatch, "_native_cuda", None)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(DeviceError, match="built without its CUDA kernels"):
        kernels.relu_backward(x, x, device="cuda")


def test_device_arrays_run_in_place_on_the_given_stream(fake_cuda):
    rng = np.random.default_rng(5)
    f = rng.standard_normal((2, 3, 10)).astype(np.float32)
    dg = rng.standard_normal((2, 3, 3)).astype(np.float32)
    features = FakeDeviceArray(fake_cuda, f)
    out = FakeDeviceArray(fake_cuda, np.zeros((2, 3, 3), np.float32))
    assert kernels.gram(features, 4.0, out=out, stream=7) is out
    np.testing.assert_allclose(out.host(), kernels.gram(f, 4.0), rtol=1e-5, atol=1e-6)
    grad = FakeDeviceArray(fake_cuda, dg)
    d_out = FakeDeviceArray(fake_cuda, np.zeros_like(f))
    kernels.gram_backward(features, grad, 4.0, out=d_out)
    np.testing.assert_allclose(
        d_out.host(), kernels.gram_backward(f, dg, 4.0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="need an out array on the device"):
        kernels.gram(features, 4.0)
