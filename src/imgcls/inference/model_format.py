"""A saved model is a directory of data, never a pickle.

``model.safetensors`` holds the network's tensors; ``config.json`` holds everything needed
to rebuild and use it (architecture, class names in index order, preprocessing) and what it
is (weights origin, metrics, versions). A kNN head's bank of training features and their
classes are ``knn_bank.npy`` and ``knn_labels.npy`` beside them, memory-mapped when the model
is opened (models saved before kept them in ``model.safetensors``, and still load).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls._files import (
    CONFIG_FILE,
    EXPORT_FILES,
    FORMAT_NAME,
    FORMAT_VERSION,
    KNN_BANK_FILE,
    KNN_LABELS_FILE,
    WEIGHTS_FILE,
    model_dir,
    read_model_config,
    write_array_atomic,
    write_bytes_atomic,
    write_json,
)
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.sources.folders import holds_images
from imgcls.errors import ModelFormatError
from imgcls.models.backbone import create_network
from imgcls.models.heads import KNNHead, feature_width, head_for_config, install_classifier
from imgcls.models.registry import get_backbone
from imgcls.models.weights import classifier_prefix

# Keys of config.json that describe the file rather than the model; written anew on each save.
_FILE_KEYS = ("format", "format_version", "created", "versions")


@dataclass
class SavedModel:
    """What a model directory holds: the network, its classes in output order, its
    preprocessing, the rest of ``config.json``, and where it was read from."""

    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    config: dict[str, Any]
    directory: Path


def read_config_of(directory: Path) -> dict[str, Any]:
    """``read_model_config``, with a hint when ``directory`` holds images: data given as the model."""
    try:
        return read_model_config(directory)
    except ModelFormatError as exc:
        if directory.is_dir() and holds_images(directory):
            raise ModelFormatError(
                f"{exc}; {directory} holds images: did you swap DATA and MODEL? The model comes first"
            ) from None
        raise


def read_saved_model(path: Path) -> SavedModel:
    """The model saved in ``path`` (``RUN_DIR/model`` or ``RUN_DIR`` itself), rebuilt and loaded."""
    directory = model_dir(path)
    config = read_config_of(directory)
    model = create_network(get_backbone(config["backbone"]["name"]), num_classes=len(config["classes"]))
    state = _read_weights(directory)
    bank = _knn_bank(config.get("head"), directory, state, prefix=classifier_prefix(model))
    head = head_for_config(
        config.get("head"), in_features=feature_width(model), num_classes=len(config["classes"]), bank=bank
    )
    if head is not None:
        install_classifier(model, head)
    _load_state(model, state, directory)
    pre = Preprocessing.from_dict(config["preprocessing"])
    return SavedModel(model, list(config["classes"]), pre, config, directory)


def _knn_bank(
    head: dict[str, Any] | None, directory: Path, state: dict[str, torch.Tensor], *, prefix: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A kNN head's normalised bank and labels: mapped from their files, or taken out of the
    weights of a model saved before they had files of their own."""
    if (head or {}).get("type") != "knn":
        return None
    if f"{prefix}.bank" in state:
        return state.pop(f"{prefix}.bank"), state.pop(f"{prefix}.bank_labels")
    try:
        bank = np.load(directory / KNN_BANK_FILE, mmap_mode="c", allow_pickle=False)
        labels = np.load(directory / KNN_LABELS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(
            f"the kNN head's training features cannot be read ({exc}): {directory} needs "
            f"{KNN_BANK_FILE} and {KNN_LABELS_FILE} beside {WEIGHTS_FILE}; save the model again"
        ) from None
    if bank.ndim != 2 or len(bank) != len(labels) or len(bank) != int(head["bank_size"]):  # type: ignore[index]
        raise ModelFormatError(
            f"{directory / KNN_BANK_FILE} holds {bank.shape} features and {len(labels)} labels; "
            f"config.json describes {head['bank_size']}: save the model again"  # type: ignore[index]
        )
    return torch.from_numpy(bank), torch.from_numpy(labels)


def write_saved_model(saved: SavedModel) -> None:
    """Write ``saved`` to ``saved.directory``: its weights and a fresh ``config.json``."""
    config = {k: v for k, v in saved.config.items() if k not in _FILE_KEYS}
    config.update(
        classes=saved.classes,
        num_classes=len(saved.classes),
        preprocessing=saved.preprocessing.to_dict(),
    )
    save_model_dir(saved.directory, saved.model, config)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("imgcls", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def save_model_dir(directory: Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``model.safetensors``, a kNN head's bank files and ``config.json`` (each via a
    temporary file + rename; the config last, so that it never describes files not written)."""
    from safetensors.torch import save

    directory.mkdir(parents=True, exist_ok=True)
    for stale in (*EXPORT_FILES, KNN_BANK_FILE, KNN_LABELS_FILE):
        (directory / stale).unlink(missing_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Written by Python rather than safetensors' save_file, which creates private (0600) files
    # whatever the umask: a model is made to be shared.
    write_bytes_atomic(directory / WEIGHTS_FILE, save(state, metadata={"format": FORMAT_NAME}))
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, KNNHead):
        write_array_atomic(directory / KNN_BANK_FILE, classifier.bank.cpu().numpy())
        write_array_atomic(directory / KNN_LABELS_FILE, classifier.bank_labels.cpu().numpy())
    full = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        **config,
    }
    write_json(directory / CONFIG_FILE, full)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(directory / WEIGHTS_FILE))
    except Exception as exc:  # safetensors' own error types: a damaged file, or not safetensors at all
        raise ModelFormatError(
            f"{directory / WEIGHTS_FILE} is not a readable safetensors file ({type(exc).__name__}); "
            "save the model again"
        ) from None


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(
            f"{directory / WEIGHTS_FILE} does not fit the architecture in {CONFIG_FILE}: {exc}"
        ) from exc
