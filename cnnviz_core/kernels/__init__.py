"""The one Python face of the native kernels, one module per kernel family as in ``csrc/cpu``:
backward of ReLU-like ops in three modes (:mod:`.relu`), max pooling with switches and max
unpooling (:mod:`.pool`), im2col / col2im (:mod:`.im2col`), the occlusion and crop batch
builders (:mod:`.occlusion`), Gram matrices with their backward (:mod:`.gram`) and the
Efros-Leung neighbourhood search (:mod:`.texture`). Images are float (N, C, H, W).

Each call picks an implementation (the private ``_dispatch`` module): the CUDA kernels of
:mod:`cnnviz_core._native_cuda` when ``device`` is a CUDA device (a model loaded with
``device="cuda"`` passes its device) or the arrays live on one, the C++ kernels of
:mod:`cnnviz_core._native` for float32 work on the CPU, else the NumPy reference (always for
float64, so finite-difference tests stay in float64). The NumPy references (``*_reference``)
are the test oracle of the native kernels.
"""

from ._dispatch import BACKENDS, Backend, FloatArray, IndexArray, cuda_device_count
from .gram import gram, gram_backward, gram_backward_reference, gram_reference
from .im2col import col2im, col2im_reference, im2col, im2col_reference
from .occlusion import (
    Fill,
    crop_batch,
    crop_batch_reference,
    occlusion_batch,
    occlusion_batch_reference,
)
from .pool import max_pool2d, max_pool2d_reference, max_unpool2d, max_unpool2d_reference
from .relu import (
    RELU_MODES,
    ReluMode,
    relu_backward,
    relu_backward_clip,
    relu_backward_clip_reference,
    relu_backward_reference,
)
from .texture import (
    TextureMatch,
    texture_distances,
    texture_distances_reference,
    texture_match,
    texture_match_reference,
    texture_matcher,
)

__all__ = [
    "BACKENDS",
    "RELU_MODES",
    "Backend",
    "Fill",
    "FloatArray",
    "IndexArray",
    "ReluMode",
    "TextureMatch",
    "col2im",
    "col2im_reference",
    "crop_batch",
    "crop_batch_reference",
    "cuda_device_count",
    "gram",
    "gram_backward",
    "gram_backward_reference",
    "gram_reference",
    "im2col",
    "im2col_reference",
    "max_pool2d",
    "max_pool2d_reference",
    "max_unpool2d",
    "max_unpool2d_reference",
    "occlusion_batch",
    "occlusion_batch_reference",
    "relu_backward",
    "relu_backward_clip",
    "relu_backward_clip_reference",
    "relu_backward_reference",
    "texture_distances",
    "texture_distances_reference",
    "texture_match",
    "texture_match_reference",
    "texture_matcher",
]
