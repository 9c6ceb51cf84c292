"""Several processes training one model: the process group that torchrun (or SLURM) starts.

``join`` reads the rank and world size from the environment (torchrun's ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; SLURM's ``SLURM_PROCID``, ``SLURM_NTASKS`` and
``SLURM_LOCALID`` with ``MASTER_ADDR``) and joins the group: NCCL on CUDA, one device per
local rank; Gloo on a CPU. Without those variables it returns ``SINGLE`` and nothing in a run
changes. Every collective here has the group's timeout, and a failed one becomes a
``DistributedError`` that says which rank saw what: a rank that died or hangs ends the run
with a message instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from imgcls.config import DIST_TIMEOUT_S
from imgcls.errors import ConfigError, DistributedError, first_line
from imgcls.system.devices import resolve_device
from imgcls.system.launcher import environment_ranks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: rank ``rank`` of ``world_size`` (``SINGLE``: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DIST_TIMEOUT_S

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes the run directory."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def shard(self, n: int) -> torch.Tensor:
        """This rank's rows of ``n``: every ``world_size``-th, unpadded (ranks differ by at most one)."""
        return torch.arange(self.rank, n, self.world_size)

    def take(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of a shared ``order``, padded from its start to a multiple of the world
        size (as ``DistributedSampler`` pads), so that every rank runs the same number of steps."""
        if not self.active or not len(order):
            return order
        pad = -len(order) % self.world_size
        padded = torch.cat([order, order.repeat(pad // len(order) + 1)[:pad]])
        return padded[self.rank :: self.world_size]

    def barrier(self, why: str) -> None:
        """Wait until every rank is here (``why`` names the point, for the error message)."""
        if self.active:
            with self.failures(why):
                torch.distributed.barrier()

    def any(self, flag: bool, why: str) -> bool:
        """Whether ``flag`` holds on any rank, so that every rank takes the same branch."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], device=_collective_device())
        with self.failures(why):
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def sums(self, values: list[float], why: str) -> list[float]:
        """Each of ``values`` summed over the ranks."""
        if not self.active:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        with self.failures(why):
            torch.distributed.all_reduce(total)
        return total.tolist()

    def map_rows(
        self, n: int, compute: Callable[[torch.Tensor], torch.Tensor], why: str = "gathering results"
    ) -> torch.Tensor:
        """``compute(rows)`` for the rows ``0..n-1``, each rank computing its ``shard``; every rank
        gets the whole result in row order. Exact: shards are unpadded and gathered by row index,
        so no row is counted twice or averaged between ranks."""
        if not self.active:
            return compute(torch.arange(n))
        mine = self.shard(n)
        part = compute(mine).cpu() if len(mine) else None
        gathered: list[Any] = [None] * self.world_size
        with self.failures(why):
            torch.distributed.all_gather_object(gathered, (mine, part))
        pieces = [(rows, values) for rows, values in gathered if values is not None]
        result = torch.empty((n, *pieces[0][1].shape[1:]), dtype=pieces[0][1].dtype)
        for rows, values in pieces:
            result[rows] = values
        return result

    def broadcast_module(self, module: nn.Module, why: str) -> None:
        """Make every rank's parameters and buffers rank 0's."""
        if not self.active:
            return
        device = _collective_device()
        with self.failures(why), torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                sent = tensor.data.to(device)
                torch.distributed.broadcast(sent, src=0)
                tensor.data.copy_(sent)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` for training steps: under DistributedDataParallel when there are several
        ranks. Buffers are not re-broadcast at every step: normalisation statistics stay frozen
        while fine-tuning, so they never change."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        with self.failures("setting up DistributedDataParallel"):
            return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)

    @contextlib.contextmanager
    def failures(self, what: str) -> Iterator[None]:
        """Turn a failed collective (a rank died, or hung past the timeout) into a clear error."""
        try:
            yield
        except RuntimeError as exc:
            if not self.active or not _from_the_group(exc):
                raise
            raise DistributedError(
                f"{self}: {what} failed: another process stopped or did not answer within "
                f"{self.timeout_s:g} s ({first_line(exc)}); the last checkpoint, if any, resumes the run"
            ) from None


SINGLE = Ranks()

# What the backends' transport errors say (a DDP step reports Gloo's as a plain RuntimeError).
_TRANSPORT_WORDS = ("gloo", "nccl", "timed out", "connection closed", "connection reset")


def _collective_device() -> torch.device:
    """Where tensors of a collective must be: NCCL reduces GPU tensors only, Gloo host ones."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _from_the_group(exc: RuntimeError) -> bool:
    """Whether ``exc`` comes from the process group (another rank), not from this rank's own code."""
    if isinstance(exc, torch.distributed.DistError):
        return True
    message = str(exc).lower()
    return any(word in message for word in _TRANSPORT_WORDS)


def join(device_name: str, timeout_s: float = DIST_TIMEOUT_S) -> Ranks:
    """This process's ``Ranks``, joining the process group the environment describes (once);
    ``device_name`` (as ``--device`` takes it) decides the backend, and is resolved only then."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        return Ranks(rank, world, local, timeout_s)
    found = environment_ranks()
    if found is None or found[1] <= 1:
        return SINGLE
    rank, world, local = found
    ranks = Ranks(rank, world, local, timeout_s)
    device = resolve_device(device_name)
    if device.type == "mps":
        raise ConfigError("distributed training runs on CUDA (NCCL) or on CPUs (Gloo), not on MPS")
    if "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            f"{ranks} found in the environment but no MASTER_ADDR: start with torchrun, or set "
            "MASTER_ADDR (and MASTER_PORT) to the first node's address"
        )
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    with ranks.failures(
        f"joining the process group at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    ):
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("distributed: %d processes (%s); this is rank %d", world, backend, rank)
    return ranks
