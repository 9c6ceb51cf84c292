"""Cutting a timm network into a frozen trunk and a trainable top, stage by stage.

``top(trunk(x)) == model(x)`` exactly, so a fine-tune that trains only the top stages can
compute the trunk's output once per image, cache it, and train the top on the cache.
Networks built as a stem, a sequence of stages and a head are split here: the
EfficientNet/MobileNet family (``blocks``) and the ResNet family (``layer1..4``). Other
architectures still fine-tune end to end or with frozen parameters, just without the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class NetworkSplit:
    """``trunk`` (frozen) and ``top`` (trained) of one network, sharing its modules."""

    trunk: nn.Module
    top: nn.Module
    trainable_stages: int
    total_stages: int


class _Trunk(nn.Module):
    def __init__(self, stem: list[nn.Module], stages: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*stem, *stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Top(nn.Module):
    def __init__(self, model: nn.Module, stages: list[nn.Module], tail: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages, *tail)
        self.model = model  # forward_head (pooling, dropout, classifier) lives on the model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.stages(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier sees (for fitting a head on the frozen top)."""
        return self.model.forward_head(self.stages(x), pre_logits=True)


def _layout(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]] | None:
    """(stem, stages, tail) of a supported architecture, or ``None``."""
    if hasattr(model, "blocks") and hasattr(model, "conv_stem") and hasattr(model, "conv_head"):
        if type(model).__name__ not in ("EfficientNet", "EfficientNetLite"):  # MobileNetV3 pools first
            return None
        return [model.conv_stem, model.bn1], list(model.blocks), [model.conv_head, model.bn2]
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)) and hasattr(model, "conv1"):
        stem = [model.conv1, model.bn1, model.act1, model.maxpool]
        return stem, [getattr(model, f"layer{i}") for i in range(1, 5)], []
    return None


def stage_count(model: nn.Module) -> int | None:
    """How many stages a splittable network has (``None``: not splittable)."""
    layout = _layout(model)
    return None if layout is None else len(layout[1])


def split_network(model: nn.Module, trainable_stages: int) -> NetworkSplit | None:
    """Split so that the last ``trainable_stages`` stages (plus the head) form the top."""
    layout = _layout(model)
    if layout is None:
        return None
    stem, stages, tail = layout
    if not 1 <= trainable_stages <= len(stages):
        raise ValueError(f"trainable_stages must be in 1..{len(stages)}, got {trainable_stages}")
    cut = len(stages) - trainable_stages
    return NetworkSplit(
        _Trunk(stem, stages[:cut]), _Top(model, stages[cut:], tail), trainable_stages, len(stages)
    )
