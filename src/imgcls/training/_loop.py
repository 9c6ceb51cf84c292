"""The epoch loop of every gradient-trained strategy.

What is trained and on which batches is a ``TrainingTask``; this module owns the rest:
per-epoch seeding (so a resumed run replays the same batches), mixed precision, the
learning-rate schedule, early stopping on the validation score with the best weights kept,
a wall-clock deadline checked between batches, an atomic checkpoint after every epoch,
one progress report for the whole run (a bar with its ETA), a time estimate before the first
epoch, and the epoch table.

Under torchrun (``settings.ranks``) the trained module runs under DistributedDataParallel:
every rank draws the same order of training rows (seeded by seed and epoch) and takes its
share of it, augments with its own generator (seeded by seed, epoch and rank), and validates
its share of the validation rows, gathered exactly. Decisions that end an epoch or the run
(the deadline, early stopping) are the same on every rank. Only rank 0 talks
(``show_progress``) and writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from imgcls.errors import ModelFormatError, first_line
from imgcls.system.devices import place
from imgcls.system.distributed import SINGLE, Ranks
from imgcls.system.profiling import PROFILE
from imgcls.system.progress import Progress, duration
from imgcls.system.wording import count
from imgcls.training._compile import compile_failures, compiled, dynamic_batch
from imgcls.training.checkpoint import restore_rng_states, rng_states, save_checkpoint

log = logging.getLogger(__name__)

# Forward passes a training image costs (forward, backward and the update), for the estimate.
TRAIN_COST = 3.0


@dataclass(frozen=True)
class Validation:
    loss: float
    accuracy: float
    balanced_accuracy: float
    n: int  # images scored


@dataclass(frozen=True)
class EpochRandom:
    """An epoch's randomness: ``order`` (the same on every rank) decides which training rows
    come in which order; ``augment`` (this rank's own) draws crops, flips and mixing. One
    process alone draws both from one generator."""

    epoch: int
    order: torch.Generator
    augment: torch.Generator


class TrainingTask(Protocol):
    """What the loop trains: ``module`` on the batches of ``batches``."""

    module: nn.Module
    batch_size: int  # per rank

    def batches(self, random: EpochRandom) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of this rank's (inputs, targets); all randomness drawn from ``random``."""
        ...

    def num_batches(self) -> int:
        """Batches per epoch on each rank (the same on every rank)."""
        ...

    def train_mode(self) -> None: ...

    def validate(self) -> Validation | None: ...


@dataclass
class EpochRecord:
    """One row of the epoch table and ``history.csv``; epoch 0 is the starting point."""

    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_accuracy: float | None
    val_balanced_accuracy: float | None
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class LoopSettings:
    epochs: int
    patience: int
    seed: int
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    deadline: float | None = None  # time.perf_counter() value by which the run must end
    # What the run does after its last epoch, in validation passes: weight interpolation's
    # passes and scoring every split. Their time is kept back from the deadline, so the run,
    # not only its training, ends by it.
    finishing_passes: float = 0.0
    show_progress: bool = True
    checkpoint: Path | None = None
    ranks: Ranks = SINGLE
    compile: bool = False  # run the training steps through torch.compile


@dataclass
class LoopState:
    """Where a run stands; saved in every checkpoint."""

    next_epoch: int = 1
    best_epoch: int = -1
    best_score: tuple[float, float] | None = None  # (val accuracy, -val loss)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[EpochRecord] = field(default_factory=list)
    stopped: str = ""

    def to_payload(self) -> dict[str, Any]:
        return {
            "next_epoch": self.next_epoch,
            "best_epoch": self.best_epoch,
            "best_score": list(self.best_score) if self.best_score else None,
            "best_state": self.best_state,
            "history": [asdict(r) for r in self.history],
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> LoopState:
        score = data["best_score"]
        return cls(
            next_epoch=int(data["next_epoch"]),
            best_epoch=int(data["best_epoch"]),
            best_score=(float(score[0]), float(score[1])) if score else None,
            best_state=data["best_state"],
            history=[EpochRecord(**row) for row in data["history"]],
        )


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss: LossFn
    scaler: torch.amp.GradScaler | None = None


def seed_epoch(seed: int, epoch: int, ranks: Ranks = SINGLE) -> EpochRandom:
    """Seed every generator from (seed, epoch), and for augmentation also from the rank (the
    global ones too: transforms in the training process draw from them)."""
    shared = (seed * 1_000_003 + epoch) % (2**31)
    own = (shared + ranks.rank * 7_919) % (2**31)
    random.seed(own)
    np.random.seed(own)
    torch.manual_seed(own)
    order = torch.Generator().manual_seed(shared)
    augment = torch.Generator().manual_seed(own) if ranks.active else order
    return EpochRandom(epoch, order, augment)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine decay to ``floor`` (a multiplier of each group's lr)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def run_training(
    task: TrainingTask, opt: Optimisation, settings: LoopSettings, state: LoopState | None = None
) -> LoopState:
    """Train until the epochs, the patience or the deadline run out; leaves the best weights in
    ``task.module`` and returns the final state (``state.stopped`` says why it stopped)."""
    talk = settings.show_progress
    if state is None:
        state = LoopState()
        started = time.perf_counter()
        start = task.validate()  # epoch 0: the starting point is a candidate too
        pass_seconds = time.perf_counter() - started
        settings = _keep_back_for_the_end(settings, pass_seconds)
        if talk:
            _log_estimate(task, settings, start, pass_seconds)
        _record(state, task, EpochRecord(0, None, *_val_fields(start), _lr(opt), 0.0, 0.0), start)
        _log_header(talk)
        _log_row(state.history[-1], talk)
    else:
        _log_header(talk)
    epoch_seconds: list[float] = [r.seconds for r in state.history if r.epoch > 0]
    progress = Progress("fine-tuning", unit="batches") if talk else None
    if progress is not None:
        progress.start((state.next_epoch - 1) * task.num_batches(), settings.epochs * task.num_batches())
    trained = settings.ranks.wrap(task.module, settings.device)
    if settings.compile:
        trained = compiled(trained, settings.device)
    try:
        with settings.ranks.failures("a training step"), compile_failures():
            _run_epochs(task, trained, opt, settings, state, progress, epoch_seconds)
    finally:
        if progress is not None:
            progress.close()
    state.stopped = state.stopped or "completed"
    if state.best_state is not None:
        task.module.load_state_dict(state.best_state)
    if talk:
        log.info("training %s; best val at epoch %d", state.stopped, state.best_epoch)
    return state


def _run_epochs(
    task: TrainingTask,
    trained: nn.Module,
    opt: Optimisation,
    settings: LoopSettings,
    state: LoopState,
    progress: Progress | None,
    epoch_seconds: list[float],
) -> None:
    for epoch in range(state.next_epoch, settings.epochs + 1):
        if _out_of_time(settings, epoch_seconds):
            state.stopped = "time limit"
            break
        epoch_started = time.perf_counter()
        record = _train_epoch(task, trained, opt, settings, epoch, progress)
        if record is None:
            state.stopped = "time limit"
            break
        with PROFILE.stage("validate"):
            validation = task.validate()
        record.val_loss, record.val_accuracy, record.val_balanced_accuracy = _val_fields(validation)
        _record(state, task, record, validation)
        _log_row(record, settings.show_progress)
        state.next_epoch = epoch + 1
        if settings.checkpoint is not None:
            with PROFILE.stage("checkpoint write"):
                _save(settings.checkpoint, task, opt, state)
        # What the next epoch will cost: its training steps, validation and checkpoint.
        epoch_seconds.append(time.perf_counter() - epoch_started)
        if (
            validation is not None
            and epoch < settings.epochs
            and epoch - state.best_epoch >= settings.patience
        ):
            state.stopped = f"early stop (no better val score for {count(settings.patience, 'epoch')})"
            break


def resume_training(
    task: TrainingTask, opt: Optimisation, settings: LoopSettings, payload: dict[str, Any]
) -> LoopState:
    """Continue from a checkpoint payload written by ``run_training``."""
    try:
        task.module.load_state_dict(payload["module"])
        opt.optimizer.load_state_dict(payload["optimizer"])
        opt.scheduler.load_state_dict(payload["scheduler"])
        if opt.scaler is not None and payload.get("scaler"):
            opt.scaler.load_state_dict(payload["scaler"])
        restore_rng_states(payload["rng"])
        state = LoopState.from_payload(payload["state"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelFormatError(
            f"the checkpoint does not fit this run ({type(exc).__name__}: {first_line(exc)}); "
            "train again with `overwrite=True`"
        ) from None
    log.info("resuming at epoch %d (best so far: epoch %d)", state.next_epoch, state.best_epoch)
    return run_training(task, opt, settings, state)


def _train_epoch(
    task: TrainingTask,
    trained: nn.Module,
    opt: Optimisation,
    settings: LoopSettings,
    epoch: int,
    progress: Progress | None,
) -> EpochRecord | None:
    """One epoch of training steps on this rank's batches (``trained``: the module, or its DDP
    wrapper); ``None`` when the deadline passed during it."""
    random_state = seed_epoch(settings.seed, epoch, settings.ranks)
    task.train_mode()
    started = time.perf_counter()
    total_loss, seen = 0.0, 0
    per_epoch = task.num_batches()
    for batch, (inputs, targets) in enumerate(_timed(task.batches(random_state)), start=1):
        if _past_deadline(settings):
            log.info("time limit reached during epoch %d; its partial training is discarded", epoch)
            return None
        loss = _step(trained, opt, settings, inputs, targets)
        total_loss += loss * len(inputs)
        seen += len(inputs)
        if progress is not None:
            progress((epoch - 1) * per_epoch + batch, settings.epochs * per_epoch)
    total_loss, seen = settings.ranks.sums([total_loss, seen], "adding up the epoch's loss")
    seconds = time.perf_counter() - started
    return EpochRecord(epoch, total_loss / max(seen, 1), None, None, None, _lr(opt), seconds, seen / seconds)


def _step(
    module: nn.Module, opt: Optimisation, settings: LoopSettings, inputs: torch.Tensor, targets: torch.Tensor
) -> float:
    inputs = place(inputs, settings.device).contiguous(memory_format=torch.channels_last)
    targets = place(targets, settings.device)
    if settings.compile:
        dynamic_batch(inputs, targets)
    with PROFILE.stage("train forward"), _autocast(settings):
        loss = opt.loss(module(inputs).float(), targets)
    opt.optimizer.zero_grad(set_to_none=True)
    with PROFILE.stage("train backward + step"):
        if opt.scaler is not None:
            opt.scaler.scale(loss).backward()
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
        else:
            loss.backward()
            opt.optimizer.step()
    opt.scheduler.step()
    return float(loss.detach())


def _timed(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches, with the time spent producing each (decode, augment, collate) profiled."""
    while True:
        with PROFILE.stage("train batches (data + augment)"):
            item = next(batches, None)
        if item is None:
            return
        yield item


def _autocast(settings: LoopSettings) -> contextlib.AbstractContextManager:
    if settings.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(settings.device.type, dtype=settings.autocast_dtype)


def _past_deadline(settings: LoopSettings) -> bool:
    """Whether the deadline has passed (on any rank: they stop together)."""
    if settings.deadline is None:
        return False
    return settings.ranks.any(time.perf_counter() > settings.deadline, "agreeing on the time limit")


def _out_of_time(settings: LoopSettings, epoch_seconds: list[float]) -> bool:
    """Stop before an epoch that would end past the deadline (judged by the slowest so far, on
    any rank)."""
    if settings.deadline is None:
        return False
    remaining = settings.deadline - time.perf_counter()
    expected = max(epoch_seconds) if epoch_seconds else 0.0
    stop = settings.ranks.any(remaining <= expected or remaining <= 0, "agreeing on the time limit")
    if stop:
        log.info("time limit: %.0f s left, an epoch takes about %.0f s; stopping", remaining, expected)
    return stop


def _record(state: LoopState, task: TrainingTask, record: EpochRecord, validation: Validation | None) -> None:
    state.history.append(record)
    score = (validation.accuracy, -validation.loss) if validation is not None else (float(record.epoch), 0.0)
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch = score, record.epoch
        state.best_state = {k: v.detach().clone() for k, v in task.module.state_dict().items()}


def _save(path: Path, task: TrainingTask, opt: Optimisation, state: LoopState) -> None:
    save_checkpoint(
        path,
        {
            "module": task.module.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
            "rng": rng_states(),
            "state": state.to_payload(),
        },
    )


def _val_fields(validation: Validation | None) -> tuple[float | None, float | None, float | None]:
    if validation is None:
        return None, None, None
    return validation.loss, validation.accuracy, validation.balanced_accuracy


def _lr(opt: Optimisation) -> float:
    return max(group["lr"] for group in opt.optimizer.param_groups)


def _keep_back_for_the_end(settings: LoopSettings, pass_seconds: float) -> LoopSettings:
    """``settings`` with a deadline moved earlier by the time the work after the last epoch
    will take, judged by the validation pass just timed."""
    if settings.deadline is None or not settings.finishing_passes:
        return settings
    return replace(settings, deadline=settings.deadline - settings.finishing_passes * pass_seconds)


def _log_estimate(
    task: TrainingTask, settings: LoopSettings, validation: Validation | None, seconds: float
) -> None:
    """A first guess at the run's length from the validation pass just timed: a training image
    costs about ``TRAIN_COST`` forward passes (forward, backward, update), and every epoch
    validates again. The bar's ETA, measured on training batches, refines it."""
    if validation is None or not validation.n:
        return
    per_image = seconds / validation.n
    epoch = TRAIN_COST * per_image * task.num_batches() * task.batch_size + seconds
    epochs = settings.epochs
    if settings.deadline is not None:
        left = settings.deadline - time.perf_counter()
        epochs = min(epochs, max(int(left // epoch), 0))
        if not epochs:
            log.warning(
                "the time limit leaves %s for training and one epoch takes about %s: no epoch "
                "will run, and the probe the fine-tune starts from is what is saved; give it at "
                "least %s more",
                duration(max(left, 0.0)), duration(epoch), duration(epoch - max(left, 0.0)),
            )  # fmt: skip
            return
    log.info(
        "fine-tuning: %s of %s, about %s in all (a first estimate%s)",
        count(epochs, "epoch"),
        count(task.num_batches(), "batch"),
        duration(epochs * epoch),
        ", as many as the time limit leaves" if epochs < settings.epochs else "",
    )


_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "val_bal_acc", "lr", "sec", "img/s")


def _log_header(talk: bool) -> None:
    if talk:
        log.info("".join(f"{c:>12}" for c in _COLUMNS))


def _log_row(r: EpochRecord, talk: bool) -> None:
    if not talk:
        return
    values = (r.train_loss, r.val_loss, r.val_accuracy, r.val_balanced_accuracy)
    cells = [f"{r.epoch:>12d}", *(f"{v:>12.4f}" if v is not None else f"{'-':>12}" for v in values)]
    cells += [f"{r.lr:>12.2e}", f"{r.seconds:>12.1f}", f"{r.images_per_s:>12.0f}"]
    log.info("".join(cells))
