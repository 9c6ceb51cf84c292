"""A self-contained ``report.html``: the pictures people would rather look at than read.

Every split's figures side by side, images per class and split, confusion-matrix heat map,
reliability diagram, confidence histogram, per-class bar chart (SVG, ``svg_charts``),
training curves, and galleries of confidently right and confidently wrong images, all
embedded as base64 so the file can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls._files import write_text_atomic
from imgcls.evaluation._svg_charts import confidence_svg, confusion_svg, per_class_svg, reliability_svg

GALLERY_SIZE = 24
THUMBNAIL_PX = 192


@dataclass(frozen=True)
class Example:
    """A classified image for a gallery: ``path`` to read it, ``shown`` to name it."""

    path: Path
    shown: str
    true_label: str
    predicted_label: str
    confidence: float


def confident_mistakes(
    paths: Sequence[Path],
    shown: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    limit: int = GALLERY_SIZE,
) -> list[Example]:
    """The wrong predictions with the highest confidence, most confident first."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    ranked = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    return [_example(i, paths, shown, y_true, probs, classes) for i in ranked]


def confident_examples(
    paths: Sequence[Path],
    shown: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    per_class: int = 2,
    limit: int = GALLERY_SIZE,
) -> list[Example]:
    """The right predictions with the highest confidence, ``per_class`` of each class in class
    order: what the model finds typical, to set beside its confident mistakes."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    chosen: list[int] = []
    for c in range(len(classes)):
        right = np.flatnonzero((predicted == c) & (y_true == c))
        chosen += right[np.argsort(-confidence[right], kind="stable")][:per_class].tolist()
    return [_example(i, paths, shown, y_true, probs, classes) for i in chosen[:limit]]


def _example(
    i: int,
    paths: Sequence[Path],
    shown: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
) -> Example:
    top = int(probs[i].argmax())
    return Example(paths[i], shown[i], classes[int(y_true[i])], classes[top], float(probs[i, top]))


def write_report(
    path: Path,
    *,
    title: str,
    facts: Sequence[tuple[str, str]],
    report: dict[str, Any],
    classes: Sequence[str],
    mistakes: Sequence[Example],
    tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]] = (),
    splits: Mapping[str, dict[str, Any]] | None = None,
    class_counts: Mapping[str, Sequence[int]] | None = None,
    curves_png: bytes | None = None,
    examples: Sequence[Example] = (),
) -> Path:
    """Write the HTML report for one classification report (the figures), with every split's
    summary beside it (``splits``), the images of each class per split (``class_counts``:
    split -> count per class), extra tables, training curves and right examples."""
    figures = [
        ("Confusion matrix", confusion_svg(report["confusion_matrix"], classes), "confusion-matrix"),
        ("Reliability diagram", reliability_svg(report), "reliability"),
        ("Confidence of the top class", confidence_svg(report), "confidence"),
        ("Per-class precision, recall and F1", per_class_svg(report, classes), "per-class"),
    ]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _facts_html(facts, report),
        _METRIC_NOTES,
        *([_splits_html(splits)] if splits else []),
        *([_class_counts_html(class_counts, classes)] if class_counts else []),
        *(_table_html(caption, header, rows) for caption, header, rows in tables),
    ]
    if curves_png is not None:
        parts.append(
            '<h2>Training curves</h2><img id="curves" alt="training curves" '
            f'src="data:image/png;base64,{base64.b64encode(curves_png).decode("ascii")}">'
        )
    parts += [
        f'<h2>{name}</h2><img id="{key}" alt="{name}" src="data:image/svg+xml;base64,{_base64(svg)}">'
        for name, svg, key in figures
    ]
    if examples:
        parts.append(_cards_html("Confidently right, per class", "examples", "example", examples))
    parts.append(
        _cards_html("Most confidently wrong images", "gallery", "mistake", mistakes)
        if mistakes
        else '<h2>Most confidently wrong images</h2><p id="gallery">No mistakes.</p>'
    )
    write_text_atomic(path, _PAGE.format(title=html.escape(title), body="\n".join(parts)))
    return path


_SPLIT_COLUMNS = (
    ("images", "n", "{:d}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("balanced accuracy", "balanced_accuracy", "{:.4f}"),
    ("macro F1", "macro_f1", "{:.4f}"),
    ("log loss", "log_loss", "{:.4f}"),
    ("Brier", "brier", "{:.4f}"),
    ("ECE", "ece", "{:.4f}"),
)


def _splits_html(splits: Mapping[str, dict[str, Any]]) -> str:
    """Each split's headline figures in one table."""
    rows = [
        [name, *(fmt.format(report[key]) if key in report else "-" for _, key, fmt in _SPLIT_COLUMNS)]
        for name, report in splits.items()
    ]
    return _table_html("Every split", ("split", *(c for c, _, _ in _SPLIT_COLUMNS)), rows, key="splits")


def _class_counts_html(counts: Mapping[str, Sequence[int]], classes: Sequence[str]) -> str:
    rows = [[name, *(str(per_class[i]) for per_class in counts.values())] for i, name in enumerate(classes)]
    return _table_html("Images per class and split", ("class", *counts), rows, key="class-counts")


@dataclass(frozen=True)
class Card:
    """One thumbnail of a gallery page: the image (``None``: not a file, a grey square) and
    its caption lines."""

    path: Path | None
    lines: tuple[str, ...]


def write_gallery_page(
    path: Path,
    *,
    title: str,
    sections: Sequence[tuple[str, Sequence[Card]]],
    facts: Sequence[tuple[str, str]] = (),
) -> Path:
    """A self-contained page of thumbnail rows, one per titled section (e.g. a query and its
    nearest neighbours), after an optional table of ``facts``."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if facts:
        parts.append(_table_html("Summary", (), facts, key="summary"))
    for heading, cards in sections:
        figures = []
        for card in cards:
            alt = card.lines[0] if card.lines else ""
            figures.append(_figure(card.path, alt, "<br>".join(html.escape(line) for line in card.lines)))
        parts.append(f'<h2>{html.escape(heading)}</h2><div class="gallery">{"".join(figures)}</div>')
    write_text_atomic(path, _PAGE.format(title=html.escape(title), body="\n".join(parts)))
    return path


def _facts_html(facts: Sequence[tuple[str, str]], report: dict[str, Any]) -> str:
    rows = [
        *facts,
        ("images", str(report["n"])),
        ("accuracy", f"{report['accuracy']:.4f}"),
        ("balanced accuracy", f"{report['balanced_accuracy']:.4f}"),
        ("macro F1", f"{report['macro_f1']:.4f}"),
        ("log loss", f"{report['log_loss']:.4f}"),
        ("Brier score", f"{report['brier']:.4f}"),
        ("expected calibration error", f"{report['ece']:.4f}"),
    ]
    rows += [(f"top-{k} accuracy", f"{v:.4f}") for k, v in report["top_k_accuracy"].items()]
    return _table_html("Summary", (), rows)


def _table_html(
    caption: str, header: Sequence[str], rows: Sequence[Sequence[str]], *, key: str | None = None
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    table_id = f' id="{key}"' if key else ""
    return f"<h2>{html.escape(caption)}</h2><table{table_id}>{thead}<tbody>{body}</tbody></table>"


def _cards_html(heading: str, key: str, image_class: str, examples: Sequence[Example]) -> str:
    cards = []
    for m in examples:
        true, predicted, shown = (
            html.escape(m.true_label),
            html.escape(m.predicted_label),
            html.escape(m.shown),
        )
        verdict = (
            f"<b>{true}</b>" if true == predicted else f"true <b>{true}</b>, predicted <b>{predicted}</b>"
        )
        caption = f"{verdict} ({m.confidence:.2f})<br><small>{shown}</small>"
        cards.append(_figure(m.path, m.shown, caption, image_class=image_class))
    return f'<h2>{html.escape(heading)}</h2><div id="{key}" class="gallery">{"".join(cards)}</div>'


def _figure(path: Path | None, alt: str, caption_html: str, *, image_class: str = "") -> str:
    """A thumbnail of ``path`` (a grey square when it is not a readable file) with its caption."""
    css = f' class="{image_class}"' if image_class else ""
    image = f'<img{css} alt="{html.escape(alt)}" src="data:image/jpeg;base64,{_thumbnail(path)}">'
    return f"<figure>{image}<figcaption>{caption_html}</figcaption></figure>"


_METRIC_NOTES = """<ul class="notes">
<li><b>Balanced accuracy</b>: the mean of each class's recall, so a large class cannot hide a
small one.</li>
<li><b>Log loss</b>: the mean of -log(probability given to the true class); lower is better,
and confident mistakes cost the most.</li>
<li><b>Brier score</b>: the mean squared distance between the predicted probabilities and the
true class (0 is perfect, 2 the worst).</li>
<li><b>ECE</b> (expected calibration error): how far confidence is from accuracy, averaged
over confidence bins; 0.05 means a prediction made with 90% confidence is right about 85% or
95% of the time.</li>
</ul>"""


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _thumbnail(path: Path | None) -> str:
    from imgcls.data.images import UnreadableImageError, load_rgb

    try:
        if path is None:
            raise UnreadableImageError("<none>", "no file")
        image = load_rgb(path, min_side=THUMBNAIL_PX)
    except UnreadableImageError:
        from PIL import Image

        image = Image.new("RGB", (THUMBNAIL_PX, THUMBNAIL_PX), (200, 200, 200))
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    if max(image.size) < THUMBNAIL_PX // 2:  # tiny images (digits, CIFAR): enlarge, keep pixels sharp
        scale = THUMBNAIL_PX // 2 // max(image.size) + 1
        image = image.resize((image.width * scale, image.height * scale), resample=0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1rem; }}
td, th {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }}
td {{ overflow-wrap: anywhere; }}
th {{ white-space: nowrap; }}
img {{ max-width: 100%; }}
.notes {{ max-width: 60rem; font-size: 0.9rem; color: #444; }}
#gallery, .gallery {{ display: flex; flex-wrap: wrap; gap: 0.8rem; }}
figure {{ margin: 0; width: 200px; font-size: 0.85rem; }}
figure img {{ display: block; max-height: 192px; }}
figcaption {{ overflow-wrap: anywhere; }}
</style></head>
<body>
{body}
</body></html>
"""


def training_curves_png(history: Sequence[dict[str, Any]]) -> bytes:
    """Loss (train and val) and val accuracy by epoch, as PNG bytes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = (
        ("loss", (("train_loss", "train loss"), ("val_loss", "val loss"))),
        (
            "validation accuracy (epoch 0: the probe head)",
            (("val_accuracy", "val accuracy"), ("val_balanced_accuracy", "val balanced accuracy")),
        ),
    )
    for ax, (title, series) in zip(axes, panels, strict=True):
        for key, label in series:
            points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    return base64.b64decode(_figure_png(fig))
