"""The training fast path: fused frozen BatchNorms and fp32 depthwise convolutions under bf16
autocast change how a step is computed, never what it computes or what gets saved."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from imgcls.models._network_split import split_network
from imgcls.models.efficientnet_lite import EfficientNetLite
from imgcls.training._fast_path import training_fast_path
from imgcls.training._tasks import train_with_frozen_norms
from tests.norm_helpers import UnconnectedConvNorm, with_trained_statistics


def _lite_top() -> nn.Module:
    torch.manual_seed(0)
    model = with_trained_statistics(EfficientNetLite("tf_efficientnet_lite0", num_classes=4)).double()
    return split_network(model, 2).top


def _gradients(top: nn.Module, maps: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    top.zero_grad(set_to_none=True)
    train_with_frozen_norms(top)
    F.cross_entropy(top(maps), labels).backward()
    return {name: p.grad.clone() for name, p in top.named_parameters() if p.grad is not None}


def test_fused_frozen_norms_give_the_same_loss_and_gradients() -> None:
    top = _lite_top()
    maps = torch.randn(4, 112, 9, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 3])
    plain = _gradients(top, maps, labels)
    with training_fast_path(top, maps[:1]) as fast:
        fused = _gradients(top, maps, labels)
    assert fast.fused_norms > 0
    assert plain.keys() == fused.keys() and len(plain) > 20  # convolutions, BatchNorm affines, head
    for name, grad in plain.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_the_fast_path_leaves_the_module_as_it_found_it() -> None:
    top = _lite_top()
    keys = list(top.state_dict())
    maps = torch.randn(2, 112, 9, 9, dtype=torch.float64)
    top.train()
    with torch.inference_mode():
        before = top.eval()(maps)
    top.train()
    with training_fast_path(top, maps[:1]):
        assert top.training  # the check ran in eval mode and restored the modes
        assert list(top.state_dict()) == keys
    assert not any("forward" in vars(m) for m in top.modules())
    with torch.inference_mode():
        assert torch.equal(top.eval()(maps), before)


def test_a_batchnorm_in_training_mode_still_normalises_with_batch_statistics() -> None:
    model = with_trained_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())).double()
    x = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    stored = model[1].running_mean.clone()
    with training_fast_path(model, x[:1]) as fast:
        assert fast.fused_norms == 1
        model.train()
        out = model(x).detach()
    model[1].eval()
    unfused = model[1](model[0](x)).relu().detach()  # the stored statistics, now updated
    norm = model[1]
    weight, bias = norm.weight.detach(), norm.bias.detach()
    conv_out = model[0](x).detach()
    reference = F.batch_norm(conv_out, None, None, weight, bias, training=True, eps=norm.eps).relu()
    torch.testing.assert_close(out, reference)  # normalised with the batch's statistics
    assert not torch.equal(model[1].running_mean, stored)  # and the running ones moved
    assert not torch.allclose(out, unfused)


def test_an_unconnected_pair_is_not_fused() -> None:
    model = with_trained_statistics(UnconnectedConvNorm()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        expected = model(x)
    with training_fast_path(model, x[:1]) as fast, torch.inference_mode():
        assert fast.fused_norms == 0
        torch.testing.assert_close(model(x), expected)


def test_a_frozen_depthwise_convolution_keeps_its_batchnorm_unfused() -> None:
    """Fusing it would make the trained BatchNorm scale need the depthwise weight gradient."""
    top = _lite_top()
    depthwise = [m for m in top.stages.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    for conv in depthwise:
        conv.weight.requires_grad_(False)
    maps = torch.randn(1, 112, 9, 9, dtype=torch.float64)
    with training_fast_path(top, maps) as fast:
        assert not any("forward" in vars(conv) and _fuses(conv) for conv in depthwise)
    everything = _lite_top()
    with training_fast_path(everything, maps) as all_trained:
        assert all_trained.fused_norms > fast.fused_norms


def _fuses(conv: nn.Module) -> bool:
    return vars(conv)["forward"].args[1] is not None


def _dtypes_seen(conv: nn.Conv2d, model: nn.Module, x: torch.Tensor) -> list[torch.dtype]:
    """The output dtypes of ``conv`` in a bf16 training step, then in bf16 inference."""
    seen: list[torch.dtype] = []
    hook = conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with training_fast_path(model, x[:1]):
        seen.clear()  # the check's forward pass
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().sum().backward()
            with torch.inference_mode():
                model(x)
    hook.remove()
    return seen


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs a oneDNN CPU build")
@pytest.mark.parametrize(
    ("trained", "stride", "expected"),
    [
        (True, 1, torch.float32),  # a kernel gradient: slow in bf16
        (False, 2, torch.float32),  # a stride: slow in bf16
        (False, 1, torch.bfloat16),  # neither: bf16 costs no more than fp32 and two casts
    ],
)
def test_depthwise_convolutions_train_in_fp32_where_bf16_is_slow(
    trained: bool, stride: int, expected: torch.dtype
) -> None:
    conv = nn.Conv2d(8, 8, 3, stride=stride, padding=1, groups=8)
    conv.weight.requires_grad_(trained)
    conv.bias.requires_grad_(trained)
    model = nn.Sequential(nn.Conv2d(8, 8, 1), conv)
    seen = _dtypes_seen(conv, model, torch.randn(2, 8, 6, 6))
    assert seen == [expected, torch.bfloat16]  # inference stays in bf16
    assert (conv.weight.grad is not None) == trained
