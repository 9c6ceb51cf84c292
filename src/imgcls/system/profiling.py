"""Where the time of a command went: a process-wide table of named stages.

Stages are timed always (a pair of ``perf_counter`` calls each, negligible next to a batch);
``--profile`` prints the table at the end. Decoding and transforms may run in loader
processes (or the CLI's prefetch process): their time is measured there, summed here, and
marked as such, since it overlaps with the main process's work.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

# Stages timed in other processes, and where.
IN_WORKERS = {
    "decode": "loader processes",
    "transform": "loader processes",
    "decode + crop": "prefetch process",
}


class Profile:
    def __init__(self) -> None:
        self.reset()

    def reset(self, started: float | None = None) -> None:
        self.started = time.perf_counter() if started is None else started
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        self.seconds[name] += seconds
        self.counts[name] += count

    def table(self) -> str:
        wall = time.perf_counter() - self.started
        lines = [f"{'stage':<36}{'seconds':>10}{'% of wall':>11}{'calls':>9}"]
        for name, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            where = f" ({IN_WORKERS[name]})" if name in IN_WORKERS else ""
            lines.append(
                f"{name + where:<36}{seconds:>10.2f}{100 * seconds / wall:>10.1f}%{self.counts[name]:>9}"
            )
        accounted = sum(s for n, s in self.seconds.items() if n not in IN_WORKERS)
        lines.append(f"{'other (imports, start-up...)':<36}{max(wall - accounted, 0.0):>10.2f}")
        lines.append(f"{'wall (this process)':<36}{wall:>10.2f}")
        return "\n".join(lines)


PROFILE = Profile()
