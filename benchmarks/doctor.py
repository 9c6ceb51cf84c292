"""``imgcls doctor`` measured: how well it finds planted label errors, beside cleanlab on the
same out-of-fold probabilities, and what it costs beside ``imgcls cv``.

    .venv/bin/python benchmarks/doctor.py     # clothing_small and cifar10_subset flips, timing

1. Label errors: 5% of a data set's training labels are moved to another class at random
   (seeded), in a manifest that points at the original files (nothing is copied). Doctor runs
   on it; its mislabel findings (ranked) are scored against the flipped set: recall among its
   top 2 x (number flipped) findings, and precision of everything it flags. cleanlab's
   ``find_label_issues`` (its default filter and its ``low_self_confidence`` filter, the rule
   doctor follows) runs on the same out-of-fold probabilities, scored the same way.
2. Cost: ``imgcls cv`` and ``imgcls doctor`` on hymenoptera, each run twice on a warm feature
   cache in one session; the second runs are reported.

Prints a markdown report and puts it on ``docs/benchmarks.md`` between the page's
``<!-- doctor:start -->`` and ``<!-- doctor:end -->`` markers. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _page import DATASETS, put_on_page, stamp


def flipped_manifest(data: Path, target: Path, share: float, seed: int) -> set[str]:
    """Write ``data`` as a manifest with ``share`` of its train labels moved to another class;
    the record ids (paths relative to ``data``) of the moved ones."""
    from imgcls.data.sources import open_source

    scan = open_source(data)
    rng = np.random.default_rng(seed)
    train = [i for i, r in enumerate(scan.records) if r.folder_split == "train"]
    moved = set(rng.choice(train, size=round(share * len(train)), replace=False).tolist())
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for i, record in enumerate(scan.records):
            label = record.label
            if i in moved:
                label = str(rng.choice([c for c in scan.classes if c != record.label]))
            writer.writerow([str(data / record.path), label, record.folder_split or ""])
    return {str(data / scan.records[i].path) for i in moved}


def scored(ranked: list[str], flagged: set[str], planted: set[str]) -> dict[str, float]:
    top = set(ranked[: 2 * len(planted)])
    return {
        "flagged": len(flagged),
        "recall_top_2n": len(top & planted) / len(planted),
        "precision": len(flagged & planted) / max(len(flagged), 1),
        "recall_flagged": len(flagged & planted) / len(planted),
    }


def label_errors(data: Path, share: float, seed: int) -> list[str]:
    from imgcls.workflows.doctor.run import doctor

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "flipped.csv"
        planted = flipped_manifest(data, manifest, share, seed)
        started = time.perf_counter()
        diagnosis = doctor(manifest)
        seconds = time.perf_counter() - started
    found = [f.ids[0] for f in diagnosis.findings if f.kind == "mislabel"]
    ours = scored(found, set(found), planted)
    rows = [("imgcls doctor (confident learning)", ours)]
    probs, ids = diagnosis.out_of_fold, diagnosis.out_of_fold_ids
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        find_label_issues = None
    if find_label_issues is not None and probs is not None:
        labels = diagnosis.out_of_fold_labels
        for rule in ("prune_by_noise_rate", "low_self_confidence"):
            ranked = find_label_issues(
                labels, probs, filter_by=rule, return_indices_ranked_by="self_confidence"
            )
            theirs = [ids[i] for i in ranked]
            rows.append((f"cleanlab find_label_issues, {rule}", scored(theirs, set(theirs), planted)))
    lines = [
        f"Label errors: {len(planted)} of {data.name}'s training labels ({share:.0%}) moved to another class "
        f"(seed {seed}); doctor took {seconds:.0f} s on {diagnosis.images} images "
        f"(out-of-fold accuracy {diagnosis.label_check['out_of_fold_accuracy']:.4f}).",
        "",
        "| method | flagged | recall in top 2n | precision of flagged | recall of flagged |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in rows:
        figures = f"{s['recall_top_2n']:.3f} | {s['precision']:.3f} | {s['recall_flagged']:.3f}"
        lines.append(f"| {name} | {s['flagged']} | {figures} |")
    return lines


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgcls", *args, "-q"], check=True, capture_output=True)
    return time.perf_counter() - started


def cost(data: Path) -> list[str]:
    times: dict[str, list[float]] = {"cv": [], "doctor": []}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(2):
            times["cv"].append(timed("cv", str(data)))
            out = Path(tmp) / f"doctor{attempt}"
            times["doctor"].append(timed("doctor", str(data), "-o", str(out)))
    cv, doc = times["cv"][-1], times["doctor"][-1]
    return [
        f"Cost on {data.name}, warm feature cache, whole commands: `imgcls cv` {cv:.1f} s, "
        f"`imgcls doctor` {doc:.1f} s ({doc / cv:.2f}x).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lines = [stamp("python benchmarks/doctor.py"), ""]
    for name in ("clothing_small", "cifar10_subset"):
        lines += [*label_errors(DATASETS / name, args.share, args.seed), ""]
    lines += cost(DATASETS / "hymenoptera")
    report = "\n".join(lines)
    print(report)
    put_on_page("doctor", report)


if __name__ == "__main__":
    main()
