"""Typed configuration shared by the CLI and the Python API.

Precedence is defaults < config file < explicit arguments; ``None`` in a field means
"the backbone's default" and is resolved in exactly one place (``resolve_preprocessing``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from imgcls.errors import ConfigError

DEFAULT_BACKBONE = "efficientnet_lite0"
STRATEGIES = ("probe",)


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


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the outcome of ``imgcls train``; saved with every run."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    pretrained: bool = True
    strategy: str = "probe"
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    batch_size: int = 32
    workers: int | None = None
    input_size: int | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    calibrate: bool = False
    report: bool = True

    def __post_init__(self) -> None:
        _check_fraction("val_fraction", self.val_fraction)
        _check_fraction("test_fraction", self.test_fraction)
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                f"val_fraction + test_fraction must leave data to train on; got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.input_size is not None and self.input_size < 16:
            raise ConfigError(f"input_size must be at least 16 pixels, got {self.input_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.weights is not None and not self.pretrained:
            raise ConfigError("--weights and --no-pretrained contradict each other; pick one")

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """Return a copy with the non-``None`` values of ``overrides`` applied."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML file of ``TrainConfig`` fields (e.g. a saved ``run_config.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    # A saved run config nests the training settings under "train".
    return dict(data.get("train", data))
