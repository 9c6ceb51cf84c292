"""Exceptions that carry a message meant for the user.

The CLI prints these without a traceback; anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class ImgclsError(Exception):
    """Base class: the message says what was expected, what was found and what to do."""


class DataError(ImgclsError):
    """The data folder, a split manifest or a class layout is unusable."""


class BackboneError(ImgclsError):
    """An unknown backbone name or an architecture that cannot be built."""


class WeightsError(ImgclsError):
    """Pretrained weights are unavailable or do not fit the architecture."""


class ModelFormatError(ImgclsError):
    """A saved model directory is missing files or was written by an incompatible version."""


class ConfigError(ImgclsError):
    """A configuration value or config file is invalid."""


class DistributedError(ImgclsError):
    """A process of a distributed run failed to join, stopped, or stopped answering."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training run, with what was kept of it.

    Still a ``KeyboardInterrupt``, so code that stops on one stops on this too. ``resumable``:
    the run directory holds a checkpoint to continue from; ``removed``: it held nothing
    worth keeping and was deleted.
    """

    def __init__(self, run_dir: Path, *, resumable: bool, removed: bool, epoch: int | None = None) -> None:
        self.run_dir, self.resumable, self.removed, self.epoch = run_dir, resumable, removed, epoch
        super().__init__(self.kept())

    def kept(self) -> str:
        """What is left of the run, in one sentence."""
        if self.resumable:
            after = f"epoch {self.epoch}" if self.epoch else "the last finished epoch"
            return f"the checkpoint after {after} is kept in {self.run_dir}"
        if self.removed:
            return f"nothing worth keeping was written; {self.run_dir} was removed"
        return f"the run in {self.run_dir} did not finish and holds no checkpoint"

    def __str__(self) -> str:
        if self.resumable:
            return f"{self.kept()}; continue it with imgcls.resume({str(self.run_dir)!r})"
        return self.kept()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name): long library messages,
    such as torch's unpickling ones, become one readable line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
