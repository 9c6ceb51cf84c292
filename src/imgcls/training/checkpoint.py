"""Training checkpoints: one file per run, replaced atomically after every epoch.

A checkpoint holds what it takes to continue exactly where a run stopped: the weights being
trained, optimiser / scheduler / grad-scaler state, the random number generators, the
epoch, the best score with its weights, and the history. It is written to a temporary name
and renamed, so a ``kill -9`` leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls._files import write_bytes_atomic
from imgcls.errors import ModelFormatError, first_line

CHECKPOINT_FORMAT = 1


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch generator states, in plain (weights_only-loadable) types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_tuple(states["python"]))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    # Serialised in memory first: torch.save reports a full disk as a RuntimeError without the
    # file's name, the atomic writer as an OSError that names it.
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFormatError(
            f"no checkpoint at {path}: the run finished (nothing to resume) or never completed an epoch"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a damaged or tampered file; nothing is run
        raise ModelFormatError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFormatError(f"{path} is not an imgcls checkpoint of format {CHECKPOINT_FORMAT}")
    return payload
