"""A saved model is a directory of data, never a pickle.

``model.safetensors`` holds the network's tensors; ``config.json`` holds everything needed
to rebuild and use it (architecture, class names in index order, preprocessing) and what it
is (weights origin, metrics, versions).
"""

from __future__ import annotations

import csv
import io
import json
import platform
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from imgcls.errors import ModelFormatError
from imgcls.layout import CONFIG_FILE, WEIGHTS_FILE

FORMAT_NAME = "imgcls-model"
FORMAT_VERSION = 1
# Exports of an earlier model in the same directory would silently serve the old weights.
EXPORT_FILES = ("model.onnx", "model.torchscript.pt")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("imgcls", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def save_model_dir(directory: Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``config.json`` (each via a temporary file + rename)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    for stale in EXPORT_FILES:
        (directory / stale).unlink(missing_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_weights = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp_weights), metadata={"format": FORMAT_NAME})
    tmp_weights.replace(directory / WEIGHTS_FILE)
    full = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        **config,
    }
    write_json(directory / CONFIG_FILE, full)


def read_model_config(directory: Path) -> dict[str, Any]:
    """The validated ``config.json`` of a model directory."""
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise ModelFormatError(f"model directory {directory} does not exist")
    if not config_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise ModelFormatError(
            f"{directory} is not an imgcls model directory: expected {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (a run directory keeps them in its model/ sub-folder)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelFormatError(f"{config_path} is not valid JSON: {exc}") from exc
    if config.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{config_path} was not written by imgcls (format {config.get('format')!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFormatError(
            f"{directory} uses model format {config['format_version']}, newer than this imgcls "
            f"understands ({FORMAT_VERSION}); upgrade imgcls"
        )
    return config


def load_weights_into(model: nn.Module, directory: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(directory / WEIGHTS_FILE))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(
            f"{directory / WEIGHTS_FILE} does not fit the architecture in {CONFIG_FILE}: {exc}"
        ) from exc


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a hidden temporary file, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
