"""The commands that use trained models: ``evaluate``, ``predict``, ``export``, ``serve``,
``models`` and ``demo``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from imgcls.cli_options import (
    add_inference_options,
    add_runtime_option,
    looks_like_model_dir,
    print_json,
    print_unreadable,
    progress_printer,
)


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (RUN_DIR or RUN_DIR/model)")
    p.add_argument("data", help="labelled image folder")
    p.add_argument(
        "--split",
        default="val",
        choices=("val", "test", "train", "all"),
        help="which images to score (default: val)",
    )
    add_inference_options(p)
    p.add_argument(
        "--report",
        nargs="?",
        const="",
        metavar="FILE",
        help="write an HTML report (default: RUN_DIR/report-<split>.html, with evaluation-<split>.json)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_evaluate(args: argparse.Namespace) -> int:
    from imgcls.classifier import Classifier
    from imgcls.metrics import format_report

    clf = Classifier.load(args.model)
    result = clf.evaluate(
        args.data, split=args.split, tta=args.tta, batch_size=args.batch_size, workers=args.workers
    )
    if args.report is not None:
        write_evaluation_report(clf, result, args)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"model {clf.directory}  split {result.split}")
    print(format_report(result.report, clf.classes))
    if result.tta:
        tta = result.tta
        print(
            f"\ntest-time augmentation: accuracy {tta['accuracy_without']:.4f} -> {tta['accuracy_with']:.4f}"
        )
    print_unreadable(result.unreadable)
    return 0


def write_evaluation_report(clf: Any, result: Any, args: argparse.Namespace) -> None:
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


def add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory, or a backbone name to use its ImageNet classes")
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to list per image (default: 5)")
    p.add_argument("--weights", metavar="FILE", help="with a backbone name: local ImageNet state dict to use")
    add_inference_options(p)
    add_runtime_option(p)
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
    p.add_argument("--profile", action="store_true", help="print where the time went: decode, forward, I/O")


def run_predict(args: argparse.Namespace) -> int:
    from imgcls.errors import ConfigError

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.runtime == "onnx" and args.tta:
        raise ConfigError("--tta is not available with --runtime onnx")
    choice = resolve_runtime(args)
    with decoding_ahead_of_prediction(args):
        return _predict(load_predictor(args, choice), args)


def _predict(clf: Any, args: argparse.Namespace) -> int:
    if args.output:
        return predict_to_file(clf, args)
    if args.runtime == "onnx":
        run = clf.predict_paths(
            args.paths, top_k=args.top_k, batch_size=args.batch_size, workers=args.workers
        )
    else:
        run = clf.predict_paths(
            args.paths, top_k=args.top_k, tta=args.tta, batch_size=args.batch_size, workers=args.workers
        )
    if args.json:
        print_json([p.to_dict() for p in run.predictions])
    else:
        for prediction in run.predictions:
            ranked = "  ".join(f"{s.label} {s.probability:.3f}" for s in prediction.scores)
            print(f"{prediction.path}\t{ranked}")
    print_unreadable(run.unreadable)
    return 0


def resolve_runtime(args: argparse.Namespace) -> Any:
    """Decide ``--runtime auto`` (without importing torch) and write the choice into ``args``."""
    from imgcls.runtime_choice import choose_runtime

    choice = choose_runtime(args.runtime, args.model, tta=getattr(args, "tta", False))
    logging.getLogger("imgcls").info("runtime: %s (%s)", choice.runtime, choice.reason)
    args.runtime = choice.runtime
    return choice


def decoding_ahead_of_prediction(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """With a saved model in torch, decode the images to predict while torch imports (``prefetch``)."""
    from imgcls.config import Preprocessing
    from imgcls.data import expand_inputs
    from imgcls.errors import ImgclsError
    from imgcls.layout import CONFIG_FILE, model_dir
    from imgcls.prefetch import prefetch_paths

    config = model_dir(Path(args.model)) / CONFIG_FILE
    if args.runtime != "torch" or not config.is_file():
        return contextlib.nullcontext()
    try:
        pre = Preprocessing.from_dict(json.loads(config.read_text())["preprocessing"])
        paths = expand_inputs(args.paths)
    except (ImgclsError, OSError, ValueError, KeyError):
        return contextlib.nullcontext()  # the prediction itself reports the problem
    return prefetch_paths(paths, pre)


def load_predictor(args: argparse.Namespace, choice: Any = None) -> Any:
    """The ONNX Runtime model (no torch import), a saved model, or a pretrained backbone.

    Resolves ``--runtime auto`` (unless ``choice`` did) and writes the runtime chosen back into
    ``args.runtime``.
    """
    from imgcls.errors import ConfigError

    weights = getattr(args, "weights", None)
    if weights and looks_like_model_dir(args.model):
        raise ConfigError("--weights goes with a backbone name; a model directory has its own weights")
    choice = choice or resolve_runtime(args)
    if args.runtime == "onnx":
        if weights:
            raise ConfigError("--weights goes with a backbone name and the torch runtime")
        from imgcls.onnx_runtime import OnnxClassifier

        return choice.onnx or OnnxClassifier.load(args.model)
    from imgcls.classifier import Classifier

    if looks_like_model_dir(args.model):
        return Classifier.load(args.model)
    return Classifier.pretrained(args.model, weights=weights)


def predict_to_file(clf: Any, args: argparse.Namespace) -> int:
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
        progress=progress_printer("predicting"),
    )
    print(
        f"wrote {summary.written} rows to {args.output} ({summary.unreadable} unreadable, "
        f"{summary.skipped_existing} already there) in {summary.seconds:.1f} s"
    )
    return 0


def add_export(p: argparse.ArgumentParser) -> None:
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


def run_export(args: argparse.Namespace) -> int:
    from imgcls.export import export_model

    report = export_model(
        args.model,
        format=args.format,
        output=args.output,
        check_images=args.check_images,
        tolerance=args.tolerance,
    )
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"exported {report.format} to {report.path}")
    print(
        f"parity on {report.images} images: max |logit diff| {report.max_abs_logit_diff:.2e}, "
        f"top-1 agreement {report.top1_agreement:.4f}"
    )
    return 0


def add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (with model.onnx for --runtime onnx)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_runtime_option(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--max-batch", type=int, default=32, help="largest micro-batch (default: 32)")
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long an image waits for others (default: 5)"
    )
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="per-file upload limit (default: 10)")
    p.add_argument("--max-files", type=int, default=16, help="files per request (default: 16)")


def run_serve(args: argparse.Namespace) -> int:
    from imgcls.server import ServeLimits, serve

    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_files=args.max_files,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        top_k=args.top_k,
    )
    predictor = load_predictor(args)  # resolves --runtime auto
    serve(predictor, runtime=args.runtime, host=args.host, port=args.port, limits=limits)
    return 0


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def run_models(args: argparse.Namespace) -> int:
    from imgcls.catalog import describe_backbones

    rows = describe_backbones()
    if args.json:
        print_json(rows)
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


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        default="runs/demo",
        help="where to write the demo data and run (default: runs/demo)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run")


def run_demo(args: argparse.Namespace) -> int:
    from imgcls.demo import run_demo

    run_demo(Path(args.output), overwrite=args.overwrite, echo=print)
    return 0
