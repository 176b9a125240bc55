"""SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"), by
composition: ``smooth(method)`` is a method that averages ``method``'s maps over noisy
copies of each image.

    smooth_saliency = smooth(saliency, n=25, sigma=0.15)
    result = smooth_saliency(model, images, target="star")
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.targets import TargetLike

from .base import Attribution, Images, Method, make_attribution, prepare
from .saliency import saliency


def smooth(
    method: Method,
    *,
    n: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
    batch_size: int = 64,
) -> Method:
    """A method that averages ``method`` over ``n`` noisy copies of each image.

    Args:
        method: any technique with the common contract.
        n: noisy samples per image.
        sigma: noise standard deviation as a fraction of the input range (Smilkov et al.:
            sigma / (x_max - x_min), the paper's 10-20%), the range being what the model's
            preprocessing makes of pixel values 0-255 (:attr:`Preprocess.span`, per
            channel): 0.15 is 38 levels on a Caffe BGR 0-255 model as on a 0-1 model, and a
            flat or low-contrast image gets the same noise as a photo.
        seed: seed of the noise (deterministic; each image's noise depends on the seed and
            the image only, so batches and single images agree).
        batch_size: most noisy images run through ``method`` at once.

    Returns:
        ``smoothed(model, images, target=None, **options) -> Attribution``; options go to
        ``method``. Targets resolve once on the clean images (None: the predicted class).
    """
    if n < 1 or sigma < 0 or batch_size < 1:
        raise InputError(f"smooth needs n >= 1, sigma >= 0, batch_size >= 1; got {n}, {sigma}")
    name = getattr(method, "__name__", "method")

    @functools.wraps(method)
    def smoothed(
        model: Model, images: Images, target: TargetLike | list = None, **options: Any
    ) -> Attribution:
        batch, targets = prepare(model, images, target)
        scale = (model.preprocess.span * sigma).astype(np.float32)[:, None, None]
        # noise seeded per image (by its content): an image gets the same noise alone or
        # in any batch
        noise = (
            np.stack(
                [
                    np.random.default_rng([seed, zlib.crc32(image.tobytes())]).standard_normal(
                        (n, *batch.shape[1:]), dtype=np.float32
                    )
                    for image in batch
                ]
            )
            if len(batch)
            else np.zeros((0, n, *batch.shape[1:]), np.float32)
        )
        noisy = (batch[:, None] + noise * scale).astype(np.float32)
        noisy = noisy.reshape(-1, *batch.shape[1:])
        repeated = [t for t in targets for _ in range(n)]
        parts = [
            method(model, noisy[s : s + batch_size], repeated[s : s + batch_size], **options)
            for s in range(0, len(noisy), batch_size)
        ]
        maps = np.concatenate([p.maps for p in parts])
        maps = maps.reshape(len(batch), n, *maps.shape[1:]).mean(axis=1)
        first = parts[0]
        return make_attribution(
            maps,
            f"smoothgrad({first.method})",
            targets,
            {"n": n, "sigma": sigma, "seed": seed, "method": first.method, **first.options},
            model,
            batch,
            signed=first.signed,
            gradients=bool(first.metrics.get("straight_through")),
        )

    smoothed.__name__ = f"smooth_{name}"
    smoothed.__qualname__ = smoothed.__name__
    return smoothed


def smoothgrad(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
) -> Attribution:
    """SmoothGrad of the saliency map: :func:`smooth` (``n=samples``) of
    :func:`~.saliency.saliency`, the technique as the registry and ``cnnviz explain`` run it.

    Args:
        samples: noisy copies per image (25).
        sigma: noise standard deviation as a fraction of the input range (0.15).
        seed: seed of the noise.
    """
    return smooth(saliency, n=samples, sigma=sigma, seed=seed)(model, images, target)
