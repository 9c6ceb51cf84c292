"""The only place that turns images into network input tensors."""

from __future__ import annotations

import dataclasses
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


# Test-time augmentation views: the centre crop, the whole image (shorter side resized to
# the input size), and the mirror image of each.
TTA_VIEWS = ("center", "center_flip", "full", "full_flip")


def eval_transform(pre: Preprocessing, *, flip: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side, centre-crop, (mirror,) scale to [0, 1], normalise."""
    steps: list[Callable] = [
        T.Resize(pre.resize_size, interpolation=_INTERPOLATION[pre.interpolation]),
        T.CenterCrop(pre.input_size),
    ]
    if flip:
        steps.append(T.RandomHorizontalFlip(p=1.0))
    steps += [T.ToTensor(), T.Normalize(mean=pre.mean, std=pre.std)]
    return T.Compose(steps)


def view_settings(pre: Preprocessing, view: str) -> tuple[Preprocessing, bool]:
    """The preprocessing and mirror flag of a test-time-augmentation view."""
    if view not in TTA_VIEWS:
        raise ValueError(f"unknown view {view!r}; known views: {TTA_VIEWS}")
    if view.startswith("full"):
        pre = dataclasses.replace(pre, crop_pct=1.0)
    return pre, view.endswith("_flip")


def supported_interpolation(name: str) -> str:
    """timm configs use a few other spellings; fall back to bicubic for the unknown."""
    return name if name in _INTERPOLATION else "bicubic"
