"""Streaming batch prediction: CSV/JSON Lines, unreadable files listed, resumable after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.sources.folders import expand_inputs
from imgcls.inference.batch import predict_to_file
from tests.conftest import across_kernels, make_image, shared_dataset

TINY = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64)


@pytest.fixture
def model(image_folder, tmp_path):
    imgcls.train(image_folder, tmp_path / "run", config=TINY)
    return tmp_path / "run"


def test_csv_and_jsonl_rows_with_unreadable_files(model, image_folder):
    (image_folder / "red" / "broken.jpg").write_text("not a jpeg")
    clf = imgcls.load(model)
    paths = expand_inputs([str(image_folder)])
    csv_out, jsonl_out = model / "out.csv", model / "out.jsonl"
    summary = predict_to_file(clf, paths, csv_out, top_k=2)
    assert summary.written == 37 and summary.unreadable == 1
    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == 37 and len({r["path"] for r in rows}) == 37
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert "not an image" in broken["error"] and broken["label"] == ""
    good = next(r for r in rows if not r["error"])
    assert len(json.loads(good["top_k"])) == 2
    predict_to_file(clf, paths, jsonl_out, top_k=2)
    lines = [json.loads(line) for line in jsonl_out.read_text().splitlines()]
    assert set(lines[0]) == {"path", "predictions"} and len(lines[0]["predictions"]) == 2


def test_rerun_after_a_torn_write_finishes_without_duplicates(model, image_folder):
    clf = imgcls.load(model)
    paths = expand_inputs([str(image_folder)])
    out = model / "out.jsonl"
    predict_to_file(clf, paths[:10], out)
    with out.open("a") as handle:
        handle.write('{"path": "torn')  # what a kill in mid-write leaves
    summary = predict_to_file(clf, paths, out)
    assert summary.skipped_existing == 10 and summary.written == 26
    written = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(written) == sorted(map(str, paths))


def _rows(path) -> int:
    return max(0, sum(1 for _ in path.open()) - 1) if path.exists() else 0


def _kill_midway_and_resume(model, data, out, total, kill_after) -> list[tuple[int, float]]:
    """Run, SIGKILL once ``kill_after`` rows are written, rerun; return (rows, RSS MB) samples."""
    command = [sys.executable, "-m", "imgcls", "predict", str(model), str(data), "--output", str(out), "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss = []
    deadline = time.monotonic() + 600
    while process.poll() is None and _rows(out) < kill_after and time.monotonic() < deadline:
        rss.append((_rows(out), _rss_mb(process.pid)))
        time.sleep(0.02)  # a cached chunk of 512 rows can take well under a tenth of a second
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 0 < _rows(out) < total, "the run should have been killed midway"
    subprocess.run(command, check=True, capture_output=True)
    return rss


def _rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):  # noqa: SIM115
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def test_killed_batch_run_resumes_without_duplicates(model, tmp_path):
    data = tmp_path / "many"
    for i in range(1500):
        folder = data / f"part{i // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        make_image((i % 255, 80, 160), seed=i).save(folder / f"{i:05d}.png")
    out = tmp_path / "predictions.csv"
    _kill_midway_and_resume(model, data, out, total=1500, kill_after=600)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1500 and len({r["path"] for r in rows}) == 1500


@pytest.mark.slow
def test_ten_thousand_cifar_images_flat_memory_and_resume(model, tmp_path):
    data = shared_dataset("cifar10_subset") / "test"
    out = tmp_path / "cifar.csv"
    rss = _kill_midway_and_resume(model, data, out, total=10_000, kill_after=6000)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10_000 and len({r["path"] for r in rows}) == 10_000
    assert not any(r["error"] for r in rows)
    # After the first chunk (model loaded, buffers allocated) memory must stay flat.
    steady = [mb for rows_done, mb in rss if rows_done >= 1024]
    assert len(steady) >= 3, rss
    assert max(steady) - steady[0] < 100, f"memory grew from {steady[0]:.0f} MB to {max(steady):.0f} MB"


def test_tta_reaches_batch_prediction(model, image_folder):
    clf = imgcls.load(model)
    paths = expand_inputs([str(image_folder / "red")])[:3]
    plain, averaged = model / "plain.jsonl", model / "tta.jsonl"
    predict_to_file(clf, paths, plain)
    predict_to_file(clf, paths, averaged, tta=True)
    expected = [clf.predict(p, tta=True).probability for p in paths]
    got = [json.loads(line)["predictions"][0]["probability"] for line in averaged.read_text().splitlines()]
    # Batches of 3 there, of 1 here: kernels may differ (fp32 ~1e-7 on a probability); a view
    # left out of the average or another image's scores move it by > 1e-2.
    assert got == pytest.approx(expected, abs=across_kernels(clf.config["precision"], 1e-5))
    assert plain.read_text() != averaged.read_text()


def test_a_complete_last_row_without_newline_is_rewritten_not_lost(model, image_folder):
    clf = imgcls.load(model)
    paths = expand_inputs([str(image_folder / "red")])[:4]
    out = model / "rows.jsonl"
    predict_to_file(clf, paths[:2], out)
    out.write_text(out.read_text().rstrip("\n"))  # killed right before the newline
    predict_to_file(clf, paths, out)
    written = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(written) == sorted(map(str, paths))


def test_a_torn_quoted_row_is_dropped_and_a_path_spelt_otherwise_is_not_predicted_twice(
    model, image_folder, monkeypatch
):
    from pathlib import Path

    clf = imgcls.load(model)
    odd = image_folder / "red" / "two\nlines.png"  # a quoted CSV field with a newline of its own
    make_image((200, 30, 30), seed=5).save(odd, "PNG")
    paths = expand_inputs([str(image_folder)])
    out = model / "out.csv"
    predict_to_file(clf, [odd], out)
    complete = out.read_bytes()
    with out.open("ab") as handle:
        # Torn right after the newline inside the quoted path: the file ends with a newline, yet
        # its last row is unfinished.
        handle.write(complete.splitlines(keepends=True)[1])
    monkeypatch.chdir(image_folder)
    relative = [Path(os.path.relpath(p)) for p in paths]  # the same files, spelt relative
    summary = predict_to_file(clf, relative, out)
    assert summary.skipped_existing == 1 and summary.written == len(paths) - 1
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == len(paths) and {os.path.abspath(r["path"]) for r in rows} == set(map(str, paths))
