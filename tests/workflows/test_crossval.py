"""Cross-validation, backbone comparison, calibration, TTA and the HTML report (tiny models)."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.records import ImageRecord
from imgcls.data.splits import assign_folds
from imgcls.errors import ConfigError
from imgcls.evaluation.stats import corrected_paired_t_test, summarize
from imgcls.workflows.crossval import compare, cross_validate
from tests.conftest import TINY_ARGS, TINY_BACKBONE, run_cli

TINY = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64)


def test_folds_are_stratified_balanced_and_seeded():
    records = [ImageRecord(f"{c}/{i}.png", c) for c, n in (("a", 23), ("b", 11)) for i in range(n)]
    folds = assign_folds(records, folds=5, seed=0)
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.values()) <= 1
    per_class = Counter((r.label, f) for r, f in zip(records, folds, strict=True))
    assert all(per_class[("a", f)] in (4, 5) for f in range(5))
    assert folds == assign_folds(records, folds=5, seed=0)
    assert folds != assign_folds(records, folds=5, seed=1)


def test_summary_and_corrected_t_test():
    summary = summarize([0.8, 0.9, 1.0])
    assert summary["mean"] == pytest.approx(0.9) and summary["std"] == pytest.approx(0.1)
    low, high = summary["ci95"]
    assert low == pytest.approx(0.9 - 4.302653 * 0.1 / np.sqrt(3), rel=1e-5) and high > 1.0
    a, b = [0.90, 0.92, 0.91, 0.93, 0.92], [0.85, 0.86, 0.88, 0.86, 0.87]
    test = corrected_paired_t_test(a, b, test_train_ratio=0.25)
    diff = np.subtract(a, b)
    t = diff.mean() / np.sqrt((1 / 5 + 0.25) * diff.var(ddof=1))
    assert test["t"] == pytest.approx(t) and test["p_value"] < 0.01


def test_cross_validate_holds_every_image_out_once(image_folder, tmp_path):
    result = cross_validate(image_folder, tmp_path / "cv", config=TINY, folds=3, repeats=2)
    assert len(result.per_fold) == 6 and result.n_images == 36
    assert all(row["n_val"] == 12 and row["n_train"] == 24 for row in result.per_fold)
    assert result.summary["accuracy"]["mean"] >= 0.8
    assert result.out_of_fold["n"] == 36
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["summary"]["accuracy"]["mean"] == pytest.approx(result.summary["accuracy"]["mean"])
    rows = list(csv.DictReader((tmp_path / "cv" / "cv_splits.csv").open()))
    assert len(rows) == 72
    first_repeat = Counter(r["path"] for r in rows if r["repeat"] == "0")
    assert set(first_repeat.values()) == {1}
    report = (tmp_path / "cv" / "report.html").read_text()
    assert (
        report.count("data:image/svg+xml;base64,") == 4 and len(report) > 5_000
    )  # confusion, reliability, confidence, per class


def test_cv_cli_prints_mean_std_and_interval(image_folder, tmp_path):
    out = run_cli("cv", str(image_folder), "--folds", "3", "--backbone", TINY_BACKBONE, "--no-pretrained",
                  "--input-size", "64", "--output", str(tmp_path / "cv")).stdout  # fmt: skip
    assert "+/-" in out and "95% confidence interval" in out
    assert out.count("\n") >= 6  # one line per fold plus the summary


def test_compare_uses_the_same_folds_and_reports_a_paired_test(image_folder, tmp_path):
    config = TrainConfig(pretrained=False, input_size=64)
    comparison = compare(
        image_folder, ["test_efficientnet", "test_resnet"], tmp_path / "cmp", config=config, folds=3
    )
    ranked = comparison.ranked()
    assert [r.n_images for r in ranked] == [36, 36]
    assert comparison.paired_test["a"] == ranked[0].backbone == ranked[0].name
    assert "p_value" in comparison.paired_test
    assert (tmp_path / "cmp" / "compare.json").is_file()
    assert (tmp_path / "cmp" / "test_resnet" / "cv.json").is_file()
    with pytest.raises(ConfigError, match="at least two"):
        compare(image_folder, ["test_resnet"], config=config)


def test_compare_heads_on_one_extraction_and_the_same_folds(image_folder, tmp_path):
    out = run_cli("compare", str(image_folder), "--heads", "linear,mlp,knn", "--folds", "3", *TINY_ARGS,
                  "--output", str(tmp_path / "heads")).stdout  # fmt: skip
    for head in ("linear", "mlp", "knn"):
        assert head in out
        cv = json.loads((tmp_path / "heads" / head / "cv.json").read_text())
        assert cv["head"] == head and len(cv["per_fold"]) == 3
    assert "corrected resampled t-test" in out
    folds = {(tmp_path / "heads" / h / "cv_splits.csv").read_text() for h in ("linear", "mlp", "knn")}
    assert len(folds) == 1  # the same folds for every head
    both = compare(image_folder, ["test_efficientnet", "test_resnet"], heads=["linear", "knn"],
                   config=TrainConfig(pretrained=False, input_size=64), folds=2)  # fmt: skip
    assert sorted(r.name for r in both.results) == [
        "test_efficientnet/knn", "test_efficientnet/linear", "test_resnet/knn", "test_resnet/linear"
    ]  # fmt: skip


def test_calibrate_lowers_validation_ece_and_keeps_accuracy(tmp_path):
    from tests.conftest import write_class_folders

    data = write_class_folders(tmp_path / "data", per_class=30)
    plain = imgcls.train(data, config=TINY)
    calibrated = imgcls.train(data, tmp_path / "run", config=TINY.with_overrides({"calibrate": True}))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["temperature"] > 0
    assert calibration["val_ece_after"] <= calibration["val_ece_before"] + 1e-9
    assert calibrated.metrics["val"]["accuracy"] == plain.metrics["val"]["accuracy"]
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["head"]["temperature"] > 0


def test_tta_evaluate_and_predict(image_folder, tmp_path):
    imgcls.train(image_folder, tmp_path / "run", config=TINY)
    clf = imgcls.load(tmp_path / "run")
    evaluation = clf.evaluate(image_folder, split="all", tta=True)
    assert evaluation.tta["views"] == ["center", "center_flip", "full", "full_flip"]
    assert 0 <= evaluation.tta["accuracy_with"] <= 1
    path = next(image_folder.rglob("*.png"))
    single = clf.predict(path, tta=True)
    batch = clf.predict_paths([str(path)], tta=True).predictions[0]
    assert single.label == batch.label
    # One image, one network, batches of one on both paths: the same kernels.
    assert single.probability == pytest.approx(batch.probability, abs=1e-5)
    assert single.probability != pytest.approx(clf.predict(path).probability, abs=1e-7)


def test_evaluate_report_cli_writes_html_and_json(image_folder, tmp_path):
    run = tmp_path / "run"
    imgcls.train(image_folder, run, config=TINY)
    run_cli("evaluate", str(run), str(image_folder), "--split", "all", "--report")
    html = (run / "report-all.html").read_text()
    assert 'id="confusion-matrix"' in html and 'id="reliability"' in html
    assert html.count("data:image/svg+xml;base64,") == 4
    assert json.loads((run / "evaluation-all.json").read_text())["n"] == 36


def test_cv_fine_tunes_each_fold_and_refuses_auto(image_folder, tmp_path, capsys):
    from imgcls.cli.main import main

    args = ["cv", str(image_folder), *TINY_ARGS, "--folds", "2", "--workers", "0"]
    out = tmp_path / "cv"
    assert main([*args, "--strategy", "finetune", "--epochs", "1", "-o", str(out)]) == 0
    result = json.loads((out / "cv.json").read_text())
    assert result["head"] == "finetuned" and len(result["per_fold"]) == 2
    assert sum(row["n_val"] for row in result["per_fold"]) == 36  # every image held out once
    assert result["out_of_fold"]["n"] == 36
    assert main([*args, "--strategy", "auto"]) == 2
    assert "the folds must all run the same strategy" in capsys.readouterr().err


def test_exact_mcnemar_agrees_with_the_binomial_test():
    from scipy.stats import binomtest

    from imgcls.evaluation.stats import mcnemar_test

    first = [True] * 50 + [True] * 9 + [False] * 2 + [False] * 5
    second = [True] * 50 + [False] * 9 + [True] * 2 + [False] * 5
    test = mcnemar_test(first, second)
    assert (test["only_first_correct"], test["only_second_correct"]) == (9, 2)
    assert test["p_value"] == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    assert mcnemar_test([True, False], [True, False])["p_value"] == 1.0  # no disagreement
    assert mcnemar_test([False] * 6, [True] * 6)["p_value"] == pytest.approx(2 * 0.5**6)


def test_compare_runs_scores_the_same_images_and_tests_the_best_two(image_folder, tmp_path):
    from imgcls.errors import DataError
    from imgcls.workflows.compare_runs import compare_runs

    runs = []
    for name, size in (("a", 64), ("b", 32)):  # same seed, so the same val split
        run = tmp_path / name
        imgcls.train(image_folder, run, config=TINY.with_overrides({"input_size": size}))
        runs.append(run)
    comparison = compare_runs(image_folder, runs, split="val")
    scores = comparison.scores
    accuracies = [s.evaluation.accuracy for s in scores]
    assert accuracies == sorted(accuracies, reverse=True)
    best, second = (s.evaluation.outcomes for s in scores)
    assert set(best) == set(second) and len(best) == scores[0].evaluation.report["n"]
    only_first = sum(best[p] and not second[p] for p in best)
    assert comparison.test["only_first_correct"] == only_first
    assert 0.0 <= comparison.test["p_value"] <= 1.0

    both = f"{runs[0]},{runs[1]}"
    result = run_cli("compare", str(image_folder), "--runs", both, "--split", "val")
    assert "exact McNemar" in result.stdout and str(runs[1]) in result.stdout
    refused = run_cli("compare", str(image_folder), "--runs", both, "--folds", "3", check=False)
    assert refused.returncode == 2 and "--folds do not apply" in refused.stderr

    other = tmp_path / "other-seed"
    imgcls.train(image_folder, other, config=TINY.with_overrides({"seed": 7}))
    with pytest.raises(DataError, match="same splits"):
        compare_runs(image_folder, [runs[0], other], split="val")
