"""EfficientNet-Lite0/1/2 in plain torch, layer for layer and key for key timm's
``tf_efficientnet_lite0/1/2``.

The default backbone is built here so that training a probe and predicting with it import
neither timm nor torchvision: those imports take seconds (torchvision pulls in torch._dynamo
and sympy), a large share of a whole ``imgcls train`` on a small data set. The state dict,
module names and outputs are timm's (a test holds them equal), so weights, saved models and
the fine-tune's stage split and layer-wise learning rates work on either.

Lite is EfficientNet without squeeze-and-excitation and with ReLU6, a stem and head not
scaled with width, and TensorFlow "same" padding: stride-2 convolutions pad asymmetrically
from the input's size (``SamePadConv2d``), stride-1 ones symmetrically.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3  # TensorFlow's BatchNorm defaults
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# (block kind, repeats, kernel, stride, expansion, output channels) per stage.
_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)

# timm architecture -> (channel multiplier, depth multiplier).
VARIANTS: dict[str, tuple[float, float]] = {
    "tf_efficientnet_lite0": (1.0, 1.0),
    "tf_efficientnet_lite1": (1.0, 1.1),
    "tf_efficientnet_lite2": (1.1, 1.2),
}


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding, computed from each input's size.

    Where the padding is asymmetric (``after = before + d``), the kernel gets ``d`` zero taps
    in front and the convolution pads ``after`` on both sides: each output then sees exactly
    TensorFlow's window, without copying the input into a padded tensor. The copy (what timm's
    ``Conv2dSame`` does) made Lite's stride-2 depthwise convolutions several times slower on a CPU.
    Lite has no dilated convolutions, and this class takes none.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.dilation != (1, 1):
            raise ValueError(f"SamePadConv2d supports dilation 1 only, got {self.dilation}")

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # nn.Conv2d.forward calls this with the layer's own weight; the frozen-norm fusion
        # (frozen_norms) calls it with a rescaled one.
        before_h, after_h = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        before_w, after_w = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # Exporters need a kernel of known shape: pad the input instead (same result).
            x = F.pad(x, (before_w, after_w, before_h, after_h))
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        if (before_h, before_w) != (after_h, after_w):
            weight = F.pad(weight, (after_w - before_w, 0, after_h - before_h, 0))
        return F.conv2d(x, weight, bias, self.stride, (after_h, after_w), self.dilation, self.groups)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one side: (before, after), ``after`` the larger."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # "same" padding is symmetric and static for odd kernels
        return nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
    return SamePadConv2d(in_chs, out_chs, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an activation, with timm's attribute names (``drop``, ``act``)
    and a BatchNorm's state-dict keys."""

    def __init__(self, channels: int, *, act: bool = True) -> None:
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.drop = nn.Identity()
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample (in training only)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rate or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class _ResidualBlock(nn.Module):
    """A block whose branch is added to its input where the shapes allow (stride 1, same
    channels), through stochastic depth."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return self.drop_path(out) + x if self.has_skip else out


class DepthwiseSeparableConv(_ResidualBlock):
    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, drop_path: float) -> None:
        super().__init__(in_chs, out_chs, stride, drop_path)
        self.conv_dw = _conv(in_chs, in_chs, kernel, stride, groups=in_chs)
        self.bn1 = BatchNormAct2d(in_chs)
        self.se = nn.Identity()
        self.conv_pw = _conv(in_chs, out_chs, 1)
        self.bn2 = BatchNormAct2d(out_chs, act=False)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))


class InvertedResidual(_ResidualBlock):
    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int, expansion: int, drop_path: float
    ) -> None:
        super().__init__(in_chs, out_chs, stride, drop_path)
        mid_chs = _make_divisible(in_chs * expansion)
        self.conv_pw = _conv(in_chs, mid_chs, 1)
        self.bn1 = BatchNormAct2d(mid_chs)
        self.conv_dw = _conv(mid_chs, mid_chs, kernel, stride, groups=mid_chs)
        self.bn2 = BatchNormAct2d(mid_chs)
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid_chs, out_chs, 1)
        self.bn3 = BatchNormAct2d(out_chs, act=False)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        return self.bn3(self.conv_pwl(self.se(out)))


class EfficientNetLite(nn.Module):
    """The network; ``forward_features`` / ``forward_head`` / ``get_classifier`` /
    ``reset_classifier`` / ``group_matcher`` behave as timm's ``EfficientNet``'s."""

    def __init__(
        self,
        arch: str,
        *,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if arch not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {arch!r}; known: {', '.join(VARIANTS)}")
        width, depth = VARIANTS[arch]
        self.drop_rate = drop_rate
        self.num_features = HEAD_CHANNELS
        self.pretrained_cfg = _pretrained_cfg(arch)
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS)
        self.blocks = _stages(width, depth, drop_path_rate)
        self.conv_head = _conv(_stage_channels(_STAGES[-1][5], width), HEAD_CHANNELS, 1)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier: nn.Module = _classifier(num_classes)
        _initialise(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = _classifier(num_classes)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning rates (timm's ``param_groups_layer_decay``)."""
        return {
            "stem": r"^conv_stem|bn1",
            "blocks": [
                (r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)", None),
                (r"conv_head|bn2", (99999,)),
            ],
        }


def _stages(width: float, depth: float, drop_path_rate: float) -> nn.Sequential:
    """The blocks, stage by stage; the first and last stage keep their depth (Lite's rule)."""
    last = len(_STAGES) - 1
    repeats = [r if i in (0, last) else math.ceil(r * depth) for i, (_, r, *_rest) in enumerate(_STAGES)]
    total, index = sum(repeats), 0
    in_chs, stages = STEM_CHANNELS, []
    for (kind, _, kernel, stride, expansion, channels), count in zip(_STAGES, repeats, strict=True):
        out_chs = _stage_channels(channels, width)
        blocks = []
        for i in range(count):
            rate = drop_path_rate * index / total
            step = stride if i == 0 else 1
            blocks.append(
                DepthwiseSeparableConv(in_chs, out_chs, kernel, step, rate)
                if kind == "ds"
                else InvertedResidual(in_chs, out_chs, kernel, step, expansion, rate)
            )
            in_chs, index = out_chs, index + 1
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages)


def _stage_channels(channels: int, width: float) -> int:
    return _make_divisible(channels * width)


def _make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round to the nearest multiple of ``divisor``, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


def _classifier(num_classes: int) -> nn.Module:
    return nn.Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()


def _pretrained_cfg(arch: str) -> dict[str, Any]:
    """What imgcls reads from a timm model's ``pretrained_cfg``: the architecture (part of the
    feature-cache key) and the classifier's name (``weights.classifier_prefix``). The
    preprocessing is in ``known_preprocessing``."""
    return {"architecture": arch, "classifier": "classifier"}


def _initialise(model: nn.Module) -> None:
    """The random start of a network trained without pretrained weights (EfficientNet's scheme)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.weight.size(0))
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)
