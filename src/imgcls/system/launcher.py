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
