"""Weight-space interpolation between a fine-tune's starting point and its result (WiSE-FT,
Wortsman et al., 2022): ``start + alpha * (end - start)`` for every floating-point tensor.

A fine-tune that starts from a fitted linear probe (the probe head on the pretrained network)
stays in the starting point's basin, so the straight line between the two is a line of good
networks, and points on it often score better on held-out data than either end (figures on
docs/performance.md).
"""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]


def snapshot(state: State) -> State:
    """A detached copy of a state dict (the starting point, kept while training changes it)."""
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def interpolated(start: State, end: State, alpha: float) -> State:
    """``start + alpha * (end - start)`` per floating-point tensor; other tensors (counters)
    are taken from ``end``. Both must hold the same names and shapes."""
    if start.keys() != end.keys():
        missing = sorted(start.keys() ^ end.keys())[:3]
        raise ValueError(f"cannot interpolate state dicts with different tensors (e.g. {missing})")
    mixed: State = {}
    for name, last in end.items():
        first = start[name]
        if first.shape != last.shape:
            raise ValueError(
                f"cannot interpolate {name}: shapes {tuple(first.shape)} and {tuple(last.shape)}"
            )
        if last.is_floating_point():
            mixed[name] = torch.lerp(first.to(last.dtype), last, alpha)
        else:
            mixed[name] = last.clone()
    return mixed
