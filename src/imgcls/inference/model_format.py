"""A saved model is a directory of data, never a pickle.

``model.safetensors`` holds the network's tensors; ``config.json`` holds everything needed
to rebuild and use it (architecture, class names in index order, preprocessing) and what it
is (weights origin, metrics, versions).
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from imgcls._files import (
    CONFIG_FILE,
    EXPORT_FILES,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    write_json,
)
from imgcls.errors import ModelFormatError


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


def load_weights_into(model: nn.Module, directory: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(directory / WEIGHTS_FILE))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(
            f"{directory / WEIGHTS_FILE} does not fit the architecture in {CONFIG_FILE}: {exc}"
        ) from exc
