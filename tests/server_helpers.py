"""Start ``imgcls serve`` in a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(model: Path, *extra: str, timeout: float = 90.0, log: Path | None = None) -> Iterator[str]:
    """The server's URL while it runs; its output (the access log included) goes to ``log``, a
    file rather than a pipe, which would stall the server once full."""
    with tempfile.TemporaryDirectory() as scratch:
        log = log or Path(scratch) / "server.log"
        with log.open("w") as output:
            yield from _serve(model, extra, timeout, output, log)


def _serve(model: Path, extra: tuple[str, ...], timeout: float, output: IO[str], log: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "imgcls", "serve", str(model), "--port", str(port), *extra]
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.3)
        yield url
        assert process.poll() is None, "the server died"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
