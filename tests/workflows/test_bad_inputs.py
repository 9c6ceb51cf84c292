"""The bad-input corpus (tests/bad_inputs.py) through every surface that reads images: each
file is used or reported with a reason, never a traceback, and the exit code says whether
anything could be read."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.bad_inputs import UNREADABLE, write_corpus
from tests.conftest import TINY_ARGS, write_class_folders
from tests.server_helpers import running_server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[Path], set[Path]]:
    folder = tmp_path_factory.mktemp("corpus") / "corpus"
    used, reported = write_corpus(folder)
    assert len(used) + len(reported) >= 40
    return folder, used, reported


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, corpus) -> tuple[Path, Path]:
    """A run trained on colour classes with the whole corpus inside one class folder."""
    folder, _, _ = corpus
    root = tmp_path_factory.mktemp("train-on-corpus")
    data = write_class_folders(root / "data")
    (data / "red" / "corpus").mkdir()
    for path in folder.iterdir():
        target = data / "red" / "corpus" / path.name
        if path.is_symlink():
            target.symlink_to(path.readlink())
        else:
            target.write_bytes(path.read_bytes())
    run = root / "run"
    done = _imgcls("train", str(data), "-o", str(run), *TINY_ARGS, "--workers", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    return data, run


def _imgcls(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, errors="replace", timeout=600
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def _names(paths: set[Path]) -> set[str]:
    return {p.name for p in paths}


def test_train_uses_every_readable_file_and_lists_every_other_in_skipped_csv(corpus, trained):
    _, used, reported = corpus
    _, run = trained
    with (run / "skipped.csv").open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        skipped = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(handle)}
    assert set(skipped) == _names(reported)
    assert all(reason for reason in skipped.values())
    with (run / "splits.csv").open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        listed = {Path(row["path"]).name for row in csv.DictReader(handle) if "/corpus/" in row["path"]}
    assert listed == _names(used)


def test_predict_and_batch_prediction_answer_for_every_file(corpus, trained, tmp_path):
    folder, used, reported = corpus
    _, run = trained
    plain = _imgcls("predict", str(run), str(folder), "--json", "--runtime", "torch")
    assert plain.returncode == 0  # some inputs were readable
    answers = json.loads(plain.stdout)
    assert len(answers) == len(used)
    for name in _names(reported):
        assert name in plain.stderr

    rows = tmp_path / "rows.csv"
    batch = _imgcls("predict", str(run), str(folder), "--output", str(rows), "--runtime", "torch")
    assert batch.returncode == 0
    with rows.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        written = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert set(written) == _names(used) | _names(reported)  # every file has its row
    assert {name for name, row in written.items() if row["error"]} == _names(reported)
    assert all(written[name]["label"] for name in _names(used))

    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for name in ("empty.jpg", "text.jpg", "truncated.png"):
        (only_bad / name).write_bytes(UNREADABLE[name]())
    nothing = _imgcls("predict", str(run), str(only_bad))
    assert nothing.returncode == 1 and "empty.jpg" in nothing.stderr  # nothing could be read


def test_the_server_answers_every_corpus_file_without_a_server_error(corpus, trained):
    _, used, reported = corpus
    _, run = trained
    with running_server(run, "--runtime", "torch") as url:
        for path in sorted(used | reported):
            if path.is_symlink():
                continue  # an upload is bytes: a link has none to send
            answer = httpx.post(f"{url}/predict", files=[("file", ("upload", path.read_bytes()))], timeout=60)
            assert answer.status_code < 500, (path.name, answer.text)
            if path in used:
                assert answer.status_code == 200 and answer.json()[0]["predictions"], path.name
            else:
                assert 400 <= answer.status_code < 500 and answer.json()["detail"], path.name
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
