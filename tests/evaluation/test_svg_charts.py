"""The report's SVG charts: well-formed documents that draw what the numbers say."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from imgcls.evaluation._svg_charts import confusion_svg, per_class_svg, reliability_svg
from imgcls.evaluation.metrics import classification_report

SVG = "{http://www.w3.org/2000/svg}"
CLASSES = ["cat", "dog & co", "<bird>"]


def _report() -> dict:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    logits = rng.normal(size=(60, 3)) + 2.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return classification_report(y, probs, CLASSES)


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and float(root.get("width")) > 100 and float(root.get("height")) > 100
    return root


def _texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter(f"{SVG}text")]


def test_confusion_matrix_has_a_cell_per_pair_with_counts_and_escaped_names() -> None:
    report = _report()
    root = _parse(confusion_svg(report["confusion_matrix"], CLASSES))
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("width") != "100%"]
    assert len(cells) == 9
    counts = [int(t) for t in _texts(root) if t.isdigit()]
    assert sorted(counts) == sorted(np.asarray(report["confusion_matrix"]).ravel().tolist())
    assert _texts(root).count("dog & co") == 2 and "<bird>" in _texts(root)  # both axes, escaped in the XML


def test_darker_cells_for_higher_rates() -> None:
    root = _parse(confusion_svg([[9, 1], [5, 5]], ["a", "b"]))
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("width") != "100%"]
    red = [int(f[4:-1].split(",")[0]) for f in fills]  # rgb(r,g,b): lower is darker blue
    assert red[0] < red[2] == red[3] < red[1]


def test_reliability_diagram_draws_one_bar_and_point_per_filled_bin() -> None:
    report = _report()
    root = _parse(reliability_svg(report))
    filled = [b for b in report["reliability"] if b["count"]]
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("fill-opacity")]
    assert len(bars) == len(filled) and len(list(root.iter(f"{SVG}circle"))) == len(filled)
    assert f"ECE {report['ece']:.4f}" in _texts(root)


def test_per_class_bars_have_heights_proportional_to_the_metric() -> None:
    report = _report()
    root = _parse(per_class_svg(report, CLASSES))
    coloured = [r for r in root.iter(f"{SVG}rect") if r.get("fill", "").startswith("#")]
    bars = [r for r in coloured if r.get("height") != "12"]  # not the legend's swatches
    assert len(bars) == 9
    heights = [float(b.get("height")) for b in bars]
    expected = [report["per_class"][c][m] * 320 for c in CLASSES for m in ("precision", "recall", "f1")]
    np.testing.assert_allclose(heights, expected, atol=0.06)
