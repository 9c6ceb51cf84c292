"""The only place that turns images into network input tensors.

The eval transform is ``pixels.crop_array`` (PIL and numpy, bit-identical to torchvision's
``Resize`` + ``CenterCrop``, which a test holds), so extracting features and predicting do
not import torchvision; the training augmentations do, when they are built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from imgcls.config import AUGMENT_PRESETS
from imgcls.data._pixels import crop_array
from imgcls.data.preprocessing import Preprocessing
from imgcls.errors import ConfigError

# Test-time augmentation views: the centre crop, the whole image (shorter side resized to
# the input size), and the mirror image of each.
TTA_VIEWS = ("center", "center_flip", "full", "full_flip")


def eval_transform(pre: Preprocessing, *, flip: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side, centre-crop, (mirror,) scale to [0, 1], normalise: 3 x H x W."""
    return _EvalTransform(eval_crop(pre, flip=flip), pre)


@dataclasses.dataclass(frozen=True)
class _EvalTransform:  # a class, not a closure: loader processes may need to pickle it
    crop: Callable[[Image.Image], torch.Tensor]
    pre: Preprocessing

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return normalize_batch(self.crop(image).unsqueeze(0), self.pre)[0]


def eval_crop(pre: Preprocessing, *, flip: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """The geometric half of ``eval_transform``: an H x W x 3 uint8 tensor.

    Loader processes return these (a quarter of the bytes of float32), and the main process
    turns a whole batch into network input with ``normalize_batch`` in one vectorised step.
    """
    return _EvalCrop(pre, flip)


@dataclasses.dataclass(frozen=True)
class _EvalCrop:
    pre: Preprocessing
    flip: bool

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(crop_array(image, self.pre, flip=self.flip), copy=True))


def normalize_batch(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in channels_last memory, normalised.

    The same element-wise operations, in the same order, as torchvision's ``ToTensor`` and
    ``Normalize`` per image, so the values are bit-for-bit equal.
    """
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)


def view_settings(pre: Preprocessing, view: str) -> tuple[Preprocessing, bool]:
    """The preprocessing and mirror flag of a test-time-augmentation view."""
    if view not in TTA_VIEWS:
        raise ValueError(f"unknown view {view!r}; known views: {TTA_VIEWS}")
    if view.startswith("full"):
        pre = dataclasses.replace(pre, crop_pct=1.0)
    return pre, view.endswith("_flip")


@dataclasses.dataclass(frozen=True)
class AugmentPreset:
    """One ``--augment`` level; every size comes from the backbone's preprocessing."""

    scale: tuple[float, float] | None  # random-resized-crop area range; None: eval crop
    flip: bool = False
    rotation: float = 0.0
    jitter: float = 0.0
    trivial_augment: bool = False
    erasing: float = 0.0
    mixup: float = 0.0  # mixup alpha (also switches cutmix on for images)
    # Side of the random square crop of a cached activation map, as a fraction of the map's
    # side (the fine-tune's augmentation when it trains on cached maps); None: no crop.
    map_crop: tuple[float, float] | None = None


_PRESETS = {
    "none": AugmentPreset(scale=None),
    "light": AugmentPreset(scale=(0.35, 1.0), flip=True, map_crop=(0.85, 1.0)),
    "standard": AugmentPreset(scale=(0.25, 1.0), flip=True, rotation=10.0, jitter=0.2, map_crop=(0.7, 1.0)),
    "strong": AugmentPreset(
        scale=(0.08, 1.0),
        flip=True,
        rotation=15.0,
        jitter=0.3,
        trivial_augment=True,
        erasing=0.25,
        mixup=0.2,
        map_crop=(0.6, 1.0),
    ),
}
if tuple(_PRESETS) != AUGMENT_PRESETS:  # the names users choose from are config's
    raise ImportError(f"augment presets {tuple(_PRESETS)} differ from config.AUGMENT_PRESETS")


def augment_preset(name: str) -> AugmentPreset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown `augment` preset {name!r}; choose one of {', '.join(_PRESETS)}") from None


def train_transform(pre: Preprocessing, preset: str) -> Callable[[Image.Image], torch.Tensor]:
    """The random training view of an image: crop, geometry and colour per ``preset``."""
    aug = augment_preset(preset)
    if aug.scale is None:
        return eval_transform(pre)
    from torchvision import transforms as T

    interpolation = T.InterpolationMode(pre.interpolation)
    steps: list[Callable] = []
    if aug.rotation:
        steps.append(T.RandomRotation(aug.rotation, interpolation=T.InterpolationMode.BILINEAR))
    steps.append(T.RandomResizedCrop(pre.input_size, scale=aug.scale, interpolation=interpolation))
    if aug.flip:
        steps.append(T.RandomHorizontalFlip())
    if aug.jitter:
        steps.append(T.ColorJitter(brightness=aug.jitter, contrast=aug.jitter, saturation=aug.jitter))
    if aug.trivial_augment:
        steps.append(T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR))
    steps += [T.ToTensor(), T.Normalize(mean=pre.mean, std=pre.std)]
    if aug.erasing:
        steps.append(T.RandomErasing(p=aug.erasing, value="random"))
    return T.Compose(steps)


def batch_mixer(preset: str, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], tuple] | None:
    """Mixup or CutMix (one of them per batch) for presets that use it; targets become soft."""
    aug = augment_preset(preset)
    if not aug.mixup:
        return None
    from torchvision.transforms import v2

    return v2.RandomChoice(
        [v2.MixUp(alpha=aug.mixup, num_classes=num_classes), v2.CutMix(num_classes=num_classes)]
    )


def mixup(
    inputs: torch.Tensor, targets: torch.Tensor, num_classes: int, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each input with another of the batch, ``lam ~ Beta(alpha, alpha)``; targets become
    soft. For inputs that are not images (cached activation maps); images use ``batch_mixer``."""
    seed = int(torch.randint(2**31, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(inputs), generator=generator)
    soft = torch.nn.functional.one_hot(targets, num_classes).float()
    return lam * inputs + (1 - lam) * inputs[perm], lam * soft + (1 - lam) * soft[perm]
