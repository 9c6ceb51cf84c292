"""The ``imgcls`` command: a thin client of the library.

Nothing heavy is imported at module level, so ``imgcls --help`` starts instantly; each
command imports what it needs. Library errors (``ImgclsError``) are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# glibc's malloc returns freed activation buffers to the OS and page-faults them back in on
# every forward pass; a large top pad and mmap threshold keep them, which measured 2x faster
# CPU inference on 2 cores. The setting has to be in the environment when the process starts.
ALLOCATOR_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=536870912"
_EXTRA_FOR_MODULE = {
    "torch": "train", "torchvision": "train", "timm": "train", "safetensors": "train", "sklearn": "train",
    "scipy": "train", "matplotlib": "train", "onnx": "train", "onnxruntime": "onnx",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve",
}  # fmt: skip
_HEAVY_COMMANDS = frozenset({"train", "evaluate", "predict", "demo", "cv", "compare", "export", "serve"})


def entry() -> None:
    """Console-script entry point: tune the allocator (re-executing once), then run ``main``."""
    argv = sys.argv[1:]
    if _should_tune_allocator(argv):
        env = dict(os.environ, GLIBC_TUNABLES=ALLOCATOR_TUNABLES)
        os.execve(sys.executable, [sys.executable, "-m", "imgcls", *argv], env)
    _exit_now(main(argv))


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: finalising torch, timm, scikit-learn and
    matplotlib modules takes 1.2-1.7 s here, and every file is written and closed by now."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe: nothing to save
            stream.flush()
    os._exit(code)


def _should_tune_allocator(argv: Sequence[str]) -> bool:
    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ or os.environ.get("IMGCLS_NO_REEXEC"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(_HEAVY_COMMANDS.intersection(argv))


_STARTED = time.perf_counter()  # process start, near enough: the CLI is the first import


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    from imgcls.errors import ImgclsError

    if getattr(args, "profile", False):
        from imgcls.profiling import PROFILE

        PROFILE.reset(started=_STARTED)
    try:
        code = int(args.handler(args) or 0)
        if getattr(args, "profile", False):
            print(f"\nwhere the time went:\n{PROFILE.table()}", file=sys.stderr)
        return code
    except ImgclsError as exc:
        print(f"imgcls: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("imgcls: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as exc:
        extra = _EXTRA_FOR_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"imgcls: error: '{args.command}' needs {exc.name}: pip install 'imgcls[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgcls",
        description="Train, evaluate and use image classifiers built on pretrained backbones.",
    )
    parser.add_argument("--version", action="version", version=f"imgcls {_version()}")
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    logging_options.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (adder, handler, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[logging_options])
        adder(sub)
        sub.set_defaults(handler=handler)
    return parser


# -- train ------------------------------------------------------------------------------------


def _add_model_options(p: argparse.ArgumentParser, *, data_optional: bool = False) -> None:
    """Options shared by train, cv and compare (everything that shapes features and the head)."""
    p.add_argument(
        "data",
        nargs="?" if data_optional else None,
        help="image folder: one sub-folder per class, optionally under train/ val/ test/"
        + (" (with --resume: the run's own)" if data_optional else ""),
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="local state dict (torchvision or timm layout, .pth or .safetensors)",
    )
    p.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        default=None,
        help="train from random init",
    )
    p.add_argument(
        "--strategy",
        choices=_strategies(),
        help="how to train (default: probe = linear head on frozen features)",
    )
    p.add_argument("--seed", type=int, help="seed for splits, folds and training (default: 0)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: 32)")
    p.add_argument("--workers", type=int, help="image-decoding processes (default: automatic)")
    p.add_argument("--input-size", type=int, help="network input size in pixels (default: the backbone's)")
    p.add_argument(
        "--cache-dir", help="feature cache location (default: $IMGCLS_CACHE_DIR or ~/.cache/imgcls)"
    )
    p.add_argument(
        "--no-cache",
        dest="use_cache",
        action="store_false",
        default=None,
        help="do not read or write the feature cache",
    )
    p.add_argument(
        "--no-report", dest="report", action="store_false", default=None, help="do not write report.html"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="JSON or TOML settings (e.g. a saved run_config.json); flags override it",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow writing into an existing non-empty output directory",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--precision",
        choices=_precisions(),
        help="forward-pass precision for features and training (default: auto = bf16 where native)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="print where the time went: decode, transform, forward, backward, head fit, I/O",
    )


def _add_train(p: argparse.ArgumentParser) -> None:
    _add_model_options(p, data_optional=True)
    p.add_argument("-o", "--output", help="run directory to write (default: runs/<data>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted fine-tuning run from its checkpoint (its saved settings apply)",
    )
    _add_finetune_options(p)
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
        help="test share carved from train when there is no test/ folder (default: 0)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        default=None,
        help="fit temperature scaling on the validation split so probabilities mean what they say",
    )


def _add_finetune_options(p: argparse.ArgumentParser) -> None:
    from imgcls.config import AUGMENT_PRESETS, CLASS_WEIGHTS, DEVICES

    group = p.add_argument_group("fine-tuning (--strategy finetune or auto)")
    group.add_argument("--epochs", type=_positive_int, help="most epochs to train (default: by data size)")
    group.add_argument(
        "--lr", type=float, help="peak AdamW learning rate of the top layer (default: by mode)"
    )
    group.add_argument(
        "--freeze-epochs",
        type=_non_negative_int,
        help="epochs that train only the head before the body unfreezes (default: 0; the head starts fitted)",
    )
    group.add_argument(
        "--unfreeze",
        metavar="all|last-N|auto",
        help="which stages train: all, or the last N on cached activations (default: auto = "
        "last-2 on a CPU, all on a GPU)",
    )
    group.add_argument("--augment", choices=AUGMENT_PRESETS, help="augmentation preset (default: standard)")
    group.add_argument("--device", choices=DEVICES, help="where to train (default: auto)")
    group.add_argument("--patience", type=_positive_int, help="early-stopping patience in epochs")
    group.add_argument(
        "--time-limit",
        type=_duration,
        metavar="DURATION",
        help="stop gracefully by this wall time (e.g. 90s, 10m, 1h) and keep the best model",
    )
    group.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTS,
        help="auto: weight the loss by inverse class frequency (default: none)",
    )


def _precisions() -> Sequence[str]:
    from imgcls.config import PRECISIONS

    return PRECISIONS


def _strategies() -> Sequence[str]:
    from imgcls.config import STRATEGIES

    return STRATEGIES


_CONFIG_FIELDS = (
    "backbone", "weights", "pretrained", "strategy", "seed", "val_fraction", "test_fraction",
    "batch_size", "workers", "input_size", "cache_dir", "use_cache", "calibrate", "report",
    "epochs", "lr", "freeze_epochs", "unfreeze", "augment", "device", "precision", "patience",
    "time_limit", "class_weights",
)  # fmt: skip


def _config_from_args(args: argparse.Namespace) -> Any:
    """defaults < --config file < flags."""
    from imgcls.config import TrainConfig, load_config_file

    config = TrainConfig()
    if args.config:
        config = config.with_overrides(load_config_file(args.config))
    return config.with_overrides({name: getattr(args, name, None) for name in _CONFIG_FIELDS})


def _run_train(args: argparse.Namespace) -> int:
    from imgcls.api import resume, train

    started = time.perf_counter()
    if args.resume:
        output = Path(args.resume)
        clf = resume(output, data=args.data)
    elif args.data is None:
        raise SystemExit("imgcls train: the image folder DATA is required (unless --resume RUN_DIR)")
    else:
        config = _config_from_args(args)
        output = Path(args.output) if args.output else _default_run_dir(args.data)
        clf = train(args.data, output, config=config, overwrite=args.overwrite)
    if args.json:
        _print_json({"run_dir": str(output), "metrics": clf.metrics, "unreadable": clf.config["unreadable"]})
        return 0
    _print_train_summary(clf, output, time.perf_counter() - started)
    return 0


def _default_run_dir(data: str) -> Path:
    return Path("runs") / f"{Path(data).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_train_summary(clf: Any, output: Path, seconds: float) -> None:
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


# -- cv and compare ---------------------------------------------------------------------------


def _add_fold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", type=int, default=5, help="number of stratified folds (default: 5)")
    p.add_argument("--repeats", type=int, default=1, help="repeat with new fold seeds (default: 1)")


def _add_cv(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    p.add_argument("-o", "--output", help="directory for cv.json, cv_splits.csv and report.html")
    p.add_argument("--backbone", help="backbone name (default: efficientnet_lite0)")
    _add_fold_options(p)


def _run_cv(args: argparse.Namespace) -> int:
    from imgcls.crossval import cross_validate

    result = cross_validate(
        args.data,
        args.output,
        config=_config_from_args(args),
        folds=args.folds,
        repeats=args.repeats,
        overwrite=args.overwrite,
    )
    if args.json:
        _print_json(result.to_dict())
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
    print(f"\n{result.backbone}: accuracy {acc['mean']:.4f} +/- {acc['std']:.4f} over {n} folds")
    print(f"95% confidence interval of the mean: {low:.4f} - {high:.4f}")
    print(f"time: {timing['total_s']:.1f} s (features {timing['extract_s']:.1f} s, ", end="")
    print(f"heads {timing['fit_s']:.1f} s)")
    return 0


def _add_compare(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    p.add_argument(
        "--backbones",
        required=True,
        help="comma-separated backbone names, e.g. efficientnet_lite0,efficientnet_lite2",
    )
    p.add_argument("-o", "--output", help="directory for compare.json and one cv folder per backbone")
    _add_fold_options(p)


def _run_compare(args: argparse.Namespace) -> int:
    from imgcls.crossval import compare

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    comparison = compare(
        args.data,
        backbones,
        args.output,
        config=_config_from_args(args),
        folds=args.folds,
        repeats=args.repeats,
        overwrite=args.overwrite,
    )
    if args.json:
        _print_json(comparison.to_dict())
        return 0
    print(f"{'backbone':<22}{'accuracy':>18}{'95% CI':>18}{'time s':>9}{'params':>9}{'size MB':>9}")
    for r in comparison.ranked():
        acc = r.summary["accuracy"]
        ci = f"{acc['ci95'][0]:.4f}-{acc['ci95'][1]:.4f}"
        print(
            f"{r.backbone:<22}{acc['mean']:>10.4f} +/- {acc['std']:.4f}{ci:>18}{r.timing['total_s']:>9.1f}"
            f"{r.params / 1e6:>8.1f}M{r.params * 4 / 1e6:>9.1f}"
        )
    test = comparison.paired_test
    print(
        f"\n{test['a']} vs {test['b']}: mean accuracy difference {test['mean_difference']:+.4f}, "
        f"t = {test['t']:.3f}, p = {test['p_value']:.4f} ({test['method']})"
    )
    return 0


def _duration(text: str) -> float:
    from imgcls.config import parse_duration
    from imgcls.errors import ConfigError

    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch-size", type=_positive_int, default=32, help="images per forward pass (default: 32)"
    )
    p.add_argument(
        "--workers", type=_non_negative_int, default=0, help="image-decoding processes (default: 0)"
    )
    p.add_argument("--tta", action="store_true", help="average over centre, whole and mirrored views")


# -- evaluate ---------------------------------------------------------------------------------


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (RUN_DIR or RUN_DIR/model)")
    p.add_argument("data", help="labelled image folder")
    p.add_argument(
        "--split",
        default="val",
        choices=("val", "test", "train", "all"),
        help="which images to score (default: val)",
    )
    _add_inference_options(p)
    p.add_argument(
        "--report",
        nargs="?",
        const="",
        metavar="FILE",
        help="write an HTML report (default: RUN_DIR/report-<split>.html, with evaluation-<split>.json)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _run_evaluate(args: argparse.Namespace) -> int:
    from imgcls.classifier import Classifier
    from imgcls.metrics import format_report

    clf = Classifier.load(args.model)
    result = clf.evaluate(
        args.data, split=args.split, tta=args.tta, batch_size=args.batch_size, workers=args.workers
    )
    if args.report is not None:
        _write_evaluation_report(clf, result, args)
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"model {clf.directory}  split {result.split}")
    print(format_report(result.report, clf.classes))
    if result.tta:
        tta = result.tta
        print(
            f"\ntest-time augmentation: accuracy {tta['accuracy_without']:.4f} -> {tta['accuracy_with']:.4f}"
        )
    _print_unreadable(result.unreadable)
    return 0


def _write_evaluation_report(clf: Any, result: Any, args: argparse.Namespace) -> None:
    from imgcls.model_io import write_json
    from imgcls.report import write_report

    run_dir = clf.run_dir
    path = Path(args.report) if args.report else run_dir / f"report-{result.split}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path.with_name(f"evaluation-{result.split}.json"), result.to_dict())
    write_report(
        path,
        title=f"imgcls evaluate: {clf.backbone} on {Path(args.data).name} ({result.split})",
        facts=[
            ("model", str(clf.directory)),
            ("split", result.split),
            ("test-time augmentation", str(args.tta)),
        ],
        report=result.report,
        classes=clf.classes,
        mistakes=result.mistakes,
    )
    print(f"report: {path}", file=sys.stderr)


# -- predict ----------------------------------------------------------------------------------


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory, or a backbone name to use its ImageNet classes")
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to list per image (default: 5)")
    p.add_argument("--weights", metavar="FILE", help="with a backbone name: local ImageNet state dict to use")
    _add_inference_options(p)
    _add_runtime_option(p)
    p.add_argument(
        "--output",
        metavar="FILE",
        help="stream results to a .csv or .jsonl file; a rerun skips paths already written",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print [{"path", "predictions": [{"label", "index", "probability"}]}]',
    )


def _run_predict(args: argparse.Namespace) -> int:
    from imgcls.errors import ConfigError

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.runtime == "onnx" and args.tta:
        raise ConfigError("--tta is not available with --runtime onnx")
    clf = _load_predictor(args)
    if args.output:
        return _predict_to_file(clf, args)
    if args.runtime == "onnx":
        run = clf.predict_paths(
            args.paths, top_k=args.top_k, batch_size=args.batch_size, workers=args.workers
        )
    else:
        run = clf.predict_paths(
            args.paths, top_k=args.top_k, tta=args.tta, batch_size=args.batch_size, workers=args.workers
        )
    if args.json:
        _print_json([p.to_dict() for p in run.predictions])
    else:
        for prediction in run.predictions:
            ranked = "  ".join(f"{s.label} {s.probability:.3f}" for s in prediction.scores)
            print(f"{prediction.path}\t{ranked}")
    _print_unreadable(run.unreadable)
    return 0


def _add_runtime_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="ONNX Runtime on the model's export (model.onnx; no torch import) or torch; auto "
        "(default): ONNX Runtime when a current export exists and this CPU lacks native bf16",
    )


def _load_predictor(args: argparse.Namespace) -> Any:
    """The ONNX Runtime model (no torch import), a saved model, or a pretrained backbone.

    Resolves ``--runtime auto`` and writes the runtime chosen back into ``args.runtime``.
    """
    from imgcls.errors import ConfigError
    from imgcls.runtime_choice import choose_runtime

    weights = getattr(args, "weights", None)
    choice = choose_runtime(args.runtime, args.model, tta=getattr(args, "tta", False))
    logging.getLogger("imgcls").info("runtime: %s (%s)", choice.runtime, choice.reason)
    args.runtime = choice.runtime
    if args.runtime == "onnx":
        if weights:
            raise ConfigError("--weights goes with a backbone name and the torch runtime")
        from imgcls.onnx_runtime import OnnxClassifier

        return choice.onnx or OnnxClassifier.load(args.model)
    from imgcls.classifier import Classifier

    if _looks_like_model_dir(args.model):
        if weights:
            raise ConfigError(
                "--weights goes with a backbone name; a trained model directory has its own weights"
            )
        return Classifier.load(args.model)
    return Classifier.pretrained(args.model, weights=weights)


def _predict_to_file(clf: Any, args: argparse.Namespace) -> int:
    from imgcls.batch import predict_to_file
    from imgcls.data import expand_inputs
    from imgcls.errors import DataError

    paths = expand_inputs(args.paths)
    if not paths:
        raise DataError(f"no image files found in {', '.join(args.paths)}")
    summary = predict_to_file(
        clf,
        paths,
        Path(args.output),
        top_k=args.top_k,
        batch_size=args.batch_size,
        workers=args.workers,
        tta=args.tta,
        progress=_progress_printer("predicting"),
    )
    print(
        f"wrote {summary.written} rows to {args.output} ({summary.unreadable} unreadable, "
        f"{summary.skipped_existing} already there) in {summary.seconds:.1f} s"
    )
    return 0


def _progress_printer(what: str) -> Callable[[int, int], None]:
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        print(f"\r{what}: {done}/{total} images, {rate:.0f} img/s, ETA {eta:.0f} s", end="", file=sys.stderr)
        if done >= total:
            print(file=sys.stderr)

    return report


def _looks_like_model_dir(value: str) -> bool:
    path = Path(value)
    return path.is_dir() or "/" in value or value.startswith(".")


# -- export and serve -------------------------------------------------------------------------


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (RUN_DIR or RUN_DIR/model)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument(
        "--output", metavar="FILE", help="default: model.onnx / model.torchscript.pt in the model directory"
    )
    p.add_argument(
        "--check-images",
        nargs="+",
        default=(),
        metavar="PATH",
        help="images for the parity check (default: validation images of the training run)",
    )
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="max |logit difference| allowed (default: 1e-4)"
    )
    p.add_argument("--json", action="store_true", help="print the export report as JSON")


def _run_export(args: argparse.Namespace) -> int:
    from imgcls.export import export_model

    report = export_model(
        args.model,
        format=args.format,
        output=args.output,
        check_images=args.check_images,
        tolerance=args.tolerance,
    )
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(f"exported {report.format} to {report.path}")
    print(
        f"parity on {report.images} images: max |logit diff| {report.max_abs_logit_diff:.2e}, "
        f"top-1 agreement {report.top1_agreement:.4f}"
    )
    return 0


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (with model.onnx for --runtime onnx)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    _add_runtime_option(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--max-batch", type=int, default=32, help="largest micro-batch (default: 32)")
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long an image waits for others (default: 5)"
    )
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="per-file upload limit (default: 10)")
    p.add_argument("--max-files", type=int, default=16, help="files per request (default: 16)")


def _run_serve(args: argparse.Namespace) -> int:
    from imgcls.server import ServeLimits, serve

    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_files=args.max_files,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        top_k=args.top_k,
    )
    predictor = _load_predictor(args)  # resolves --runtime auto
    serve(predictor, runtime=args.runtime, host=args.host, port=args.port, limits=limits)
    return 0


# -- models -----------------------------------------------------------------------------------


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def _run_models(args: argparse.Namespace) -> int:
    from imgcls.catalog import describe_backbones

    rows = describe_backbones()
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<20}{'input':>6}{'probe':>6}{'params':>9}  pretrained weights on this machine")
    for row in rows:
        print(
            f"{row['name']:<20}{row['input_size']:>6}{row['feature_input_size']:>6}"
            f"{row['params'] / 1e6:>8.1f}M  {row['weights']}"
        )
    print("\ninput: pretraining resolution; probe: resolution frozen features are extracted at.")
    print("Any timm architecture name also works, with --weights FILE or hub weights.")
    return 0


# -- demo -------------------------------------------------------------------------------------


def _add_inspect_data(p: argparse.ArgumentParser) -> None:
    from imgcls.config import AUGMENT_PRESETS, DEFAULT_BACKBONE

    p.add_argument("data", help="image folder: one sub-folder per class, optionally under train/ val/ test/")
    p.add_argument("--augment", choices=AUGMENT_PRESETS, default="standard", help="preset to show")
    p.add_argument("--output", metavar="PNG", help="save a grid of augmented views here")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="whose preprocessing to use")
    p.add_argument("--input-size", type=_positive_int, help="view size in pixels (default: the backbone's)")
    p.add_argument("--rows", type=_positive_int, default=6, help="images in the grid (default: 6)")
    p.add_argument("--views", type=_positive_int, default=6, help="augmented views per image (default: 6)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="as for train (default: 0.2)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="as for train (default: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


def _run_inspect_data(args: argparse.Namespace) -> int:
    from imgcls.data import scan_dataset
    from imgcls.inspect_data import augmentation_grid, summarise

    scan = scan_dataset(args.data)
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
        _print_json({**summary.to_dict(), "grid": str(grid) if grid else None})
        return 0
    print(summary.table())
    if grid is not None:
        print(f"\naugmentation grid ({args.augment}): {grid}  (first column: the eval view)")
    return 0


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        default="runs/demo",
        help="where to write the demo data and run (default: runs/demo)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run")


def _run_demo(args: argparse.Namespace) -> int:
    from imgcls.demo import run_demo

    run_demo(Path(args.output), overwrite=args.overwrite, echo=print)
    return 0


# -- helpers ----------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _print_unreadable(unreadable: dict[str, str]) -> None:
    for path, reason in unreadable.items():
        print(f"imgcls: skipped unreadable image {path}: {reason}", file=sys.stderr)


def _configure_logging(verbosity: int) -> None:
    """0: INFO (progress and notes), -1: WARNING, -2: ERROR, +1: DEBUG; all to stderr."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(
        verbosity, logging.ERROR if verbosity < 0 else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


def _version() -> str:
    from imgcls import __version__

    return __version__


Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {
    "train": (_add_train, _run_train, "train a classifier on a folder of labelled images"),
    "evaluate": (_add_evaluate, _run_evaluate, "score a trained model on labelled images"),
    "predict": (
        _add_predict,
        _run_predict,
        "classify images with a trained model or a pretrained backbone",
    ),
    "export": (_add_export, _run_export, "export a model to ONNX or TorchScript, with a parity check"),
    "serve": (_add_serve, _run_serve, "serve a model over HTTP with a web page (FastAPI + uvicorn)"),
    "cv": (_add_cv, _run_cv, "k-fold cross-validation with mean, std and a 95%% interval"),
    "compare": (_add_compare, _run_compare, "cross-validate several backbones on the same folds"),
    "models": (_add_models, _run_models, "list the named backbones and where their weights are"),
    "inspect-data": (
        _add_inspect_data,
        _run_inspect_data,
        "class counts per split, and a picture grid of augmented training views",
    ),
    "demo": (
        _add_demo,
        _run_demo,
        "train, evaluate and predict on built-in data (scikit-learn's digits)",
    ),
}

if __name__ == "__main__":
    entry()
