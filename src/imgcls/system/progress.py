"""How far a long job is: a bar with rate and ETA on a terminal, log lines elsewhere.

Library code reports progress through ``Progress`` and never prints: by default each report
is a log line (at most every few seconds, with the percentage, rate and ETA). The command
line turns bars on (``show_bars``) when its standard error is a terminal; a bar is tqdm's.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

_BARS = False


def show_bars(enabled: bool) -> None:
    """Draw bars on standard error instead of logging lines (the CLI, on a terminal)."""
    global _BARS
    _BARS = enabled


class Progress:
    """Called as ``progress(done, total)`` while ``what`` runs; ``unit`` names what is counted."""

    def __init__(self, what: str, *, unit: str = "images", every_s: float = 5.0) -> None:
        self.what, self.unit, self.every_s = what, unit, every_s
        self.started = self.last = time.perf_counter()
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if _BARS:
            self._draw(done, total)
            return
        now = time.perf_counter()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
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
            _duration(eta),
        )

    def _draw(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=self.what, unit=f" {self.unit}", file=sys.stderr, mininterval=0.5
            )
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
