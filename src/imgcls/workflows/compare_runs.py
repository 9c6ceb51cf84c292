"""Comparing trained runs on the same held-out images: accuracy and an exact McNemar test.

``imgcls compare DATA --runs RUN_A,RUN_B,...`` scores every run's model on one split of DATA
(each run's own split manifest decides which images that split holds), refuses runs whose
splits hold different images, ranks the runs and tests the best two against each other on
the images they both scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls._files import WEIGHTS_FILE
from imgcls.errors import DataError
from imgcls.evaluation.stats import mcnemar_test
from imgcls.inference.classifier import Classifier
from imgcls.inference.evaluate import Evaluation


@dataclass
class RunScore:
    run: Path
    backbone: str
    strategy: str
    evaluation: Evaluation
    size_mb: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "backbone": self.backbone,
            "strategy": self.strategy,
            "accuracy": self.evaluation.accuracy,
            "balanced_accuracy": self.evaluation.report["balanced_accuracy"],
            "n": self.evaluation.report["n"],
            "size_mb": self.size_mb,
        }


@dataclass
class RunComparison:
    split: str
    scores: list[RunScore]  # best first
    test: dict[str, Any] = field(default_factory=dict)  # McNemar, best vs runner-up

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "runs": [s.to_dict() for s in self.scores], "mcnemar": self.test}


def compare_runs(data: str | Path, runs: list[str | Path], *, split: str = "test") -> RunComparison:
    """Score each run on ``split`` of ``data``; rank them; McNemar between the best two."""
    if len(runs) < 2:
        raise DataError(f"comparing `runs` needs at least two run directories, got {len(runs)}")
    scores = [_score(Path(run), data, split) for run in runs]
    _check_same_images(scores)
    scores.sort(key=lambda s: -s.evaluation.accuracy)
    best, second = scores[0].evaluation.outcomes, scores[1].evaluation.outcomes
    shared = sorted(best)
    test = mcnemar_test([best[p] for p in shared], [second[p] for p in shared])
    return RunComparison(split, scores, {"first": str(scores[0].run), "second": str(scores[1].run), **test})


def _score(run: Path, data: str | Path, split: str) -> RunScore:
    clf = Classifier.load(run)
    evaluation = clf.evaluate(data, split=split)
    weights = clf.directory / WEIGHTS_FILE if clf.directory is not None else None
    size = weights.stat().st_size / 1e6 if weights is not None and weights.is_file() else float("nan")
    strategy = str(clf.config.get("strategy", "probe"))
    return RunScore(run, clf.backbone, strategy, evaluation, size)


def _check_same_images(scores: list[RunScore]) -> None:
    reference = scores[0]
    expected = set(reference.evaluation.outcomes)
    for other in scores[1:]:
        found = set(other.evaluation.outcomes)
        if found != expected:
            raise DataError(
                f"{other.run} scored {len(found)} images of the {other.evaluation.split} split, "
                f"{reference.run} scored {len(expected)} ({len(found ^ expected)} differ): a paired "
                "comparison needs runs trained with the same splits (same data, seed and fractions)"
            )
