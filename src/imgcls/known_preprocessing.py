"""The pretrained preprocessing of the registry's backbones, known without importing timm.

What timm's pretrained config says for each registry entry's default tag. Knowing it here
lets the CLI start decoding images while torch loads, and lets the EfficientNet-Lite path
run without timm at all; a unit test holds the table equal to timm's configs. Other tags and
other timm architectures get theirs from timm (``backbone.resolve_preprocessing``).
"""

from __future__ import annotations

from imgcls.config import Preprocessing, feature_input_size

_HALF = (0.5, 0.5, 0.5)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Native input size, crop_pct, interpolation, mean, std.
PRETRAINED_PREPROCESSING: dict[str, tuple[int, float, str, tuple[float, ...], tuple[float, ...]]] = {
    "efficientnet_lite0": (224, 0.875, "bicubic", _HALF, _HALF),
    "efficientnet_lite1": (240, 0.882, "bicubic", _HALF, _HALF),
    "efficientnet_lite2": (260, 0.89, "bicubic", _HALF, _HALF),
    "resnet50": (224, 0.95, "bicubic", _IMAGENET_MEAN, _IMAGENET_STD),
    "resnet18": (224, 0.95, "bicubic", _IMAGENET_MEAN, _IMAGENET_STD),
    "densenet121": (224, 0.875, "bicubic", _IMAGENET_MEAN, _IMAGENET_STD),
    "inception_v3": (299, 0.875, "bicubic", _HALF, _HALF),
    "inception_v4": (299, 0.875, "bicubic", _HALF, _HALF),
    "resnetv2_50": (224, 0.95, "bicubic", _HALF, _HALF),
    "efficientnet_b0": (224, 0.875, "bicubic", _IMAGENET_MEAN, _IMAGENET_STD),
}


def native_preprocessing(backbone: str) -> Preprocessing | None:
    """``backbone``'s pretrained preprocessing at its native size, if the table has it."""
    known = PRETRAINED_PREPROCESSING.get(backbone)
    if known is None:
        return None
    native, crop_pct, interpolation, mean, std = known
    return Preprocessing(native, crop_pct, interpolation, tuple(mean), tuple(std))  # type: ignore[arg-type]


def expected_preprocessing(backbone: str, input_size: int | None) -> Preprocessing | None:
    """The feature preprocessing ``backbone`` will get (``input_size`` or the raised feature
    resolution), if the table has it."""
    native = native_preprocessing(backbone)
    if native is None:
        return None
    return Preprocessing(
        input_size or feature_input_size(native.input_size),
        native.crop_pct,
        native.interpolation,
        native.mean,
        native.std,
    )
