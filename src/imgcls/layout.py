"""Names of the files in a saved model directory, readable without importing torch.

A run directory keeps its model in ``RUN_DIR/model/``; everything that takes a model path
accepts either.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def model_dir(path: Path) -> Path:
    """``path/model`` for a run directory, else ``path`` itself."""
    return path / "model" if (path / "model" / CONFIG_FILE).is_file() else path


def weights_digest(directory: Path) -> str:
    """Content digest of a model directory's weights: ties an export to the weights it came from."""
    with (model_dir(directory) / WEIGHTS_FILE).open("rb") as handle:
        return hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
