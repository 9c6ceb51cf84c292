"""Faster training steps for convolutional networks, with the same parameters and results.

Two changes to how a network's convolutions run while it trains, installed for the duration
of a ``with`` block and removed after it. The module's structure and state-dict keys stay as
they are, so checkpoints, the optimiser and the saved model see no difference.

- **Frozen BatchNorms inside the convolution.** A fine-tune keeps its BatchNorms in eval mode
  (running statistics fixed) while their affine parameters train. Such a BatchNorm is a
  per-channel affine map: ``bn(conv(x, w))`` equals ``conv(x, w * s) + (beta - mean * s)``
  with ``s = gamma / sqrt(var + eps)``. The rescaled weight costs a pass over the weights;
  the BatchNorm's forward and backward passes over every activation map go away. Gradients
  reach the same parameters and agree up to rounding.
- **Depthwise convolutions in fp32 under CPU bf16 autocast** where oneDNN's bf16 backward
  pass is slow: when it computes the kernel's gradient or the convolution has a stride.
  bf16 pointwise convolutions run much faster than fp32 ones, and a frozen stride-1
  depthwise convolution runs about as fast in bf16 as in fp32 plus the two casts it would
  need (figures on docs/performance.md). Only steps that record gradients are changed; inference keeps its
  bf16 depthwise convolutions.

A BatchNorm put back in training mode (batch statistics) runs unfused.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.models._batchnorm_fold import ConvNorm, conv_norm_pairs, outputs_match
from imgcls.models.efficientnet_lite import SamePadConv2d

# Convolutions whose ``_conv_forward(x, weight, bias)`` is their whole forward pass.
_CONVS = (nn.Conv2d, SamePadConv2d)


@dataclass(frozen=True)
class FastPath:
    """What ``training_fast_path`` installed."""

    fused_norms: int  # BatchNorms computed inside their convolutions
    depthwise: int  # depthwise convolutions whose precision the fast path chooses


@contextlib.contextmanager
def training_fast_path(module: nn.Module, example: torch.Tensor) -> Iterator[FastPath]:
    """While the block runs, ``module``'s convolutions train faster (see the module's doc).
    Nothing is fused when the fused module does not reproduce ``module``'s eval-mode output
    on ``example``."""
    pairs = {id(p.conv): p for p in conv_norm_pairs(module) if _worth_fusing(p)}
    convs = [c for c in module.modules() if type(c) in _CONVS and (id(c) in pairs or is_depthwise(c))]
    modes = {m: m.training for m in module.modules()}
    module.eval()
    expected = _output(module, example)
    _install(convs, pairs)
    if pairs and not outputs_match(expected, _output(module, example)):
        _remove(convs, pairs)
        pairs = {}
        convs = [c for c in convs if is_depthwise(c)]
        _install(convs, pairs)
    for layer, training in modes.items():
        layer.train(training)
    try:
        yield FastPath(len(pairs), sum(is_depthwise(c) for c in convs))
    finally:
        _remove(convs, pairs)


def _worth_fusing(pair: ConvNorm) -> bool:
    """Fusable, and not a frozen convolution before a trained BatchNorm: the BatchNorm's
    scale would then need the convolution's weight gradient, which for a depthwise
    convolution costs more than the BatchNorm pass it saves."""
    if type(pair.conv) not in _CONVS or not pair.norm.affine:
        return False
    return pair.conv.weight.requires_grad or not pair.norm.weight.requires_grad


def depthwise_unit_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The kernels of ``module``'s depthwise convolutions and the affine parameters of the
    BatchNorm right after each: what a CPU fine-tune keeps pretrained (``trains_depthwise``)."""
    units = [p for p in conv_norm_pairs(module) if is_depthwise(p.conv)]
    return [param for unit in units for param in (unit.conv.weight, unit.norm.weight, unit.norm.bias)]


def is_depthwise(layer: nn.Module) -> bool:
    """A convolution with one group per input channel."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


@torch.inference_mode()
def _output(module: nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return module(example)


def _install(convs: list[nn.Conv2d], pairs: dict[int, ConvNorm]) -> None:
    for conv in convs:
        pair = pairs.get(id(conv))
        conv.forward = functools.partial(_conv_forward, conv, pair.norm if pair else None)
        if pair is not None:
            pair.norm.forward = functools.partial(_rest_of_norm, pair.norm, pair.after)


def _remove(convs: list[nn.Conv2d], pairs: dict[int, ConvNorm]) -> None:
    for layer in [*convs, *(p.norm for p in pairs.values())]:
        layer.__dict__.pop("forward", None)


def _conv_forward(conv: nn.Conv2d, norm: nn.BatchNorm2d | None, x: torch.Tensor) -> torch.Tensor:
    weight, bias = conv.weight, conv.bias
    if norm is not None and not norm.training:
        weight, bias = _fused(weight, bias, norm)
    if is_depthwise(conv) and _recording_cpu_autocast(x) and (weight.requires_grad or conv.stride != (1, 1)):
        with torch.autocast("cpu", enabled=False):
            return conv._conv_forward(x.float(), weight, bias)
    return conv._conv_forward(x, weight, bias)


def _recording_cpu_autocast(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")


def _fused(
    weight: torch.Tensor, bias: torch.Tensor | None, norm: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), shift


def _rest_of_norm(norm: nn.BatchNorm2d, after: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return type(norm).forward(norm, x) if norm.training else after(x)
