"""The commands that fit models: ``train``, ``cv``, ``compare`` and ``inspect-data``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from imgcls._files import REPORT_FILE
from imgcls.cli._options import (
    DATA_HELP,
    PROCESS_STARTED,
    add_finetune_options,
    add_fold_options,
    add_model_options,
    add_source_options,
    as_flags,
    config_fields,
    config_from_args,
    duration,
    positive_int,
    print_json,
    source_keywords,
)
from imgcls.config import TEST_FRACTION_DEFAULT_WORDS
from imgcls.system.wording import count


def add_train(p: argparse.ArgumentParser) -> None:
    add_model_options(p, data_optional=True)
    p.add_argument("-o", "--output", help="run directory to write (default: runs/<data>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted fine-tuning run from its checkpoint (its saved settings apply)",
    )
    add_finetune_options(p)
    p.add_argument(
        "--backbone",
        help="backbone name, 'arch.tag', or any timm architecture (default: efficientnet_lite0)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="validation share of train when there is no val/ folder (default: 0.2)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        help=f"test share carved from train when there is no test/ folder ({TEST_FRACTION_DEFAULT_WORDS})",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        default=None,
        help="fit temperature scaling on the validation split so probabilities mean what they say",
    )
    p.add_argument(
        "--dist-timeout",
        type=duration,
        metavar="DURATION",
        help="under torchrun: how long a process waits for the others before the run stops "
        "with an error (default: 30m)",
    )


def run_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.resume:
        from imgcls.workflows.train import resume

        output = Path(args.resume)
        clf = resume(output, data=args.data)
    elif args.data is None:
        from imgcls.errors import ConfigError

        raise ConfigError(
            "imgcls train needs DATA, the labelled images (or --resume RUN_DIR to continue a run)"
        )
    else:
        config = config_from_args(args)
        output = Path(args.output) if args.output else default_run_dir(args.data)
        from imgcls.workflows.decoding_ahead import decoding_ahead

        with decoding_ahead(args.data, backbone=config.backbone, input_size=config.input_size):
            from imgcls.workflows.train import train

            clf = train(
                args.data, output, config=config, overwrite=args.overwrite, clock_from=PROCESS_STARTED
            )
    if clf is None:  # a torchrun process other than rank 0: rank 0 reports and writes the run
        return 0
    if args.json:
        print_json({"run_dir": str(output), "metrics": clf.metrics, "unreadable": clf.config["unreadable"]})
        return 0
    print_train_summary(clf, output, time.perf_counter() - started)
    return 0


def default_run_dir(data: str) -> Path:
    return Path("runs") / f"{Path(data).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_train_summary(clf: Any, output: Path, seconds: float) -> None:
    weights = clf.config["backbone"]["weights"]
    source = (
        "RANDOM INIT (no pretrained weights)"
        if weights["source"] == "random-init"
        else f"{weights['source']} {weights['location'] or ''}"
    )
    metrics = clf.metrics
    counts = ", ".join(
        f"{split} {metrics[split]['n']}" for split in ("train", "val", "test") if split in metrics
    )
    print(f"backbone      {clf.backbone}  [{source.strip()}]")
    print(
        f"classes       {len(clf.classes)}: {', '.join(clf.classes[:10])}"
        f"{' ...' if len(clf.classes) > 10 else ''}"
    )
    print(f"images        {counts}; unreadable {len(clf.config['unreadable'])}")
    for path, reason in clf.config["unreadable"].items():
        print(f"  skipped     {path}: {reason}")
    for split in ("val", "test"):
        if split in metrics:
            m = metrics[split]
            label = f"{split} accuracy"
            print(f"{label:<14}{m['accuracy']:.4f}  (balanced {m['balanced_accuracy']:.4f}, n={m['n']})")
    calibration = clf.config["head"].get("temperature")
    if calibration is not None:
        print(f"calibration   temperature {calibration:.3f} (ECE before/after in metrics.json)")
    print(f"time          {seconds:.1f} s")
    print(f"run dir       {output}")
    if (output / REPORT_FILE).is_file():
        print(f"report        {output / REPORT_FILE}")


def add_cv(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("-o", "--output", help="directory for cv.json, cv_splits.csv and report.html")
    p.add_argument("--backbone", help="backbone name (default: efficientnet_lite0)")
    add_fold_options(p)
    add_finetune_options(p)  # with --strategy finetune: each fold is fine-tuned


def run_cv(args: argparse.Namespace) -> int:
    from imgcls.workflows.decoding_ahead import decoding_ahead

    config = config_from_args(args)
    with decoding_ahead(args.data, backbone=config.backbone, input_size=config.input_size):
        from imgcls.workflows.crossval import cross_validate

        result = cross_validate(
            args.data,
            args.output,
            config=config,
            folds=args.folds,
            repeats=args.repeats,
            overwrite=args.overwrite,
        )
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"{'repeat':>6} {'fold':>4} {'train':>6} {'val':>5} {'accuracy':>9} {'ECE':>7}")
    for row in result.per_fold:
        print(
            f"{row['repeat']:>6} {row['fold']:>4} {row['n_train']:>6} {row['n_val']:>5} "
            f"{row['accuracy']:>9.4f} {row['ece']:>7.4f}"
        )
    acc = result.summary["accuracy"]
    low, high = acc["ci95"]
    timing = result.timing
    n = len(result.per_fold)
    print(f"\n{result.backbone}: accuracy {acc['mean']:.4f} +/- {acc['std']:.4f} over {count(n, 'fold')}")
    print(f"95% confidence interval of the mean: {low:.4f} - {high:.4f}")
    print(f"time: {timing['total_s']:.1f} s (features {timing['extract_s']:.1f} s, ", end="")
    print(f"heads {timing['fit_s']:.1f} s)")
    return 0


def add_compare(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument(
        "--backbones",
        help="comma-separated backbone names, e.g. efficientnet_lite0,efficientnet_lite2: "
        "cross-validated side by side on the same folds",
    )
    p.add_argument(
        "--heads",
        help="comma-separated heads, e.g. linear,mlp,knn: each cross-validated on the same "
        "features and folds (with --backbones: every pair)",
    )
    p.add_argument(
        "--runs",
        metavar="RUN_DIRS",
        help="comma-separated trained run directories: scored on the same held-out images, "
        "with an exact McNemar test between the best two",
    )
    p.add_argument("--split", default="test", help="with --runs: the split to score (default: test)")
    p.add_argument("-o", "--output", help="directory for compare.json and one cv folder per backbone")
    add_fold_options(p)


def run_compare(args: argparse.Namespace) -> int:
    from imgcls.errors import ConfigError
    from imgcls.workflows.crossval import compare

    if args.runs:
        return compare_runs(args)
    if not args.backbones and not args.heads:
        raise ConfigError("compare needs --backbones, --heads or --runs")
    comparison = compare(
        args.data,
        _names(args.backbones),
        args.output,
        heads=_names(args.heads),
        config=config_from_args(args),
        folds=args.folds,
        repeats=args.repeats,
        overwrite=args.overwrite,
    )
    if args.json:
        print_json(comparison.to_dict())
        return 0
    width = max(22, *(len(r.name) + 2 for r in comparison.results))
    print(f"{'candidate':<{width}}{'accuracy':>18}{'95% CI':>18}{'time s':>9}{'params':>9}{'size MB':>9}")
    for r in comparison.ranked():
        acc = r.summary["accuracy"]
        ci = f"{acc['ci95'][0]:.4f}-{acc['ci95'][1]:.4f}"
        print(
            f"{r.name:<{width}}{acc['mean']:>10.4f} +/- {acc['std']:.4f}{ci:>18}"
            f"{r.timing['total_s']:>9.1f}{r.params / 1e6:>8.1f}M{r.params * 4 / 1e6:>9.1f}"
        )
    test = comparison.paired_test
    print(
        f"\n{test['a']} vs {test['b']}: mean accuracy difference {test['mean_difference']:+.4f}, "
        f"t = {test['t']:.3f}, p = {test['p_value']:.4f} ({test['method']})"
    )
    return 0


def _names(text: str | None) -> list[str] | None:
    """``a, b,,c`` -> ``["a", "b", "c"]``; ``None`` when not given."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def compare_runs(args: argparse.Namespace) -> int:
    from imgcls.config import FOLDS, REPEATS
    from imgcls.errors import ConfigError
    from imgcls.workflows.compare_runs import compare_runs

    given = [as_flags(f"`{n}`") for n in config_fields() if getattr(args, n, None) is not None]
    others = {
        "--folds": args.folds != FOLDS,
        "--repeats": args.repeats != REPEATS,
        "--output": args.output,
        "--backbones": args.backbones,
        "--heads": args.heads,
    }
    given += [flag for flag, used in {**others, "--config": args.config}.items() if used]
    if given:
        raise ConfigError(f"--runs compares trained models as they are; {', '.join(given)} do not apply")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    comparison = compare_runs(args.data, runs, split=args.split)
    if args.json:
        print_json(comparison.to_dict())
        return 0
    print(f"{'run':<32}{'backbone':<22}{'strategy':<10}{'accuracy':>10}{'balanced':>10}{'n':>7}{'MB':>7}")
    for score in comparison.scores:
        row = score.to_dict()
        print(
            f"{score.run!s:<32}{score.backbone:<22}{score.strategy:<10}{row['accuracy']:>10.4f}"
            f"{row['balanced_accuracy']:>10.4f}{row['n']:>7}{row['size_mb']:>7.1f}"
        )
    test = comparison.test
    print(
        f"\nexact McNemar test, {test['first']} vs {test['second']} on the {comparison.split} split: "
        f"{test['only_first_correct']} images only the first got right, {test['only_second_correct']} "
        f"only the second; p = {test['p_value']:.4g}"
    )
    return 0


def add_inspect_data(p: argparse.ArgumentParser) -> None:
    from imgcls.config import AUGMENT_PRESETS, GRID_ROWS, GRID_VIEWS, TrainConfig

    defaults = TrainConfig()

    p.add_argument("data", help=DATA_HELP)
    add_source_options(p, from_config=False)
    p.add_argument(
        "--augment",
        choices=AUGMENT_PRESETS,
        default=defaults.augment,
        help=f"preset to show (default: {defaults.augment})",
    )
    p.add_argument("--output", metavar="PNG", help="save a grid of augmented views here")
    p.add_argument(
        "--backbone",
        default=defaults.backbone,
        help=f"whose preprocessing to use (default: {defaults.backbone})",
    )
    p.add_argument("--input-size", type=positive_int, help="view size in pixels (default: the backbone's)")
    p.add_argument(
        "--rows", type=positive_int, default=GRID_ROWS, help=f"images in the grid (default: {GRID_ROWS})"
    )
    p.add_argument(
        "--views",
        type=positive_int,
        default=GRID_VIEWS,
        help=f"augmented views per image (default: {GRID_VIEWS})",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help=f"as for train (default: {defaults.val_fraction})",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        help=f"as for train ({TEST_FRACTION_DEFAULT_WORDS})",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"split seed (default: {defaults.seed})")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


def run_inspect_data(args: argparse.Namespace) -> int:
    from imgcls.data.sources import open_source
    from imgcls.workflows.inspect_data import augmentation_grid, summarise

    scan = open_source(args.data, **source_keywords(args))
    summary = summarise(
        scan, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed
    )
    grid = None
    if args.output:
        grid = augmentation_grid(
            scan,
            Path(args.output),
            backbone=args.backbone,
            augment=args.augment,
            input_size=args.input_size,
            rows=args.rows,
            views=args.views,
            seed=args.seed,
        )
    if args.json:
        print_json({**summary.to_dict(), "grid": str(grid) if grid else None})
        return 0
    print(summary.table())
    if grid is not None:
        print(f"\naugmentation grid ({args.augment}): {grid}  (first column: the eval view)")
    return 0
