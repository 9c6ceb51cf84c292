"""Arguments and printing shared by the ``imgcls`` commands.

Nothing heavy is imported at module level: ``imgcls --help`` must start instantly.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

# Process start, near enough: this module is among the CLI's first imports. A command's
# --time-limit and --profile count from here, so the seconds spent importing are inside them.
PROCESS_STARTED = time.perf_counter()

DATA_HELP = (
    "labelled images: a folder with one sub-folder per class (optionally under train/ val/ "
    "test/), a CSV, JSONL or Parquet manifest of path,label[,split], CIFAR-10/100 as "
    "distributed (folder or .tar.gz), ImageNet in Kaggle's layout, WebDataset .tar shards, or a "
    "Hugging Face data set (save_to_disk folder or image Parquet files)"
)


def add_source_options(p: argparse.ArgumentParser, *, from_config: bool) -> None:
    """--format and --label; with ``from_config`` their defaults come from TrainConfig (and a
    --config file) instead of the argument parser."""
    from imgcls.config import DATA_FORMATS, LABEL_SETS, TrainConfig

    defaults = TrainConfig()
    p.add_argument(
        "--format",
        dest="data_format",
        choices=DATA_FORMATS,
        default=None if from_config else defaults.data_format,
        help=f"how to read DATA (default: {defaults.data_format} = detect it)",
    )
    p.add_argument(
        "--label",
        dest="label_set",
        choices=LABEL_SETS,
        default=None if from_config else defaults.label_set,
        help=f"CIFAR-100's fine (100) or coarse (20) classes (default: {defaults.label_set})",
    )
    for column in ("path", "label"):
        p.add_argument(
            f"--{column}-column",
            metavar="NAME",
            default=None if from_config else getattr(defaults, f"{column}_column"),
            help=f"a manifest's column of image {column}s (default: {getattr(defaults, f'{column}_column')})",
        )
    add_outside_root_option(p)


def source_keywords(args: argparse.Namespace) -> dict[str, str]:
    """``open_source``'s keywords from the flags ``add_source_options`` adds."""
    return {
        "data_format": args.data_format,
        "label_set": args.label_set,
        "path_column": args.path_column,
        "label_column": args.label_column,
    }


def add_outside_root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="let a manifest or Hugging Face data set name image files outside its own folder "
        "(absolute paths, ..): only for data you trust",
    )


def add_model_options(p: argparse.ArgumentParser, *, data_optional: bool = False) -> None:
    """Options shared by train, cv and compare (everything that shapes features and the head)."""
    p.add_argument(
        "data",
        nargs="?" if data_optional else None,
        help=DATA_HELP + (" (with --resume: the run's own)" if data_optional else ""),
    )
    add_source_options(p, from_config=True)
    add_device_option(p, "feature extraction and training", from_config=True)
    add_engine_options(p, "feature extraction (probe)", from_config=True)
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
        choices=strategies(),
        help="how to train (default: probe = a head on frozen features)",
    )
    p.add_argument(
        "--head",
        choices=heads(),
        help="the probe's classifier on the features: linear (logistic regression), mlp (one "
        "hidden layer) or knn (cosine nearest neighbours); settings chosen on train (default: linear)",
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
        "--no-onnx",
        dest="onnx",
        action="store_false",
        default=None,
        help="do not write model/model.onnx (the export that lets predict start without torch)",
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
        choices=precisions(),
        help="forward-pass precision for features and training (default: auto = bf16 where native)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="print where the time went: decode, transform, forward, backward, head fit, I/O",
    )


def add_finetune_options(p: argparse.ArgumentParser) -> None:
    from imgcls.config import AUGMENT_PRESETS, CLASS_WEIGHTS

    group = p.add_argument_group("fine-tuning (--strategy finetune or auto)")
    group.add_argument("--epochs", type=positive_int, help="most epochs to train (default: by data size)")
    group.add_argument(
        "--lr", type=float, help="peak AdamW learning rate of the top layer (default: by mode)"
    )
    group.add_argument(
        "--freeze-epochs",
        type=non_negative_int,
        help="epochs that train only the head before the body unfreezes (default: 0; the head starts fitted)",
    )
    group.add_argument(
        "--unfreeze",
        metavar="all|last-N|auto",
        help="which stages train: all, or the last N on cached activations (default: auto = "
        "last-3 on a CPU, all on a GPU)",
    )
    group.add_argument("--augment", choices=AUGMENT_PRESETS, help="augmentation preset (default: standard)")
    group.add_argument(
        "--patience",
        type=positive_int,
        help="stop after N epochs without a better val score (default: run every epoch; the best is kept)",
    )
    group.add_argument(
        "--time-limit",
        type=duration,
        metavar="DURATION",
        help="stop gracefully by this wall time (e.g. 90s, 10m, 1h) and keep the best model",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the training step with torch.compile: minutes of compiling first, then faster "
        "steps on a GPU (a C++ compiler on a CPU); for long runs",
    )
    group.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTS,
        help="auto: weight the loss by inverse class frequency (default: none)",
    )


def add_engine_options(p: argparse.ArgumentParser, what: str, *, from_config: bool = False) -> None:
    """--engine, --ray-address, --ray-actors; ``what`` says what runs on the cluster.
    ``from_config``: no defaults here, so that a --config file's values hold."""
    from imgcls.config import ENGINES

    group = p.add_argument_group("Ray cluster")
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default=None if from_config else "local",
        help=f"run {what} here, or on a Ray cluster (pip install 'imgcls[ray]') (default: local)",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="with --engine ray: the cluster to join (default: $RAY_ADDRESS, or a local one)",
    )
    group.add_argument(
        "--ray-actors",
        type=positive_int,
        help="with --engine ray: network copies on the cluster (default: one per 2 CPUs)",
    )


def precisions() -> Sequence[str]:
    from imgcls.config import PRECISIONS

    return PRECISIONS


def heads() -> Sequence[str]:
    from imgcls.config import HEADS

    return HEADS


def strategies() -> Sequence[str]:
    from imgcls.config import STRATEGIES

    return STRATEGIES


def config_from_args(args: argparse.Namespace) -> Any:
    """defaults < --config file < flags."""
    from imgcls.config import TrainConfig, load_config_file

    config = TrainConfig()
    if args.config:
        config = config.with_overrides(load_config_file(args.config))
    return config.with_overrides({name: getattr(args, name, None) for name in config_fields()})


def config_fields() -> list[str]:
    """The ``TrainConfig`` settings: a flag's destination of the same name sets each one."""
    import dataclasses

    from imgcls.config import TrainConfig

    return [field.name for field in dataclasses.fields(TrainConfig)]


def add_fold_options(p: argparse.ArgumentParser) -> None:
    from imgcls.config import FOLDS, REPEATS

    p.add_argument("--folds", type=int, default=FOLDS, help=f"number of stratified folds (default: {FOLDS})")
    p.add_argument(
        "--repeats", type=int, default=REPEATS, help=f"repeat with new fold seeds (default: {REPEATS})"
    )


def duration(text: str) -> float:
    from imgcls.config import parse_duration
    from imgcls.errors import ConfigError

    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_device_option(p: argparse.ArgumentParser, what: str, *, from_config: bool = False) -> None:
    """--device; ``from_config``: no default here, so that a --config file's value holds."""
    p.add_argument(
        "--device",
        type=device_name,
        default=None if from_config else "auto",
        metavar="auto|cpu|cuda|cuda:N|mps",
        help=f"where {what} runs (default: auto = a CUDA GPU, else MPS, else the CPU)",
    )


def device_name(text: str) -> str:
    from imgcls.config import parse_device
    from imgcls.errors import ConfigError

    try:
        parse_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_forward_batch_option(p: argparse.ArgumentParser) -> None:
    from imgcls.config import ACCELERATOR_BATCH, PREDICT_BATCH_SIZE

    p.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per forward pass (default: {PREDICT_BATCH_SIZE} on a CPU, "
        f"{ACCELERATOR_BATCH} on a GPU)",
    )


def add_inference_options(p: argparse.ArgumentParser) -> None:
    add_device_option(p, "the network")
    add_forward_batch_option(p)
    p.add_argument(
        "--workers",
        type=non_negative_int,
        help="image-decoding processes (default: automatic: none for a few images, one on a CPU, "
        "the CPU's cores for a GPU)",
    )
    p.add_argument("--tta", action="store_true", help="average over centre, whole and mirrored views")


def add_runtime_option(p: argparse.ArgumentParser) -> None:
    from imgcls.config import RUNTIMES

    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="ONNX Runtime on the model's export (model.onnx; no torch import) or torch; auto "
        "(default): ONNX Runtime when a current export exists and this CPU lacks native bf16",
    )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_unreadable(unreadable: dict[str, str]) -> None:
    for path, reason in unreadable.items():
        print(f"imgcls: skipped unreadable image {path}: {reason}", file=sys.stderr)


# Library messages name settings as Python code writes them, in backquotes (`weights=FILE`,
# `pretrained=False`); the CLI shows the flag a user types instead (--weights FILE,
# --no-pretrained).
_SETTING = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`\s]+))?`")
# Settings whose flag is named otherwise.
_FLAG_NAMES = {"use_cache": "cache", "data_format": "format", "label_set": "label"}


def as_flags(message: str) -> str:
    """``message`` with each backquoted setting written as its command-line flag."""

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        dashed = _FLAG_NAMES.get(name, name).replace("_", "-")
        if value == "True":
            return f"--{dashed}"
        if value == "False":
            return f"--no-{dashed}"
        return f"--{dashed}" if value is None else f"--{dashed} {value}"

    return _SETTING.sub(flag, message)


class FlagFormatter(logging.Formatter):
    """Log lines with settings written as flags (``as_flags``)."""

    def format(self, record: logging.LogRecord) -> str:
        return as_flags(super().format(record))
