"""Progress: a bar with rate and ETA on a terminal; plain lines with percentage and ETA in logs."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios

from tests.conftest import TINY_ARGS, run_cli


def _in_a_terminal(*args: str, python: str | None = None) -> str:
    """Run ``imgcls ARGS`` (or the ``python`` code) with a pseudo-terminal as its standard
    streams; what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    command = [sys.executable, "-c", python] if python else [sys.executable, "-m", "imgcls", *args]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    process.wait(60)
    os.close(master)
    assert process.returncode == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


def test_a_terminal_gets_a_bar_with_rate_and_eta(image_folder, tmp_path):
    args = ["train", str(image_folder), "--output", str(tmp_path / "run"), "--no-cache", *TINY_ARGS]
    drawn = _in_a_terminal(*args)
    bar = next(
        line
        for line in drawn.replace("\r", "\n").splitlines()
        if "extracting features" in line and "36/36" in line
    )
    assert "100%|" in bar and "<" in bar and "images/s" in bar  # tqdm: elapsed<remaining, rate


def test_python_in_a_terminal_shows_the_bar_without_configuring_logging(image_folder, tmp_path):
    code = (
        "import imgcls, logging\n"
        f"imgcls.train({str(image_folder)!r}, {str(tmp_path / 'run')!r}, backbone={TINY_ARGS[1]!r}, "
        "pretrained=False, input_size=64, use_cache=False)\n"
        "assert not logging.getLogger().handlers  # the library configured no logging\n"
    )
    drawn = _in_a_terminal(python=code)
    assert "extracting features" in drawn and "36/36" in drawn and "images/s" in drawn
    captured = subprocess.run(
        [sys.executable, "-c", code.replace("run'", "run2'")], capture_output=True, text=True
    )
    assert captured.returncode == 0, captured.stderr
    assert "extracting features" not in captured.stderr and "\r" not in captured.stderr  # no one watches


def test_verbose_and_quiet_choose_for_one_python_call(image_folder, tmp_path):
    settings = f"backbone={TINY_ARGS[1]!r}, pretrained=False, input_size=64, use_cache=False"
    code = (
        "import imgcls, logging, sys\n"
        f"imgcls.train({str(image_folder)!r}, {str(tmp_path / 'loud')!r}, verbose=True, {settings})\n"
        "assert not logging.getLogger().handlers and not logging.getLogger('imgcls').handlers\n"
        "print('=== quiet ===', file=sys.stderr)\n"
        "imgcls.show_progress(True)\n"
        f"imgcls.train({str(image_folder)!r}, {str(tmp_path / 'quiet')!r}, verbose=False, {settings})\n"
        f"imgcls.cross_validate({str(image_folder)!r}, folds=2, verbose=False, {settings})\n"
        "assert logging.getLogger('imgcls').level == logging.NOTSET\n"
    )
    captured = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert captured.returncode == 0, captured.stderr
    loud, quiet = captured.stderr.split("=== quiet ===\n")
    # not a terminal, yet verbose=True draws the bar, and says what the CLI says
    assert "extracting features: 100%|" in loud and "36/36" in loud
    assert "saved run to" in loud and "logistic head: C=" in loud
    # neither bars nor notes, whatever show_progress says: warnings only
    assert quiet and all(line.startswith("NO PRETRAINED WEIGHTS") for line in quiet.splitlines())


def test_a_log_gets_percentage_lines_without_terminal_control_characters(image_folder, tmp_path):
    logged = run_cli(
        "train", str(image_folder), "--output", str(tmp_path / "run"), "--no-cache", *TINY_ARGS
    ).stderr
    assert "extracting features: 36/36 images (100%" in logged and "ETA" in logged
    assert "\r" not in logged and "\x1b[" not in logged


FINETUNE_ARGS = ["--strategy", "finetune", "--epochs", "2", "--workers", "0"]


def test_a_fine_tune_in_a_terminal_gets_one_bar_for_the_whole_run(image_folder, tmp_path):
    args = ["train", str(image_folder), "--output", str(tmp_path / "run"), *TINY_ARGS, *FINETUNE_ARGS]
    drawn = _in_a_terminal(*args).replace("\r", "\n").splitlines()
    bars = [line for line in drawn if line.startswith("fine-tuning:") and "|" in line]
    assert bars and "100%|" in bars[-1] and " batches" in bars[-1] and "<" in bars[-1]
    total = bars[-1].split("/")[1].split()[0]
    assert all(f"/{total} " in bar for bar in bars)  # both epochs' batches, counted as one run
    assert any("val_acc" in line for line in drawn)  # the epoch table is written above the bar


def test_a_fine_tune_logs_percentage_lines_for_the_whole_run(image_folder, tmp_path):
    logged = run_cli(
        "train", str(image_folder), "--output", str(tmp_path / "run"), *TINY_ARGS, *FINETUNE_ARGS
    ).stderr
    assert "fine-tuning: " in logged and " batches (100%" in logged and "ETA" in logged
    assert "\r" not in logged and "\x1b[" not in logged


def test_cross_validation_reports_its_folds(image_folder):
    logged = run_cli("cv", str(image_folder), *TINY_ARGS, "--folds", "3").stderr
    assert f"cross-validating {TINY_ARGS[1]} (linear head): 3/3 folds (100%" in logged
