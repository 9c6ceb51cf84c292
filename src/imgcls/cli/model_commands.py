"""The commands that use trained models: ``evaluate``, ``predict``, ``export``, ``serve``,
``models`` and ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from imgcls.cli._options import (
    DATA_HELP,
    add_device_option,
    add_engine_options,
    add_inference_options,
    add_outside_root_option,
    add_runtime_option,
    add_source_options,
    as_flags,
    print_json,
    print_unreadable,
    source_keywords,
)
from imgcls.system.wording import count

# Every input was unreadable: nothing was predicted (2 stays for errors of use and data).
EXIT_NOTHING_READABLE = 1


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (RUN_DIR or RUN_DIR/model)")
    p.add_argument("data", help=DATA_HELP)
    add_source_options(p, from_config=False)
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
    from imgcls.evaluation.metrics import format_report
    from imgcls.inference.classifier import Classifier

    clf = Classifier.load(args.model, device=args.device)
    result = clf.evaluate(
        args.data,
        split=args.split,
        tta=args.tta,
        batch_size=args.batch_size,
        workers=args.workers,
        **source_keywords(args),
    )
    if args.report is not None:
        from imgcls.inference.evaluate import write_evaluation_report

        report = write_evaluation_report(clf, result, args.data, args.report or None)
        print(f"report: {report}", file=sys.stderr)
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


def add_predict(p: argparse.ArgumentParser) -> None:
    from imgcls.config import TOP_K

    p.add_argument("model", help="model directory, or a backbone name to use its ImageNet classes")
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    add_outside_root_option(p)
    p.add_argument(
        "--top-k", type=int, default=TOP_K, help=f"how many classes to list per image (default: {TOP_K})"
    )
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
    add_engine_options(p, "scoring (with --output)")
    p.add_argument("--profile", action="store_true", help="print where the time went: decode, forward, I/O")


def run_predict(args: argparse.Namespace) -> int:
    from imgcls.errors import ConfigError
    from imgcls.inference.loading import (
        decoding_ahead_of_prediction,
        inputs_or_none,
        model_of_file,
        open_model,
    )
    from imgcls.inference.runtime_choice import choose_runtime

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.runtime == "onnx" and args.tta:
        raise ConfigError("--tta is not available with --runtime onnx")
    if args.engine == "ray" and (not args.output or args.tta):
        raise ConfigError("--engine ray writes to a file: give --output FILE (and no --tta)")
    args.model, args.runtime = model_of_file(args.model, args.runtime)
    # Decide the runtime before torch is imported, so decoding can start beside that import.
    inputs = inputs_or_none(args.paths)
    choice = choose_runtime(
        args.runtime,
        args.model,
        tta=args.tta,
        device=args.device,
        images=len(inputs) if inputs is not None else None,
    )
    with decoding_ahead_of_prediction(args.model, inputs, choice.runtime):
        opened = open_model(
            args.model,
            runtime=args.runtime,
            weights=args.weights,
            tta=args.tta,
            choice=choice,
            device=args.device,
        )
        args.runtime = opened.runtime
        return _predict(opened.predictor, args)


def _predict(clf: Any, args: argparse.Namespace) -> int:
    if args.output:
        return predict_to_file(clf, args)
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
    return EXIT_NOTHING_READABLE if run.unreadable and not run.predictions else 0


def predict_to_file(clf: Any, args: argparse.Namespace) -> int:
    from imgcls.data.sources import prediction_inputs
    from imgcls.errors import DataError
    from imgcls.inference.batch import predict_to_file
    from imgcls.system.progress import Progress

    paths = prediction_inputs(args.paths)
    if not paths:
        raise DataError(f"no image files found in {', '.join(args.paths)}")
    engine = None
    if args.engine == "ray":
        from imgcls.deploy.ray_engine import RayScoring

        engine = RayScoring(
            args.model,
            runtime=args.runtime,
            address=args.ray_address,
            actors=args.ray_actors,
            device=args.device,
            batch_size=args.batch_size,
        )
    summary = predict_to_file(
        clf,
        paths,
        Path(args.output),
        top_k=args.top_k,
        batch_size=args.batch_size,
        workers=args.workers,
        tta=args.tta,
        progress=Progress("predicting"),
        engine=engine,
    )
    print(
        f"wrote {count(summary.written, 'row')} to {args.output} ({summary.unreadable} unreadable, "
        f"{summary.skipped_existing} already there) in {summary.seconds:.1f} s"
    )
    # Unreadable files get rows too (with their reason): nothing was read if they are all there is.
    return EXIT_NOTHING_READABLE if summary.unreadable and summary.unreadable == summary.written else 0


def add_export(p: argparse.ArgumentParser) -> None:
    from imgcls.config import EXPORT_RELATIVE_TOLERANCE

    p.add_argument("model", help="model directory (RUN_DIR or RUN_DIR/model)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    add_outside_root_option(p)  # the run's validation images, read again for the parity check
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
        "--tolerance",
        type=float,
        default=None,
        help="max |logit difference| allowed, absolute (default: "
        f"{EXPORT_RELATIVE_TOLERANCE:g} of the check images' logit spread, see docs/deployment.md)",
    )
    add_device_option(p, "the parity check (the network and its export)")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")


def run_export(args: argparse.Namespace) -> int:
    from imgcls.deploy.export import export_model

    report = export_model(
        args.model,
        format=args.format,
        output=args.output,
        check_images=args.check_images,
        tolerance=args.tolerance,
        device=args.device,
    )
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"exported {report.format} to {report.path}")
    print(
        f"parity on {report.images} images: max |logit diff| {report.max_abs_logit_diff:.2e} "
        f"(allowed {report.allowed_logit_diff:.1e}), top-1 agreement {report.top1_agreement:.4f} "
        f"(on {report.device})"
    )
    return 0


def add_serve(p: argparse.ArgumentParser) -> None:
    from imgcls.config import ServeLimits

    p.add_argument("model", help="model directory (with model.onnx for --runtime onnx)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_runtime_option(p)
    add_device_option(p, "the network")
    limits = ServeLimits()
    upload_mb = limits.max_upload_bytes / 2**20
    p.add_argument(
        "--top-k", type=int, default=limits.top_k, help=f"classes per image (default: {limits.top_k})"
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=limits.max_batch,
        help=f"largest micro-batch (default: {limits.max_batch})",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=limits.max_wait_ms,
        help=f"how long an image waits for others (default: {limits.max_wait_ms:g})",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=upload_mb,
        help=f"per-file upload limit (default: {upload_mb:g})",
    )
    p.add_argument(
        "--max-files",
        type=int,
        default=limits.max_files,
        help=f"files per request (default: {limits.max_files})",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=limits.max_concurrent,
        help=f"requests in flight; more get 503 and Retry-After (default: {limits.max_concurrent})",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=limits.request_timeout_s,
        help=f"seconds a request may take (default: {limits.request_timeout_s:g})",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("IMGCLS_API_KEY"),
        help="require this key (X-API-Key or Authorization: Bearer) of every request but the page, "
        "which asks for it, and /health (default: $IMGCLS_API_KEY; none)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN to call the API (repeatable; default: none)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from imgcls.config import ServeLimits
    from imgcls.deploy.server import serve

    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_files=args.max_files,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        top_k=args.top_k,
        max_concurrent=args.max_concurrent,
        request_timeout_s=args.request_timeout,
    )
    from imgcls.inference.loading import open_model

    opened = open_model(args.model, runtime=args.runtime, device=args.device)
    print(
        f"limits: {limits.max_upload_bytes / 2**20:g} MB a file, {limits.max_files} files a request, "
        f"{limits.max_concurrent} requests in flight, {limits.request_timeout_s:g} s a request; "
        f"API key {'required' if args.api_key else 'not required'}; "
        f"CORS {', '.join(args.cors_origin) if args.cors_origin else 'off'}",
        file=sys.stderr,
    )
    serve(
        opened.predictor,
        runtime=opened.runtime,
        host=args.host,
        port=args.port,
        limits=limits,
        api_key=args.api_key,
        cors_origins=args.cors_origin,
    )
    return 0


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def run_models(args: argparse.Namespace) -> int:
    from imgcls.models.catalog import describe_backbones

    rows = describe_backbones()
    if args.json:
        print_json(rows)
        return 0
    print(f"{'name':<20}{'input':>6}{'probe':>6}{'params':>9}  pretrained weights on this machine")
    for row in rows:
        print(
            f"{row['name']:<20}{row['input_size']:>6}{row['feature_input_size']:>6}"
            f"{row['params'] / 1e6:>8.1f}M  {as_flags(row['weights'])}"
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
    from imgcls.workflows.demo import run_demo

    run_demo(Path(args.output), overwrite=args.overwrite, echo=print)
    return 0
