"""The preprocessing table the start-up paths use instead of timm is timm's."""

from __future__ import annotations

from imgcls.backbone import resolve_preprocessing, timm_preprocessing
from imgcls.known_preprocessing import PRETRAINED_PREPROCESSING, expected_preprocessing, native_preprocessing
from imgcls.registry import BACKBONES, get_backbone


def test_the_table_holds_timms_preprocessing_for_every_named_backbone() -> None:
    assert set(PRETRAINED_PREPROCESSING) == set(BACKBONES)
    for name in BACKBONES:
        assert timm_preprocessing(get_backbone(name)) == (native_preprocessing(name), False), name


def test_features_are_taken_at_the_raised_resolution_unless_a_size_is_given() -> None:
    for name in BACKBONES:
        spec = get_backbone(name)
        assert expected_preprocessing(name, None) == resolve_preprocessing(spec), name
        assert expected_preprocessing(name, 64) == resolve_preprocessing(spec, input_size=64), name
        native = resolve_preprocessing(spec, for_features=False)
        assert native == native_preprocessing(name), name


def test_other_tags_are_not_in_the_table_and_come_from_timm() -> None:
    assert expected_preprocessing("resnet50.tv_in1k", None) is None
    torchvision_tag = resolve_preprocessing(get_backbone("resnet50.tv_in1k"), for_features=False)
    assert torchvision_tag.crop_pct == 0.875  # timm's a1_in1k default tag has 0.95
