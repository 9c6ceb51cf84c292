"""How far a long job is: a bar with rate and ETA on a terminal, log lines elsewhere.

Library code reports progress through ``Progress``: where someone watches (standard error is
a terminal, or the code runs in a Jupyter kernel) as a tqdm bar on standard error, as the
command line does; elsewhere (a job's log, a captured stream) as a log line at most every few
seconds, with the percentage, rate and ETA, never a bar's redraws. ``show_bars`` (in Python,
``imgcls.show_progress``) turns bars on or off for the process whatever the stream.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)

_BARS: bool | None = None  # None: bars where someone watches (``watched``)


def show_bars(enabled: bool | None) -> None:
    """Draw bars on standard error (``True``), log lines instead (``False``), or decide by
    whether someone watches (``None``, the default)."""
    global _BARS
    _BARS = enabled


@contextlib.contextmanager
def verbosity(verbose: bool | None) -> Iterator[None]:
    """For one library call (``verbose=`` of ``imgcls.train`` and the other long calls):
    ``True`` draws bars and writes imgcls's notes (what the CLI says) to standard error,
    through the logging set up if there is any, else through a handler that lives for the call;
    ``False`` draws nothing and lets only warnings and errors through; ``None`` changes nothing
    (bars where someone watches, notes where logging is set up for them)."""
    if verbose is None:
        yield
        return
    global _BARS
    logger = logging.getLogger("imgcls")
    held = (_BARS, logger.level)
    handler = None
    if verbose and not logger.handlers and not logging.getLogger().handlers:
        handler = BarSafeHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    _BARS = verbose
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        _BARS = held[0]
        logger.setLevel(held[1])
        if handler is not None:
            logger.removeHandler(handler)


def takes_verbose(func: F) -> F:
    """Run ``func`` under ``verbosity`` of its ``verbose=`` keyword, which ``func`` declares
    and documents (so the API reference shows it) and leaves to this wrapper."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        with verbosity(kwargs.get("verbose")):
            return func(*args, **kwargs)

    return call  # type: ignore[return-value]


def watched() -> bool:
    """Whether a person sees standard error as it is written: a terminal or a notebook."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def bars_shown() -> bool:
    return watched() if _BARS is None else _BARS


class Progress:
    """Called as ``progress(done, total)`` while ``what`` runs; ``unit`` names what is counted.

    Rate and ETA count from the first report, so a job resumed part-way (``done`` starting
    above zero) is not credited with the work done before it started.
    """

    def __init__(self, what: str, *, unit: str = "images", every_s: float = 5.0) -> None:
        self.what, self.unit, self.every_s = what, unit, every_s
        self.started = self.last = time.perf_counter()
        self.first: int | None = None  # ``done`` when reporting began
        self.bar: Any = None

    def start(self, done: int, total: int) -> None:
        """Begin timing at ``done`` of ``total`` (reports before any unit finished)."""
        self.first = done
        self.started = self.last = time.perf_counter()
        if bars_shown():
            self._draw(done, total)

    def __call__(self, done: int, total: int) -> None:
        if self.first is None:
            self.first = 0
        if bars_shown():
            self._draw(done, total)
            return
        now = time.perf_counter()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = (done - self.first) / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        log.info(
            "%s: %d/%d %s (%.0f%%, %.0f %s/s, ETA %s)",
            self.what,
            done,
            total,
            self.unit,
            100.0 * done / max(total, 1),
            rate,
            self.unit,
            duration(eta),
        )

    def _draw(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=done,
                desc=self.what,
                unit=f" {self.unit}",
                file=sys.stderr,
                mininterval=0.5,
                dynamic_ncols=True,
            )
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Finish the bar (a job that stops early, such as an early-stopped fine-tune)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def quiet_below_warning(*loggers: str) -> Iterator[None]:
    """Within the block, ``loggers`` say only warnings and errors: for inner steps (a fold's head
    fit) whose info lines would repeat what the step around them reports once."""
    held = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in held:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in held:
            logger.setLevel(level)


class BarSafeHandler(logging.StreamHandler):
    """Log lines written above a drawn bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        if not bars_shown():
            super().emit(record)
            return
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise
            self.handleError(record)


def duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``; an hour or more in hours and minutes."""
    if seconds >= 3600:
        hours, rest = divmod(round(seconds), 3600)
        return f"{hours} h {rest // 60:02d} min"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
