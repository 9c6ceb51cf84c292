"""The report's charts as small SVG documents, written directly.

A confusion matrix, a reliability diagram and grouped per-class bars need rectangles, lines,
and text, not a plotting library: matplotlib took about a second of every ``train`` (import
and rendering) for the three pictures of report.html.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

FONT = 'font-family="system-ui, sans-serif" font-size="12"'
CHAR_PX = 7.0  # rough width of one 12 px character, for margins around labels
SERIES_COLOURS = ("#4c72b0", "#dd8452", "#55a868")
_BLUES = ((247, 251, 255), (8, 48, 107))  # light to dark, like matplotlib's "Blues"
_TICKS = np.linspace(0, 1, 6)


def _document(width: float, height: float, body: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT}>'
        f'<rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>'
    )


def _text(x: float, y: float, label: str, *, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{html.escape(label)}</text>'


def _rotated_labels(xs: Sequence[float], y: float, labels: Sequence[str]) -> list[str]:
    """Labels under an axis, turned 45 degrees so long class names do not overlap."""
    return [
        _text(x, y, label, anchor="end", extra=f'transform="rotate(-45 {x:.1f} {y:.1f})"')
        for x, label in zip(xs, labels, strict=True)
    ]


def _label_room(labels: Sequence[str]) -> float:
    return CHAR_PX * max((len(label) for label in labels), default=1) + 12


def _blue(rate: float) -> str:
    (r0, g0, b0), (r1, g1, b1) = _BLUES
    return f"rgb({r0 + (r1 - r0) * rate:.0f},{g0 + (g1 - g0) * rate:.0f},{b0 + (b1 - b0) * rate:.0f})"


def confusion_svg(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Rows: true class, columns: predicted; cells shaded by the row's rate, counts written."""
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    cell = 36.0 if n <= 15 else max(480.0 / n, 6.0)
    room = _label_room(classes)
    left, top = room + 20, 10.0
    body = []
    for (t, p), value in np.ndenumerate(counts):
        x, y = left + p * cell, top + t * cell
        size = f'width="{cell:.1f}" height="{cell:.1f}"'
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" {size} fill="{_blue(rates[t, p])}"/>')
        if n <= 30:
            colour = "white" if rates[t, p] > 0.5 else "black"
            body.append(_text(x + cell / 2, y + cell / 2 + 4, str(value), extra=f'fill="{colour}"'))
    body += [_text(left - 6, top + (i + 0.5) * cell + 4, c, anchor="end") for i, c in enumerate(classes)]
    bottom = top + n * cell
    body += _rotated_labels([left + (i + 0.5) * cell for i in range(n)], bottom + 14, classes)
    body.append(_text(left + n * cell / 2, bottom + room + 20, "predicted"))
    body.append(
        _text(14, top + n * cell / 2, "true", extra=f'transform="rotate(-90 14 {top + n * cell / 2:.1f})"')
    )
    return _document(left + n * cell + 10, bottom + room + 30, body)


class _Axes:
    """A unit square (0..1 on both axes) drawn at ``size`` pixels with ticks every 0.2."""

    def __init__(self, size: float, left: float = 50.0, top: float = 30.0) -> None:
        self.size, self.left, self.top = size, left, top

    def x(self, value: float) -> float:
        return self.left + value * self.size

    def y(self, value: float) -> float:
        return self.top + (1 - value) * self.size

    def frame(self, width: float | None = None) -> list[str]:
        """The plot's outline (``width`` pixels wide, default square) and the y axis's ticks."""
        box = f'width="{width or self.size}" height="{self.size}" fill="none" stroke="#333"'
        parts = [f'<rect x="{self.left}" y="{self.top}" {box}/>']
        parts += [_text(self.left - 6, self.y(t) + 4, f"{t:.1f}", anchor="end") for t in _TICKS]
        return parts

    def labels(self, x_label: str, y_label: str) -> list[str]:
        """The x axis's ticks and both axes' names."""
        s, left, top = self.size, self.left, self.top
        parts = [_text(self.x(t), top + s + 16, f"{t:.1f}") for t in _TICKS]
        parts.append(_text(left + s / 2, top + s + 34, x_label))
        mid = top + s / 2
        parts.append(_text(12, mid, y_label, extra=f'transform="rotate(-90 12 {mid:.1f})"'))
        return parts


def reliability_svg(report: dict[str, Any]) -> str:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, and ECE."""
    axes = _Axes(320.0)
    bins = [b for b in report["reliability"] if b["count"]]
    body = []
    for b in bins:
        x0, x1, height = axes.x(b["lower"]), axes.x(b["upper"]), b["accuracy"] * axes.size
        body.append(
            f'<rect x="{x0:.1f}" y="{axes.y(b["accuracy"]):.1f}" width="{x1 - x0:.1f}" height="{height:.1f}" '
            f'fill="{SERIES_COLOURS[0]}" fill-opacity="0.7" stroke="white"/>'
        )
    body.append(
        f'<line x1="{axes.x(0)}" y1="{axes.y(0)}" x2="{axes.x(1)}" y2="{axes.y(1)}" '
        'stroke="grey" stroke-dasharray="5,4"/>'
    )
    body += [
        f'<circle cx="{axes.x(b["confidence"]):.1f}" cy="{axes.y(b["accuracy"]):.1f}" r="3.5" fill="black"/>'
        for b in bins
    ]
    body += axes.frame() + axes.labels("confidence of the top class", "accuracy")
    body.append(_text(axes.x(0.5), 18, f"ECE {report['ece']:.4f}", extra='font-weight="bold"'))
    body += _legend(
        axes.x(0.03),
        axes.y(0.97),
        (("accuracy", SERIES_COLOURS[0]), ("mean confidence", "black"), ("perfect calibration", "grey")),
    )
    return _document(axes.left + axes.size + 20, axes.top + axes.size + 50, body)


def confidence_svg(report: dict[str, Any]) -> str:
    """How many predictions fall in each confidence bin, the right ones below the wrong ones."""
    axes = _Axes(320.0)
    n = max(report["n"], 1)
    body = []
    for b in report["reliability"]:
        if not b["count"]:
            continue
        x0, x1 = axes.x(b["lower"]), axes.x(b["upper"])
        right = b["count"] * b["accuracy"] / n
        wrong = b["count"] / n - right
        for colour, low, high in ((SERIES_COLOURS[0], 0.0, right), (SERIES_COLOURS[1], right, right + wrong)):
            if high > low:
                body.append(
                    f'<rect x="{x0:.1f}" y="{axes.y(high):.1f}" width="{x1 - x0:.1f}" '
                    f'height="{(high - low) * axes.size:.1f}" fill="{colour}" stroke="white"/>'
                )
    body += axes.frame() + axes.labels("confidence of the top class", "share of images")
    body += _legend(axes.x(0.03), axes.y(0.97), (("right", SERIES_COLOURS[0]), ("wrong", SERIES_COLOURS[1])))
    return _document(axes.left + axes.size + 20, axes.top + axes.size + 50, body)


def per_class_svg(report: dict[str, Any], classes: Sequence[str]) -> str:
    """Precision, recall and F1 of each class as grouped bars."""
    metrics = ("precision", "recall", "f1")
    group = 48.0
    axes = _Axes(320.0)
    width = group * max(len(classes), 1)
    plot_bottom = axes.y(0)
    body = []
    for i, name in enumerate(classes):
        for j, metric in enumerate(metrics):
            value = float(report["per_class"][name][metric])
            x = axes.left + i * group + 6 + j * (group - 12) / 3
            body.append(
                f'<rect x="{x:.1f}" y="{axes.y(value):.1f}" width="{(group - 12) / 3:.1f}" '
                f'height="{value * axes.size:.1f}" fill="{SERIES_COLOURS[j]}"/>'
            )
    body += axes.frame(width)
    body += _rotated_labels(
        [axes.left + (i + 0.5) * group for i in range(len(classes))], plot_bottom + 14, classes
    )
    body += _legend(axes.left + width + 12, axes.top + 10, tuple(zip(metrics, SERIES_COLOURS, strict=True)))
    return _document(axes.left + width + 110, plot_bottom + _label_room(classes) + 20, body)


def _legend(x: float, y: float, entries: Sequence[tuple[str, str]]) -> list[str]:
    parts = []
    for i, (label, colour) in enumerate(entries):
        row = y + i * 18
        parts.append(f'<rect x="{x:.1f}" y="{row - 9:.1f}" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(x + 18, row + 1, label, anchor="start"))
    return parts
