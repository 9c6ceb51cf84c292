"""The epoch loop's branches that the CPU recipe does not take: the gradient scaler of fp16
training (torch runs a CPU GradScaler), through a checkpoint and an exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from imgcls.training._loop import LoopSettings, Optimisation, resume_training, run_training
from imgcls.training._tasks import ActivationTask, LabelledRows
from imgcls.training.checkpoint import load_checkpoint


def _task() -> ActivationTask:
    torch.manual_seed(0)
    top = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    maps = torch.randn(40, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = (maps.mean(dim=(1, 2, 3)) > 0).long()
    rows = LabelledRows(labels, torch.arange(32), torch.arange(32, 40))
    return ActivationTask(top, maps, rows, num_classes=2, batch_size=8, augment="light")


def _optimisation(task: ActivationTask) -> Optimisation:
    optimizer = torch.optim.AdamW(task.module.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Optimisation(
        optimizer, scheduler, F.cross_entropy, torch.amp.GradScaler("cpu", init_scale=2.0**10)
    )


def test_the_gradient_scaler_branch_checkpoints_and_resumes_exactly(tmp_path):
    def settings(checkpoint) -> LoopSettings:
        return LoopSettings(epochs=4, patience=4, seed=0, device=torch.device("cpu"), checkpoint=checkpoint)

    straight = _task()
    straight_opt = _optimisation(straight)
    state = run_training(straight, straight_opt, settings(tmp_path / "straight.pt"))
    assert straight_opt.scaler.get_scale() > 0 and len(state.history) == 5

    stopped = _task()
    calls = {"n": 0}
    validate = stopped.validate

    def stop_in_epoch_three():
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 0's, 1's and 2's validations ran; the checkpoint is epoch 2's
            raise KeyboardInterrupt
        return validate()

    stopped.validate = stop_in_epoch_three
    with pytest.raises(KeyboardInterrupt):
        run_training(stopped, _optimisation(stopped), settings(tmp_path / "stopped.pt"))
    payload = load_checkpoint(tmp_path / "stopped.pt")
    assert payload["scaler"] is not None and payload["state"]["next_epoch"] == 3

    resumed = _task()
    final = resume_training(resumed, _optimisation(resumed), settings(tmp_path / "stopped.pt"), payload)
    # Exact: one process replays the same kernels in the same order from the checkpoint.
    assert [r.train_loss for r in final.history] == [r.train_loss for r in state.history]
    for name, tensor in straight.module.state_dict().items():
        assert torch.equal(tensor, resumed.module.state_dict()[name]), name
