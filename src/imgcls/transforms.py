"""The only place that turns images into network input tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from imgcls.config import Preprocessing

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise."""
    return T.Compose(
        [
            T.Resize(pre.resize_size, interpolation=_INTERPOLATION[pre.interpolation]),
            T.CenterCrop(pre.input_size),
            T.ToTensor(),
            T.Normalize(mean=pre.mean, std=pre.std),
        ]
    )


def supported_interpolation(name: str) -> str:
    """timm configs use a few other spellings; fall back to bicubic for the unknown."""
    return name if name in _INTERPOLATION else "bicubic"
