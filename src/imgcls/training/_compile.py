"""Running the fine-tune's training steps through ``torch.compile``.

The compiled module shares its parameters with the one it wraps, so the optimiser, the
checkpoints and the saved model keep seeing the plain module. Batches are marked as having a
dynamic first dimension: the last, smaller batch of an epoch reuses the compiled graph
instead of compiling a second one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from imgcls.errors import ConfigError, first_line

log = logging.getLogger(__name__)


def compiled(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` compiled (inductor); the first step compiles, the later ones reuse it."""
    if device.type == "cpu":
        # The eager CPU path has its own fast path (training._fast_path) that the compiled
        # kernels do not match: a CPU run gains nothing for the compile time.
        log.warning(
            "compile: on a CPU the compiled training step is slower than imgcls's own CPU fast "
            "path, which the compiler does not reproduce; --compile is meant for GPU runs"
        )
    log.info("compile: the first training step compiles the network (this takes a while)")
    return torch.compile(module)


def dynamic_batch(*batches: torch.Tensor) -> None:
    """Mark the batch dimension dynamic (a size of 1 stays specialised, as torch requires)."""
    for batch in batches:
        torch._dynamo.maybe_mark_dynamic(batch, 0)


@contextlib.contextmanager
def compile_failures() -> Iterator[None]:
    """A failed compilation (only a compiled step can fail so) as a one-line error that says
    how to go on without it."""
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        raise ConfigError(
            f"`compile=True`: torch.compile could not compile the network ({first_line(exc)}); "
            "train without --compile (on a CPU it needs a C++ compiler, on a GPU Triton)"
        ) from None
