"""Decoding a data set's images in a child process while a command imports torch.

A command that is about to train on DATA calls this before its first torch import; the
feature extraction then finds the crops ready (see ``data._prefetch``). Imports no torch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from imgcls.data._prefetch import prefetch_folder
from imgcls.models.registry import preprocessing_without_timm
from imgcls.system.launcher import environment_ranks


def decoding_ahead(
    data: str | Path, *, backbone: str, input_size: int | None
) -> contextlib.AbstractContextManager:
    """While the block runs, decode ``data`` for ``backbone``'s features; nothing where its
    preprocessing needs timm or torch is already imported, nor under torchrun (each process
    extracts its own share of the images)."""
    if environment_ranks() is not None:
        return contextlib.nullcontext()
    return prefetch_folder(data, preprocessing_without_timm(backbone, input_size))
