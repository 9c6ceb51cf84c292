"""Which device runs a network, and moving networks and batches there.

``resolve_device`` turns ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into a device of
this machine (``auto``: CUDA, then MPS, then the CPU) or a one-line error that says what the
machine has. Every stage moves its network and its batches with ``place``, and asks
``pins_memory`` whether its loaders should pin host memory: one place for what differs
between a CPU and an accelerator.
"""

from __future__ import annotations

import logging
import os
from typing import TypeVar

import torch

from imgcls.config import ACCELERATOR_BATCH, PREDICT_BATCH_SIZE, parse_device
from imgcls.errors import ConfigError
from imgcls.system.launcher import processes_on_this_machine

log = logging.getLogger(__name__)

CPU = torch.device("cpu")
# Below this many images, starting a decoding process costs more than decoding inline.
INLINE_DECODE_BELOW = 256

Placed = TypeVar("Placed", torch.Tensor, torch.nn.Module)


def resolve_device(name: str) -> torch.device:
    """The device ``name`` asks for, on this machine."""
    kind, index = parse_device(name)
    if kind == "auto":
        chosen = available_devices()[0]
        # A CPU is the usual case here; an accelerator is worth a line.
        log.log(logging.DEBUG if chosen.type == "cpu" else logging.INFO, "device auto -> %s", chosen)
        return chosen
    if kind == "cpu":
        return CPU
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"`device=mps` was asked for, but this machine has {_found()}")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError(f"`device={name}` was asked for, but this machine has {_found()}")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ConfigError(f"`device={name}` was asked for, but this machine has {_found()}")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def available_devices() -> list[torch.device]:
    """The devices this machine offers, the preferred first (CUDA, then MPS, then the CPU)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    found = [torch.device("cuda", i) for i in range(gpus)]
    if torch.backends.mps.is_available():
        found.append(torch.device("mps"))
    return [*found, CPU]


def _found() -> str:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = "cuda:0" if gpus == 1 else f"cuda:0 to cuda:{gpus - 1}"
    names = [f"{gpus} CUDA device{'s' if gpus != 1 else ''} ({listed})"] if gpus else []
    if torch.backends.mps.is_available():
        names.append("an MPS device")
    return " and ".join(names) + " and a CPU" if names else "only a CPU (no CUDA or MPS device found)"


def place(item: Placed, device: torch.device) -> Placed:
    """``item`` (a network or a batch) on ``device``; a batch is copied without waiting for it."""
    if isinstance(item, torch.Tensor):
        return item.to(device, non_blocking=True)
    return item.to(device)


def pins_memory(device: torch.device) -> bool:
    """Whether loaders feeding ``device`` should pin host memory (so copies overlap compute)."""
    return device.type == "cuda"


def forward_batch(batch_size: int | None, device: torch.device) -> int:
    """Images per forward pass when extracting or predicting: ``batch_size`` when given, else
    ``PREDICT_BATCH_SIZE`` on a CPU and ``ACCELERATOR_BATCH`` on an accelerator."""
    if batch_size is not None:
        return batch_size
    return PREDICT_BATCH_SIZE if device.type == "cpu" else ACCELERATOR_BATCH


def loader_workers(
    workers: int | None, n_images: int, device: torch.device, *, inline_below: int = INLINE_DECODE_BELOW
) -> int:
    """Image-decoding processes for ``n_images`` feeding ``device``: ``workers`` when given.
    Otherwise none below ``inline_below`` images; else, on a CPU one (the cores run the
    network), and on an accelerator this process's share of the CPU cores, less the core it
    runs on (an accelerator is fed only as fast as the images are decoded)."""
    if workers is not None:
        return workers
    if n_images < inline_below:
        return 0
    if device.type == "cpu":
        return 1
    return max(1, usable_cores() // processes_on_this_machine() - 1)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
