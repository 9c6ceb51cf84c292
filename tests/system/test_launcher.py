"""What torchrun and SLURM tell a process, read without torch."""

from __future__ import annotations

import pytest

from imgcls.errors import ConfigError
from imgcls.system.launcher import environment_ranks, processes_on_this_machine

LAUNCHER_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
)  # fmt: skip


@pytest.fixture
def env(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_alone_there_is_no_rank_and_one_process(env):
    assert environment_ranks() is None and processes_on_this_machine() == 1
    env.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is a process alone
    env.setenv("SLURM_PROCID", "0")
    assert environment_ranks() is None


def test_torchrun_and_slurm_give_rank_world_and_local_rank(env):
    env.setenv("RANK", "3")
    env.setenv("WORLD_SIZE", "4")
    env.setenv("LOCAL_RANK", "1")
    env.setenv("LOCAL_WORLD_SIZE", "2")
    assert environment_ranks() == (3, 4, 1) and processes_on_this_machine() == 2
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.delenv(name)
    env.setenv("SLURM_NTASKS", "8")
    env.setenv("SLURM_PROCID", "5")
    env.setenv("SLURM_LOCALID", "1")
    env.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert environment_ranks() == (5, 8, 1) and processes_on_this_machine() == 4


def test_a_rank_that_is_not_a_number_is_named(env):
    env.setenv("RANK", "first")
    env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="cannot read the rank from the environment"):
        environment_ranks()
