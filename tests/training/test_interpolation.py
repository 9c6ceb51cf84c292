"""Weight interpolation between a fine-tune's start and its result, and how the fine-tune
chooses the point it keeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls.training._interpolation import interpolated, snapshot
from imgcls.training._loop import LoopState, Validation
from imgcls.training.finetune import _interpolate_toward_start


def test_interpolated_moves_floats_along_the_line_and_keeps_counters_from_the_end():
    start = {"w": torch.zeros(2, 2), "steps": torch.tensor(1)}
    end = {"w": torch.ones(2, 2) * 4, "steps": torch.tensor(7)}
    mixed = interpolated(start, end, 0.25)
    assert torch.equal(mixed["w"], torch.ones(2, 2)) and int(mixed["steps"]) == 7
    assert torch.equal(interpolated(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolated(start, end, 1.0)["w"], end["w"])


def test_interpolated_refuses_state_dicts_of_different_networks():
    with pytest.raises(ValueError, match="different tensors"):
        interpolated({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="shapes"):
        interpolated({"a": torch.zeros(1)}, {"a": torch.zeros(2)}, 0.5)


def test_snapshot_is_not_changed_by_training():
    layer = nn.Linear(2, 1)
    kept = snapshot(layer.state_dict())
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(kept["weight"], layer.weight)


class _OneWeightTask:
    """A 'network' of one weight whose validation accuracy peaks at ``best``."""

    def __init__(self, best: float, has_val: bool = True) -> None:
        self.module = nn.Linear(1, 1, bias=False)
        self.best, self.has_val, self.validated = best, has_val, 0

    def set(self, value: float) -> None:
        with torch.no_grad():
            self.module.weight.fill_(value)

    def validate(self) -> Validation | None:
        self.validated += 1
        if not self.has_val:
            return None
        w = float(self.module.weight.detach())
        return Validation(
            loss=abs(w - self.best), accuracy=1.0 - abs(w - self.best), balanced_accuracy=0.0, n=1
        )


def _trained(task: _OneWeightTask, best_epoch: int) -> tuple[dict, LoopState]:
    task.set(0.0)
    start = snapshot(task.module.state_dict())
    task.set(1.0)  # the trained weights
    end = task.validate()
    score = (end.accuracy, -end.loss) if end is not None else None
    return start, LoopState(best_epoch=best_epoch, best_score=score)


def test_the_fine_tune_keeps_the_point_of_the_line_that_validates_best():
    task = _OneWeightTask(best=0.55)
    start, state = _trained(task, best_epoch=3)
    chosen = _interpolate_toward_start(task, start, state)
    assert chosen is not None and chosen["alpha"] == 0.5
    assert float(task.module.weight.detach()) == pytest.approx(0.5)
    assert set(chosen["val_accuracy"]) == {"0.50", "0.75", "1.00"}


def test_the_trained_weights_stay_when_they_validate_best():
    task = _OneWeightTask(best=1.0)
    start, state = _trained(task, best_epoch=3)
    assert _interpolate_toward_start(task, start, state)["alpha"] == 1.0
    assert float(task.module.weight.detach()) == 1.0


def test_no_interpolation_when_training_kept_the_start_or_nothing_validates():
    task = _OneWeightTask(best=0.5)
    start, state = _trained(task, best_epoch=0)
    assert _interpolate_toward_start(task, start, state) is None and float(task.module.weight.detach()) == 1.0
    task = _OneWeightTask(best=0.5, has_val=False)
    start, state = _trained(task, best_epoch=2)
    state.best_score = (2.0, 0.0)  # what the loop records without a validation split
    assert _interpolate_toward_start(task, start, state) is None and float(task.module.weight.detach()) == 1.0
