"""What the benchmark scripts share: where the data sets and the benchmarks page are, the
line that says which command ran where and when, and putting a report on the page between
its ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
DOCS_PAGE = REPO / "docs" / "benchmarks.md"


def stamp(command: str) -> str:
    """``Command: `...`; date UTC; machine, cores, python``."""
    return (
        f"Command: `{command}`; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )


def put_on_page(name: str, report: str) -> None:
    """Replace what the page holds between ``name``'s markers with ``report``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    page = DOCS_PAGE.read_text()
    if start not in page or end not in page:
        raise SystemExit(f"{DOCS_PAGE} has no {start} ... {end} markers; results not put there")
    before, rest = page.split(start, 1)
    DOCS_PAGE.write_text(f"{before}{start}\n{report}\n{end}{rest.split(end, 1)[1]}")
