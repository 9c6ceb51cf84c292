"""How an image becomes a network's input: the eval preprocessing a backbone was pretrained with."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from PIL import Image

# The interpolations imgcls resizes with; timm configs use a few other spellings.
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def supported_interpolation(name: str) -> str:
    """``name`` if imgcls resizes with it, else bicubic."""
    return name if name in RESAMPLE else "bicubic"


# Frozen features are extracted at 1.25x the resolution the backbone was pretrained at (to a
# multiple of 32). Networks pretrained on random-resized crops see objects larger in training
# than in a centre crop of the same size, so they describe an image better at a higher test
# resolution (Touvron et al., "Fixing the train-test resolution discrepancy", 2019); the
# measurements are on docs/performance.md.
FEATURE_RESOLUTION_SCALE = 1.25


def feature_input_size(native: int) -> int:
    return int(32 * round(native * FEATURE_RESOLUTION_SCALE / 32))


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input tensor (eval transform).

    Resize the shorter side to ``floor(input_size / crop_pct)``, centre-crop ``input_size``,
    scale to [0, 1] and normalise with ``mean`` / ``std``.
    """

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_size(self) -> int:
        return int(self.input_size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            crop_pct=float(data["crop_pct"]),
            interpolation=str(data["interpolation"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        )
