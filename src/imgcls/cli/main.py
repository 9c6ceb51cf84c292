"""The ``imgcls`` command: a thin client of the library.

Nothing heavy is imported at module level, so ``imgcls --help`` starts instantly; each
command imports what it needs. ``COMMANDS`` is the one table of commands; their flags and
handlers live in ``train_commands``, ``model_commands``, ``data_commands`` and
``embed_commands``. Library errors (``ImgclsError``) are printed without a traceback and exit
with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, NoReturn

from imgcls.cli._options import PROCESS_STARTED
from imgcls.cli.data_commands import add_convert, add_doctor, run_convert, run_doctor
from imgcls.cli.embed_commands import add_embed, add_similar, run_embed, run_similar
from imgcls.cli.model_commands import (
    add_demo,
    add_evaluate,
    add_export,
    add_models,
    add_predict,
    add_serve,
    run_demo,
    run_evaluate,
    run_export,
    run_models,
    run_predict,
    run_serve,
)
from imgcls.cli.train_commands import (
    add_compare,
    add_cv,
    add_inspect_data,
    add_train,
    run_compare,
    run_cv,
    run_inspect_data,
    run_train,
)

EXIT_USAGE = 2


EXIT_INTERRUPTED = 130


# glibc's malloc returns freed activation buffers to the OS and page-faults them back in on
# every forward pass; a large top pad and mmap threshold keep them, which makes CPU inference
# much faster (docs/performance.md). The setting has to be in the environment when the process starts.
ALLOCATOR_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=536870912"


_EXTRA_FOR_MODULE = {
    "torch": "train", "torchvision": "train", "timm": "train", "safetensors": "train", "sklearn": "train",
    "scipy": "train", "matplotlib": "train", "onnx": "train", "onnxruntime": "onnx",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve",
}  # fmt: skip


def entry() -> None:
    """Console-script entry point: tune the allocator (re-executing once), then run ``main``."""
    argv = sys.argv[1:]
    if _should_tune_allocator(argv):
        env = dict(os.environ, GLIBC_TUNABLES=ALLOCATOR_TUNABLES)
        os.execve(sys.executable, [sys.executable, "-m", "imgcls", *argv], env)
    _exit_now(main(argv))


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: finalising torch, timm, scikit-learn and
    matplotlib modules takes 1.2-1.7 s here, and every file is written and closed by now."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe: nothing to save
            stream.flush()
    os._exit(code)


def _should_tune_allocator(argv: Sequence[str]) -> bool:
    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ or os.environ.get("IMGCLS_NO_REEXEC"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    heavy = {name for name, command in COMMANDS.items() if command.runs_networks}
    return bool(heavy.intersection(argv))


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 is printed with escapes instead of crashing.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    parser = build_parser()
    args = parser.parse_args(argv)
    from imgcls.system.launcher import environment_ranks

    ranks = environment_ranks()
    rank = ranks[0] if ranks is not None and ranks[1] > 1 else None
    _configure_logging(args.verbose - args.quiet, rank)
    if rank is not None and args.command != "train":
        print(
            f"imgcls: error: only `imgcls train` runs under torchrun; run `imgcls {args.command}` "
            "as one process (`--engine ray` spreads predict over a cluster)",
            file=sys.stderr,
        )
        return EXIT_USAGE

    with _outside_root_allowed(getattr(args, "allow_outside_root", False)):
        return _run(args, argv)


@contextlib.contextmanager
def _outside_root_allowed(allowed: bool) -> Iterator[None]:
    """``--allow-outside-root`` for this command: in the environment, so that the processes it
    starts (torchrun ranks) decide alike, and only while it runs (``main`` may be called again in
    the same process, from a notebook or a test)."""
    from imgcls.data.records import OUTSIDE_ROOT_ENV

    before = os.environ.get(OUTSIDE_ROOT_ENV)
    if allowed:
        os.environ[OUTSIDE_ROOT_ENV] = "1"
    try:
        yield
    finally:
        if allowed and before is None:
            os.environ.pop(OUTSIDE_ROOT_ENV, None)
        elif allowed and before is not None:
            os.environ[OUTSIDE_ROOT_ENV] = before


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from imgcls.errors import ImgclsError

    if getattr(args, "profile", False):
        from imgcls.system.profiling import PROFILE

        PROFILE.reset(started=PROCESS_STARTED)
    try:
        code = int(args.handler(args) or 0)
        if getattr(args, "profile", False):
            print(f"\nwhere the time went:\n{PROFILE.table()}", file=sys.stderr)
        return code
    except ImgclsError as exc:
        from imgcls.cli._options import as_flags

        print(f"imgcls: error: {as_flags(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"imgcls: interrupted{_after_interrupt(exc, argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a full disk, a read-only folder, a missing permission
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"imgcls: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        extra = _EXTRA_FOR_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"imgcls: error: '{args.command}' needs {exc.name}: pip install 'imgcls[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE


def _after_interrupt(exc: KeyboardInterrupt, argv: Sequence[str] | None) -> str:
    """What Ctrl-C kept of a training run and the exact command that goes on from there."""
    from imgcls.errors import RunInterrupted

    if not isinstance(exc, RunInterrupted):
        return ""
    if exc.resumable:
        command = shlex.join(["imgcls", "train", "--resume", str(exc.run_dir)])
        return f"; {exc.kept()}\ncontinue with: {command}"
    args = list(sys.argv[1:] if argv is None else argv)
    if not exc.removed and "--overwrite" not in args:
        args.append("--overwrite")
    return f"; {exc.kept()}\nstart again with: {shlex.join(['imgcls', *args])}"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and a pointer to ``--help`` instead of the whole
    usage block, a "did you mean" for a mistyped choice, and the usage-error exit status."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE, f"{self.prog}: error: {message}{_did_you_mean(message)}\nsee '{self.prog} --help'\n"
        )


def _did_you_mean(message: str) -> str:
    import re

    from imgcls.system.wording import close_names, join_names

    match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if match is None:
        return ""
    close = close_names(match.group(1), re.findall(r"'([^']*)'", match.group(2)))

    return f"; did you mean {join_names(close, last='or')}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imgcls",
        description="Train, evaluate and use image classifiers built on pretrained backbones.",
    )
    parser.add_argument("--version", action="version", version=f"imgcls {_version()}")
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    logging_options.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name, help=command.help, description=command.help, parents=[logging_options]
        )
        command.add(sub)
        sub.set_defaults(handler=command.run)
    return parser


def _configure_logging(verbosity: int, rank: int | None = None) -> None:
    """0: INFO (progress and notes), -1: WARNING, -2: ERROR, +1: DEBUG; all to stderr. On a
    terminal, progress is drawn as bars instead of logged (unless -q). Under torchrun, rank 0
    talks as one process would (its warnings hold for all); the others report errors only,
    marked with their rank."""
    from imgcls.system.progress import BarSafeHandler, show_bars

    if rank is not None and rank > 0:
        verbosity = min(verbosity, -2)
    show_bars(sys.stderr.isatty() and verbosity >= 0)
    level = {-1: logging.WARNING, 0: logging.INFO}.get(
        verbosity, logging.ERROR if verbosity < 0 else logging.DEBUG
    )
    from imgcls.cli._options import FlagFormatter

    handler = BarSafeHandler(sys.stderr)
    handler.setFormatter(FlagFormatter(f"[rank {rank}] %(message)s" if rank else "%(message)s"))
    # -v is imgcls's own details; libraries' debug lines (Pillow's chunk by chunk) stay out.
    handler.addFilter(lambda record: record.levelno >= logging.INFO or record.name.startswith("imgcls"))
    logging.basicConfig(level=level, handlers=[handler])


def _version() -> str:
    from imgcls.config import installed_version

    return installed_version()


Handler = Callable[[argparse.Namespace], int]


class Command(NamedTuple):
    """One ``imgcls`` command: how its flags are added, what runs it, its one-line help, and
    whether it runs networks (the allocator is tuned for those; see ``entry``)."""

    add: Callable[[argparse.ArgumentParser], None]
    run: Handler
    help: str
    runs_networks: bool = True


COMMANDS: dict[str, Command] = {
    "train": Command(add_train, run_train, "train a classifier on a folder of labelled images"),
    "evaluate": Command(add_evaluate, run_evaluate, "score a trained model on labelled images"),
    "predict": Command(
        add_predict, run_predict, "classify images with a trained model or a pretrained backbone"
    ),
    "export": Command(add_export, run_export, "export a model to ONNX or TorchScript, with a parity check"),
    "serve": Command(add_serve, run_serve, "serve a model over HTTP with a web page (FastAPI + uvicorn)"),
    "cv": Command(add_cv, run_cv, "k-fold cross-validation with mean, std and a 95%% interval"),
    "compare": Command(
        add_compare, run_compare, "cross-validate several backbones or heads on the same folds"
    ),
    "models": Command(
        add_models, run_models, "list the named backbones and where their weights are", runs_networks=False
    ),
    "inspect-data": Command(
        add_inspect_data,
        run_inspect_data,
        "class counts per split, and a picture grid of augmented training views",
        runs_networks=False,
    ),
    "convert": Command(
        add_convert,
        run_convert,
        "write a data set as class folders, a manifest or WebDataset shards",
        runs_networks=False,
    ),
    "doctor": Command(
        add_doctor,
        run_doctor,
        "find broken files, duplicates, leakage, likely mislabels and outliers in a data set",
    ),
    "embed": Command(
        add_embed, run_embed, "write every image's feature vector to a Parquet or numpy file, for other tasks"
    ),
    "similar": Command(add_similar, run_similar, "nearest neighbours of images in an embedding file"),
    "demo": Command(
        add_demo, run_demo, "train, evaluate and predict on built-in data (scikit-learn's digits)"
    ),
}


if __name__ == "__main__":
    entry()
