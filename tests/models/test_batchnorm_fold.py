"""Folding BatchNorm into convolutions: same outputs, fewer layers, never a silent change."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from imgcls.models._batchnorm_fold import fold_batchnorm, folded_for_inference
from tests.norm_helpers import UnconnectedConvNorm, with_trained_statistics


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_resnet", "tf_efficientnet_lite0"])
def test_folded_network_matches_and_has_no_batchnorm_left(arch: str) -> None:
    model = with_trained_statistics(timm.create_model(arch, pretrained=False, num_classes=3))
    x = torch.randn(2, 3, 64, 64)
    folded, count = fold_batchnorm(model, x)
    assert count > 0 and folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    # the original keeps its layout (it is what gets saved and trained)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert set(model.state_dict()) != set(folded.state_dict())


def test_unconnected_pair_is_left_unfolded() -> None:
    model = with_trained_statistics(UnconnectedConvNorm())
    folded, count = fold_batchnorm(model, torch.randn(2, 3, 8, 8))
    assert folded is model and count == 0


def test_a_batchnorm_in_training_mode_stops_folding_and_keeps_its_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    model[3].eval()  # the first BatchNorm still normalises with batch statistics
    folded, count = fold_batchnorm(model, torch.randn(1, 3, 8, 8))
    assert folded is model and count == 0
    assert torch.equal(model[1].running_mean, torch.zeros(4))  # no check run touched it


def test_a_wrapper_in_training_mode_around_eval_layers_is_folded() -> None:
    """Like the fine-tune's frozen trunk: a new wrapper module around the eval network's layers."""
    layers = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    wrapper = nn.Sequential(layers)  # .training is True, its layers' is False
    folded, count = fold_batchnorm(wrapper, torch.randn(1, 3, 8, 8))
    assert count == 1 and isinstance(folded[0][1], nn.Identity)


def test_folded_for_inference_keeps_the_pooled_feature_api() -> None:
    model = with_trained_statistics(timm.create_model("test_efficientnet", pretrained=False, num_classes=2))
    folded = folded_for_inference(model, 64)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        got = folded.forward_head(folded.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_classifier_refolds_after_its_model_changes() -> None:
    """Predictions follow the model's current weights, even after an in-place change."""
    from imgcls.data.preprocessing import Preprocessing
    from imgcls.inference.classifier import Classifier

    model = with_trained_statistics(timm.create_model("test_efficientnet", pretrained=False, num_classes=2))
    pre = Preprocessing(input_size=64, crop_pct=1.0, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    clf = Classifier(model, classes=["a", "b"], preprocessing=pre, config={})
    image = (torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()
    before = clf.predict(image).scores[0].probability
    with torch.no_grad():
        clf.model.get_classifier().bias.copy_(torch.tensor([0.0, 50.0]))  # class b wins
    after = clf.predict(image)
    assert after.label == "b" and after.scores[0].probability > 0.99 and after.scores[0].probability != before
    with torch.no_grad():
        clf.model.get_classifier().bias.copy_(torch.tensor([50.0, 0.0]))
    assert clf.predict(image).label == "a"


def test_a_split_networks_top_folds_although_it_shares_its_models_head() -> None:
    """The top of a split network holds the model's head convolution and BatchNorm twice (in
    its stages and through the model): each pair must be folded once, not once per parent."""
    from imgcls.models._network_split import split_network
    from imgcls.models.efficientnet_lite import EfficientNetLite

    model = with_trained_statistics(EfficientNetLite("tf_efficientnet_lite0", num_classes=3))
    top = split_network(model, 2).top
    maps = torch.randn(2, 112, 9, 9)
    folded, count = fold_batchnorm(top, maps)
    assert count > 0 and folded is not top
    with torch.inference_mode():
        torch.testing.assert_close(folded.pooled(maps), top.pooled(maps), rtol=1e-4, atol=1e-4)
