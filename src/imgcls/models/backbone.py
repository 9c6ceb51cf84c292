"""Building networks: the only module that calls timm's model factory.

``build_network`` returns a network with ``num_classes`` outputs and pretrained weights
from (in order) an explicit ``--weights`` file, a package or local hub cache, or the hub
when it is reachable; or random init when ``pretrained=False``. EfficientNet-Lite is built
by ``efficientnet_lite`` (timm's network, without importing timm); everything else by timm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgcls.errors import BackboneError, WeightsError
from imgcls.models.efficientnet_lite import VARIANTS, EfficientNetLite
from imgcls.models.registry import BackboneSpec
from imgcls.models.weights import (
    KeyReport,
    LocalWeights,
    hub_reachable,
    load_matching,
    locate_local_weights,
    read_state_dict,
)

log = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class WeightsInfo:
    """Where a network's weights came from, for logs, the saved config and ``imgcls models``."""

    source: str
    location: str | None = None
    report: KeyReport | None = None

    @property
    def pretrained(self) -> bool:
        return self.source != "random-init"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "location": self.location}
        if self.report is not None:
            data["key_report"] = self.report.to_dict()
        return data


def create_network(
    spec: BackboneSpec, *, num_classes: int, options: dict[str, Any] | None = None
) -> nn.Module:
    """An untrained network for ``spec`` (no download ever happens here); ``options`` are
    extra model arguments such as ``drop_rate`` and ``drop_path_rate``."""
    try:
        if spec.timm_arch in VARIANTS:
            return EfficientNetLite(spec.timm_arch, num_classes=num_classes, **(options or {}))
        import timm

        return timm.create_model(spec.timm_arch, pretrained=False, num_classes=num_classes, **(options or {}))
    except Exception as exc:  # timm raises RuntimeError/ValueError/TypeError for bad arch args
        raise BackboneError(f"cannot build backbone {spec.name} ({spec.timm_arch}): {exc}") from exc


def build_network(
    spec: BackboneSpec,
    *,
    num_classes: int,
    weights: str | Path | None = None,
    pretrained: bool = True,
    options: dict[str, Any] | None = None,
) -> tuple[nn.Module, WeightsInfo]:
    """A network with its pretrained weights; see the module docstring for the search order."""
    if weights is not None:
        model = create_network(spec, num_classes=num_classes, options=options)
        report = load_matching(model, read_state_dict(weights), source=f"file {weights}", arch=spec.name)
        return model, WeightsInfo("file", str(weights), report)
    if not pretrained:
        return create_network(spec, num_classes=num_classes, options=options), WeightsInfo("random-init")
    local = locate_local_weights(spec)
    if local is not None:
        return _from_local(spec, local, num_classes=num_classes, options=options)
    return _from_hub(spec, num_classes=num_classes, options=options)


def _from_local(
    spec: BackboneSpec, local: LocalWeights, *, num_classes: int, options: dict[str, Any] | None
) -> tuple[nn.Module, WeightsInfo]:
    model = create_network(spec, num_classes=num_classes, options=options)
    state_dict = read_state_dict(local.path)
    # Packaged weights must map exactly; anything else goes through the tolerant matcher.
    strict = local.kind == "package"
    report = load_matching(model, state_dict, source=local.describe(), arch=spec.name, strict=strict)
    log.debug("weights for %s: %s (%s)", spec.name, local.describe(), report.summary())
    return model, WeightsInfo(local.kind, str(local.path), report)


def _from_hub(
    spec: BackboneSpec, *, num_classes: int, options: dict[str, Any] | None
) -> tuple[nn.Module, WeightsInfo]:
    if spec.pretrained_tag is None or not hub_reachable():
        raise WeightsError(_no_weights_message(spec))
    import timm

    log.info("downloading pretrained weights for %s from the hub", spec.pretrained_name)
    try:
        model = timm.create_model(
            spec.pretrained_name, pretrained=True, num_classes=num_classes, **(options or {})
        )
    except Exception as exc:  # network, HTTP and file errors from huggingface_hub/torch.hub
        raise WeightsError(
            f"downloading weights for {spec.pretrained_name} failed: {exc}. {_no_weights_message(spec)}"
        ) from exc
    return model, WeightsInfo("hub", spec.pretrained_name)


def _no_weights_message(spec: BackboneSpec) -> str:
    return (
        f"no pretrained weights for {spec.name} on this machine and the model hub is not "
        f"reachable. Pass `weights=FILE` (a torchvision or timm state dict, e.g. "
        f"resnet50-19c8e357.pth), connect to the internet once so the hub cache fills, or "
        f"train from random init with `pretrained=False`. Backbones whose weights ship with "
        f"imgcls: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2."
    )


def count_parameters(spec: BackboneSpec, *, num_classes: int = IMAGENET_CLASSES) -> int:
    """Parameter count without allocating memory (built on the meta device)."""
    with torch.device("meta"):
        model = create_network(spec, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Eval mode and channels_last (much faster CPU convolutions)."""
    model.eval()
    return model.to(memory_format=torch.channels_last)


def imagenet_class_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(IMAGENET_CLASSES)]
