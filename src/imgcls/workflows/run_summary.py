"""What a finished run tells a person: ``report.html`` and the model card ``README.md``.

The report holds the figures (every split side by side, the chosen split's charts and
galleries, a fine-tune's curves); the card is the page to read first, or to hand on with the
model: the data, classes, metrics with their splits, where the weights came from, and how
to load, serve and export the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgcls._files import (
    CONFIG_FILE,
    CURVES_FILE,
    KNN_BANK_FILE,
    KNN_LABELS_FILE,
    MODEL_CARD_FILE,
    ONNX_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    write_text_atomic,
)
from imgcls.config import installed_version
from imgcls.data.records import TEST, TRAIN, VAL
from imgcls.evaluation.report import write_report
from imgcls.inference.classifier import Classifier
from imgcls.training.probe import FeaturedDataset, ProbeFit, split_galleries

SPLITS = (TRAIN, VAL, TEST)


def write_train_report(
    run_dir: Path, featured: FeaturedDataset, fit: ProbeFit, clf: Classifier, *, with_curves: bool
) -> None:
    """``report.html``: the test split's figures, validation's where there is no test (every
    split's headline figures side by side above them). Test is the honest figure: validation
    chose the head's regularisation or a fine-tune's best epoch."""
    split = TEST if TEST in fit.probs else VAL if VAL in fit.probs else None
    if split is None:
        return
    examples, mistakes = split_galleries(featured, fit, split)
    write_report(
        run_dir / REPORT_FILE,
        title=f"imgcls: {featured.spec.name} on {featured.scan.name}",
        facts=[("figures below", _figures_split_words(split, fit)), ("run directory", str(run_dir))],
        report=fit.metrics[split],
        classes=featured.classes,
        mistakes=mistakes,
        examples=examples,
        splits={s: fit.metrics[s] for s in SPLITS if s in fit.metrics},
        class_counts={
            s: np.bincount(featured.labels[fit.rows[s]], minlength=len(featured.classes)).tolist()
            for s in SPLITS
            if s in fit.rows and fit.rows[s].any()
        },
        tables=[("Settings and timing", (), run_facts(clf, fit.metrics))],
        curves_png=(run_dir / CURVES_FILE).read_bytes() if with_curves else None,
    )


def _figures_split_words(split: str, fit: ProbeFit) -> str:
    others = [s for s in (VAL, TEST) if s != split and s in fit.metrics]
    beside = f" ({' and '.join(others)} beside it in 'Every split')" if others else ""
    return f"the {split} split{beside}"


def run_facts(clf: Classifier, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """What a run was: its backbone and weights, strategy, head and seed, and its timing."""
    cfg = clf.config
    head = cfg["head"]
    chosen = ", ".join(f"{k} {head[k]}" for k in ("C", "k", "hidden", "dropout", "best_epoch") if k in head)
    facts = [
        ("backbone", f"{clf.backbone} ({weights_origin(cfg)})"),
        ("strategy", cfg["strategy"]),
        ("head", f"{head['type']} ({chosen})" if chosen else head["type"]),
        ("precision", str(cfg["precision"])),
        ("seed", str(cfg["seed"])),
    ]
    plan = cfg.get("finetune")
    if plan:
        settings = ", ".join(f"{k} {plan[k]}" for k in ("epochs", "lr", "augment") if k in plan)
        facts.append(("fine-tune", settings))
    timing = metrics.get("timing", {})
    if timing:
        facts.append(
            ("time", f"{timing['total_s']:.0f} s in all, {timing['extract_s']:.0f} s extracting features")
        )
    return facts


def model_files(clf: Classifier) -> str:
    """What the model directory's files hold and how large they are, as markdown bullets."""
    directory = clf.directory
    assert directory is not None
    held = {
        WEIGHTS_FILE: "the network's weights, the head's included: a size set by the backbone and "
        "the number of classes, whatever the number of training images",
        CONFIG_FILE: "classes, preprocessing, the head's settings, metrics, versions",
        ONNX_FILE: "the same network and head for ONNX Runtime, checked against the weights: "
        "prediction without torch (`imgcls[onnx]`), and the fast start of a few predictions",
        KNN_BANK_FILE: "the kNN head's bank: every training image's normalised features (4 bytes a "
        "feature), which predictions are compared with, memory-mapped when the model is opened",
        KNN_LABELS_FILE: "the bank's classes, 8 bytes an image",
    }
    lines = []
    for name, what in held.items():
        path = directory / name
        if path.is_file():
            lines.append(f"- `model/{name}` ({path.stat().st_size / 1e6:.1f} MB): {what}")
    return "\n".join(lines)


def weights_origin(config: dict[str, Any]) -> str:
    """Where the backbone's starting weights came from, in words."""
    weights = config["backbone"]["weights"]
    if weights["source"] == "random-init":
        return "random init, no pretrained weights"
    return f"{weights['source']} {weights.get('location') or ''}".strip()


def write_model_card(
    run_dir: Path, clf: Classifier, featured: FeaturedDataset, metrics: dict[str, Any]
) -> None:
    """``RUN_DIR/README.md``: the model card."""
    write_text_atomic(run_dir / MODEL_CARD_FILE, model_card(run_dir, clf, featured, metrics))


def model_card(run_dir: Path, clf: Classifier, featured: FeaturedDataset, metrics: dict[str, Any]) -> str:
    rows = [
        f"| {split} | {m['n']} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} |"
        for split in (VAL, TEST)
        if (m := metrics.get(split))
    ]
    held_out = (
        "\n".join(["| split | images | accuracy | balanced accuracy |", "| --- | --- | --- | --- |", *rows])
        if rows
        else "No validation or test split was held out, so there is no honest accuracy to report."
    )
    counts = ", ".join(f"{split} {metrics[split]['n']}" for split in SPLITS if split in metrics)
    classes = ", ".join(f"`{c}`" for c in clf.classes)
    facts = "\n".join(f"- {name}: {value}" for name, value in run_facts(clf, metrics))
    where = str(run_dir)
    return f"""# {clf.backbone} classifier for {featured.scan.name}

Trained by imgcls {installed_version()} on `{featured.scan.location}` ({featured.scan.format}).

## Data

- images: {counts}; unreadable and skipped: {len(featured.unreadable)} (listed in `skipped.csv`)
- {len(clf.classes)} classes: {classes}
- the split of every image: `splits.csv`

## Accuracy on held-out images

{held_out}

Validation chose the model's settings (the head's regularisation, a fine-tune's best epoch),
so its figures lean optimistic; test, where there is one, was not used for any choice.
`report.html` has the charts, the confusion matrix and the most confidently wrong images.

## Model

{facts}

## Files

{model_files(clf)}

## Use it

```bash
imgcls predict {where} photo.jpg          # or a folder, a CSV of paths
imgcls evaluate {where} LABELLED_DATA     # accuracy on other labelled images
imgcls serve {where}                      # HTTP API and a web page
imgcls export {where} --format onnx       # ONNX, with a parity check
```

```python
import imgcls

clf = imgcls.load("{where}")
print(clf.predict("photo.jpg"))
```
"""
