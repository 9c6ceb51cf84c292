"""Fold each inference-mode BatchNorm into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
with rescaled weights and a bias. Folding saves a full pass over every activation map, which
is what bounds depthwise networks on a CPU (docs/performance.md). ONNX Runtime does the same
fold at load time.

The fold works on a copy (the original keeps its state-dict layout for saving and training)
and is applied only when the folded copy gives the same outputs as the original on a test
input: a convolution and BatchNorm that sit side by side in a module but are not connected
one after the other would change the result, and then nothing is folded.
"""

from __future__ import annotations

import copy
import itertools
import logging
import sys
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.models.efficientnet_lite import BatchNormAct2d, SamePadConv2d

log = logging.getLogger(__name__)
_TOLERANCE = 1e-3  # of the largest output magnitude; a wrong fold is off by O(1)


def fold_batchnorm(module: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``module`` with its BatchNorms folded into the convolutions before them, and
    the number folded; ``module`` itself (and 0) when there is nothing to fold, when a
    BatchNorm is in training mode (it normalises with batch statistics, and running the check
    would update its running ones), or when the folded copy does not reproduce ``module``'s
    output on ``example``."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules()):
        return module, 0
    folded = copy.deepcopy(module, _shared_constants(module))
    count = _fold_children(folded)
    if not count:
        return module, 0
    if not _same_outputs(module, folded, example):
        log.debug("BatchNorm folding changed %s's output; running it unfolded", type(module).__name__)
        return module, 0
    return folded, count


def _shared_constants(module: nn.Module) -> dict[int, torch.Tensor]:
    """A ``deepcopy`` memo that leaves the non-persistent buffers (a kNN head's bank of
    training features, memory-mapped and as large as the data set) shared, not copied: the
    fold never changes them, and nothing trains them."""
    return {
        id(buffer): buffer
        for child in module.modules()
        for name, buffer in child.named_buffers(recurse=False)
        if name in child._non_persistent_buffers_set
    }


@dataclass(frozen=True)
class ConvNorm:
    """A convolution and the BatchNorm that follows it as the next child of the same parent."""

    conv: nn.Conv2d
    norm: nn.BatchNorm2d
    after: nn.Module  # what is left of the BatchNorm once its affine map moves into ``conv``


def conv_norm_pairs(module: nn.Module) -> list[ConvNorm]:
    """Every (convolution, BatchNorm) pair of consecutive children in ``module``, each once
    (a module can sit in two parents, as a split network's top shares its model's head).
    Children are not always called in their registration order: callers check outputs."""
    pairs: dict[int, ConvNorm] = {}
    for parent in module.modules():
        for (_, previous), (_, norm) in itertools.pairwise(parent.named_children()):
            conv = _last_layer(previous)
            after = _norm_replacement(norm)
            if (
                id(norm) not in pairs
                and type(conv) in _foldable_convs()
                and after is not None
                and conv.out_channels == norm.num_features
            ):
                pairs[id(norm)] = ConvNorm(conv, norm, after)
    return list(pairs.values())


def _fold_children(module: nn.Module) -> int:
    pairs = conv_norm_pairs(module)
    replacements = {id(pair.norm): pair.after for pair in pairs}
    for pair in pairs:
        _fold_into(pair.conv, pair.norm)
    for parent in list(module.modules()):  # replace each folded BatchNorm wherever it sits
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    return len(pairs)


def _last_layer(module: nn.Module) -> nn.Module:
    """The layer whose output ``module`` returns, looking into trailing ``nn.Sequential``s
    (e.g. a deep stem that ends in a convolution, followed by the stem's BatchNorm)."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    return module


def _norm_replacement(norm: nn.Module) -> nn.Module | None:
    """What is left of ``norm`` once its affine map moved into the convolution (None: cannot fold)."""
    if not isinstance(norm, nn.BatchNorm2d) or norm.running_mean is None or norm.running_var is None:
        return None
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    if type(norm) in _norm_act_types():  # BatchNorm, then dropout and activation
        return nn.Sequential(norm.drop, norm.act)
    return None


def _foldable_convs() -> tuple[type, ...]:
    """Convolutions whose forward pass is linear in ``weight`` (weight-standardising ones are
    not). timm's count only when timm is loaded: a timm network cannot exist otherwise."""
    timm_layers = sys.modules.get("timm.layers")
    return (nn.Conv2d, SamePadConv2d) + ((timm_layers.Conv2dSame,) if timm_layers else ())


def _norm_act_types() -> tuple[type, ...]:
    timm_layers = sys.modules.get("timm.layers")
    return (BatchNormAct2d,) + ((timm_layers.BatchNormAct2d,) if timm_layers else ())


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    bias = conv.bias * scale + shift if conv.bias is not None else shift
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def folded_for_inference(module: nn.Module, input_size: int) -> nn.Module:
    """``module`` with its BatchNorms folded (checked on a seeded random image, ``input_size``
    pixels or 128 if smaller: a fold is per channel, whatever the size), or ``module`` itself
    where folding does not apply."""
    generator = torch.Generator().manual_seed(0)
    side = min(input_size, 128)
    example = torch.randn(1, 3, side, side, generator=generator)
    folded, count = fold_batchnorm(module, example.contiguous(memory_format=torch.channels_last))
    log.debug("folded %d BatchNorm layers of %s into their convolutions", count, type(module).__name__)
    return folded


@torch.inference_mode()
def _same_outputs(reference: nn.Module, candidate: nn.Module, example: torch.Tensor) -> bool:
    with torch.autocast("cpu", enabled=False):
        return outputs_match(reference(example), candidate(example))


def outputs_match(expected: object, got: object) -> bool:
    """Whether ``got`` is ``expected`` up to rounding (a wrong fold is off by O(1))."""
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor):
        return False
    if expected.shape != got.shape:
        return False
    scale = max(1.0, float(expected.abs().max()))
    return float((expected - got).abs().max()) <= _TOLERANCE * scale
