"""Each registry entry carries its pretrained preprocessing, and it is timm's."""

from __future__ import annotations

import pytest

from imgcls.models.registry import (
    BACKBONES,
    get_backbone,
    preprocessing_without_timm,
    resolve_preprocessing,
    timm_preprocessing,
)


def test_every_named_backbone_carries_timms_preprocessing() -> None:
    for name, spec in BACKBONES.items():
        assert spec.preprocessing is not None, name
        assert timm_preprocessing(spec) == (spec.preprocessing, False), name


def test_features_are_taken_at_the_raised_resolution_unless_a_size_is_given() -> None:
    for name in BACKBONES:
        spec = get_backbone(name)
        assert preprocessing_without_timm(name, None) == resolve_preprocessing(spec), name
        assert preprocessing_without_timm(name, 64) == resolve_preprocessing(spec, input_size=64), name
        assert resolve_preprocessing(spec).input_size > spec.preprocessing.input_size, name
        assert resolve_preprocessing(spec, for_features=False) == spec.preprocessing, name


def test_other_tags_and_architectures_ask_timm() -> None:
    assert get_backbone("resnet50.tv_in1k").preprocessing is None
    assert preprocessing_without_timm("resnet50.tv_in1k", None) is None
    assert preprocessing_without_timm("convnext_tiny", None) is None
    torchvision_tag = resolve_preprocessing(get_backbone("resnet50.tv_in1k"), for_features=False)
    assert torchvision_tag.crop_pct == 0.875  # timm's a1_in1k default tag has 0.95
    assert get_backbone("resnet50.a1_in1k").preprocessing == BACKBONES["resnet50"].preprocessing


def test_a_too_small_input_size_is_refused() -> None:
    from imgcls.errors import BackboneError

    with pytest.raises(BackboneError, match="at least 16"):
        resolve_preprocessing(BACKBONES["resnet18"], input_size=8)
