"""Loading state dicts in torchvision and timm layouts, with a key report."""

from __future__ import annotations

import pytest
import torch
import torchvision

from imgcls.errors import WeightsError
from imgcls.models.backbone import build_network
from imgcls.models.registry import get_backbone
from imgcls.models.weights import adapt_keys, read_state_dict


@pytest.fixture(scope="module")
def torchvision_resnet50_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet50-torchvision.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_torchvision_resnet50_loads_with_report(torchvision_resnet50_file):
    model, info = build_network(get_backbone("resnet50"), num_classes=3, weights=torchvision_resnet50_file)
    report = info.report
    assert info.source == "file"
    assert report.backbone_matched == report.backbone_total == 318
    assert [k for k, _, _ in report.shape_mismatched] == ["fc.weight", "fc.bias"]  # 1000 -> 3 classes
    assert not report.classifier_loaded and not report.missing[2:] and not report.unexpected
    expected = torch.load(torchvision_resnet50_file, weights_only=True)["layer4.2.conv3.weight"]
    assert torch.equal(model.state_dict()["layer4.2.conv3.weight"], expected)
    assert model.get_classifier().out_features == 3


def test_matching_class_count_keeps_the_classifier(torchvision_resnet50_file):
    _, info = build_network(get_backbone("resnet50"), num_classes=1000, weights=torchvision_resnet50_file)
    assert info.report.classifier_loaded and not info.report.shape_mismatched


def test_densenet_weights_for_resnet50_fail_clearly(tmp_path):
    path = tmp_path / "densenet121.pth"
    torch.save(torchvision.models.densenet121(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"do not fit resnet50: only 0 of 318 backbone tensors"):
        build_network(get_backbone("resnet50"), num_classes=2, weights=path)


def test_wrapped_checkpoints_and_ddp_prefix_are_unwrapped(tmp_path):
    state = {"module.conv.weight": torch.zeros(2), "module.fc.bias": torch.ones(1)}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": state}, path)
    assert set(read_state_dict(path)) == {"conv.weight", "fc.bias"}


def test_pickled_model_object_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(WeightsError, match="as a state dict"):
        read_state_dict(path)


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        read_state_dict(junk)


def test_old_torchvision_densenet_keys_are_renamed():
    model = torchvision.models.densenet121(weights=None)
    old = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in model.state_dict().items()
    }
    assert any("norm.1." in k for k in old)
    assert set(adapt_keys(old, model)) == set(model.state_dict())


def test_safetensors_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_resnet", num_classes=5)
    path = tmp_path / "tiny.safetensors"
    save_file(source.state_dict(), str(path))
    model, info = build_network(get_backbone("test_resnet"), num_classes=5, weights=path)
    assert info.report.classifier_loaded
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), source.state_dict().values(), strict=True)
    )


def test_unknown_backbone_suggests_names():
    from imgcls.errors import BackboneError

    with pytest.raises(BackboneError, match=r"Did you mean.*resnet50"):
        get_backbone("resnet5O")
