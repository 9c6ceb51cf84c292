"""Every command of the README's quick start runs, as written, on a small generated folder."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import COLOURS, REPO, make_image, write_class_folders

README = REPO / "README.md"
pytestmark = pytest.mark.slow  # the default backbone with its real weights


def _block(heading: str, language: str) -> str:
    """The first ``language`` code block after ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block under {heading!r} in README.md"
    return match.group(1)


def quick_start_commands() -> list[list[str]]:
    lines = [line.split("#")[0].strip() for line in _block("## Quick start", "bash").splitlines()]
    return [shlex.split(line) for line in lines if line]


def _workspace(root: Path) -> Path:
    """What the quick start assumes: ``photos/`` with one sub-folder per class, and ``new.jpg``."""
    write_class_folders(root / "photos", per_class=12)
    make_image(COLOURS["green"], seed=4242, size=64).save(root / "new.jpg")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert command[0] == "imgcls"
    result = subprocess.run(
        [sys.executable, "-m", "imgcls", *command[1:]], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stderr}"
    return result


def _serve(command: list[str], cwd: Path) -> None:
    """Start the server (on a free port, not the README's, which may be taken), classify one
    upload through it, and stop it."""
    port = str(_free_port())
    command = [port if i and command[i - 1] == "--port" else arg for i, arg in enumerate(command)]
    log = (cwd / "serve.log").open("w")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(
        [sys.executable, "-m", "imgcls", *command[1:]], cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, (cwd / "serve.log").read_text()
                assert time.monotonic() < deadline, "the server did not start within 2 minutes"
                time.sleep(0.5)
        body, boundary = _multipart((cwd / "new.jpg").read_bytes())
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer, answer
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "imgclsreadmetest"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="new.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), boundary


def test_the_quick_start_lists_the_main_commands():
    verbs = [command[1] for command in quick_start_commands()]
    assert {"train", "evaluate", "predict", "cv", "export", "serve"} <= set(verbs)


def test_every_quick_start_command_runs(tmp_path):
    root = _workspace(tmp_path)
    outputs = {}
    for command in quick_start_commands():
        if command[1] == "serve":
            _serve(command, root)
            continue
        outputs[shlex.join(command)] = _run(command, root).stdout
    assert (root / "runs" / "photos" / "model" / "model.onnx").is_file()
    assert (root / "runs" / "photos-ft" / "model" / "config.json").is_file()
    predictions = [out for cmd, out in outputs.items() if cmd.startswith("imgcls predict runs/photos")]
    assert predictions and "new.jpg" in predictions[0]


def test_the_python_quick_start_runs(tmp_path, monkeypatch):
    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    namespace: dict = {}
    exec(compile(_block("## Python", "python"), str(README), "exec"), namespace)
    assert namespace["clf"].classes == sorted(COLOURS)
    assert set(namespace["cv"].summary["accuracy"]) >= {"mean", "std", "ci95"}
