"""What the launcher (torchrun, SLURM) tells a process about its place in a run.

Torch-free, so that code running before torch loads (the decode-ahead child) can ask too.
"""

from __future__ import annotations

import os

from imgcls.errors import ConfigError


def environment_ranks() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's or SLURM's variables, or ``None``."""
    env = os.environ
    try:
        if "WORLD_SIZE" in env and "RANK" in env:
            return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
        if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and int(env["SLURM_NTASKS"]) > 1:
            return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    except ValueError as exc:
        raise ConfigError(f"cannot read the rank from the environment: {exc}") from None
    return None


def processes_on_this_machine() -> int:
    """How many processes of this run share this machine (torchrun's ``LOCAL_WORLD_SIZE``,
    SLURM's ``SLURM_NTASKS_PER_NODE`` such as ``4`` or ``4(x2)``); 1 when launched alone."""
    env = os.environ
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = env.get(name, "").split("(", 1)[0].split(",", 1)[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1
