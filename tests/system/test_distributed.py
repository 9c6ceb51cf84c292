"""Training under torchrun: real processes in a real Gloo group on this CPU, tiny backbones.

Each test starts ``python -m torch.distributed.run`` (torchrun) or two ranks by hand, as a
user does, and checks what one process would give: the same scores for the saved model,
features that a later single-process run finds in the cache, an exact resume, and an error
instead of a hang when a rank stops answering.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imgcls
from imgcls._files import CHECKPOINT_FILE
from imgcls.cli.main import main
from imgcls.config import TrainConfig
from imgcls.errors import ConfigError
from imgcls.system.distributed import SINGLE, Ranks
from tests.conftest import TINY_ARGS, across_kernels, write_class_folders
from tests.server_helpers import free_port

ENV = {**os.environ, "IMGCLS_NO_REEXEC": "1", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _train_args(data: Path, run: Path, cache: Path, *extra: str) -> list[str]:
    return ["-m", "imgcls", "train", str(data), "-o", str(run), *TINY_ARGS, "--workers", "0",
            "--cache-dir", str(cache), *extra]  # fmt: skip


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "imgcls:" in line)
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("ddp") / "colours", per_class=24)


def _split_counts(run: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in csv.DictReader((run / "splits.csv").open()):
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    return counts


def test_torchrun_fine_tune_writes_one_run_that_scores_as_one_process_scores_it(data, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = _train_args(data, run, cache, "--strategy", "finetune", "--epochs", "2", "--test-fraction", "0.2")
    done = _torchrun(*args)
    assert "[rank 1]" not in done.stderr  # rank 1 reports errors only
    assert done.stdout.count("val accuracy") == 1  # one summary, from rank 0
    assert CHECKPOINT_FILE not in {p.name for p in run.iterdir()}
    assert [int(r["epoch"]) for r in csv.DictReader((run / "history.csv").open())] == [0, 1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    counts = _split_counts(run)
    clf = imgcls.load(run)
    # The ranks scored their shards (one thread each, the trained top on cached maps), this
    # process scores the folded network on images: other kernels, so the log loss agrees to the
    # precision's rounding (fp32 ~1e-6); scores gathered against the wrong images turn a
    # ~1e-4 loss into one of order 1.
    rel = across_kernels(clf.config["precision"], 1e-4)
    for split in ("val", "test"):
        # Exact: every image scored once (shards unpadded, gathered by index), not an average
        # of the ranks' accuracies; the saved model scores the same in one process (a dozen
        # confident images: no near tie for the rounding to flip).
        assert metrics[split]["n"] == counts[split]
        report = clf.evaluate(data, split=split).report
        assert report["accuracy"] == pytest.approx(metrics[split]["accuracy"])
        assert report["log_loss"] == pytest.approx(metrics[split]["log_loss"], rel=rel, abs=1e-6)


def test_torchrun_probe_shares_its_features_through_the_cache(data, tmp_path, caplog):
    cache = tmp_path / "cache"
    _torchrun(*_train_args(data, tmp_path / "ddp", cache))
    shards = list((cache / "features").glob("*/*.npz"))
    assert len(shards) >= 2  # each rank wrote its own share
    caplog.set_level("INFO")
    alone = imgcls.train(data, tmp_path / "alone", config=_tiny(cache))
    assert "features: 0 computed, 72 from cache" in caplog.text
    distributed = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # The same cached features, but the head's L-BFGS (float32 products) runs with one thread
    # per rank there and two here: BLAS sums in another order, and the solver stops at gradient
    # entries <= 1e-4, so the same optimum to ~1e-5. A head fitted on other features or rows
    # misses it by > 1e-2.
    assert alone.metrics["val"]["log_loss"] == pytest.approx(distributed["val"]["log_loss"], rel=1e-4)


def _tiny(cache: Path) -> TrainConfig:
    return TrainConfig(
        backbone="test_efficientnet", pretrained=False, input_size=64, workers=0, cache_dir=str(cache)
    )


IMAGE_FT = ["--strategy", "finetune", "--unfreeze", "all", "--augment", "light", "--seed", "2"]


def test_a_killed_torchrun_fine_tune_resumes_under_torchrun_to_the_uninterrupted_result(data, tmp_path):
    cache = tmp_path / "cache"
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    long = ["--epochs", "5", "--patience", "5"]
    _torchrun(*_train_args(data, straight, cache, *IMAGE_FT, *long))
    process = subprocess.Popen(
        [*TORCHRUN, *_train_args(data, stopped, cache, *IMAGE_FT, *long)],
        env=ENV,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(stopped / CHECKPOINT_FILE, process)
    for pid in [process.pid, *_descendants(process.pid)]:  # torchrun and both ranks: a lost node
        os.kill(pid, signal.SIGKILL)
    process.wait(30)
    assert not (stopped / "metrics.json").exists(), "the run finished before it was killed"
    _torchrun("-m", "imgcls", "train", "--resume", str(stopped))

    def table(run: Path) -> list[list[str]]:
        return [line.split(",")[:5] for line in (run / "history.csv").read_text().splitlines()]

    # Exact: the resume replays both ranks' kernels in the same order on this machine.
    assert table(stopped) == table(straight)
    expected = json.loads((straight / "metrics.json").read_text())["val"]
    assert json.loads((stopped / "metrics.json").read_text())["val"] == expected


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"no {path.name} appeared"
        time.sleep(0.05)


def test_a_rank_that_stops_answering_ends_the_run_with_an_error_not_a_hang(data, tmp_path):
    run = tmp_path / "run"
    args = _train_args(data, run, tmp_path / "cache", *IMAGE_FT, "--epochs", "200", "--patience", "200")
    port = str(free_port())
    ranks = []
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        command = [sys.executable, *args, "--dist-timeout", "5s"]
        ranks.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    try:
        _wait_for(run / CHECKPOINT_FILE, ranks[0])
        os.kill(ranks[1].pid, signal.SIGSTOP)  # alive but silent: the case a timeout exists for
        stopped = time.monotonic()
        _, stderr = ranks[0].communicate(timeout=120)
        waited = time.monotonic() - stopped
    finally:
        ranks[1].kill()
        ranks[1].wait(30)
    assert ranks[0].returncode == 2, stderr[-2000:]
    assert "rank 0 of 2:" in stderr and "did not answer within 5 s" in stderr
    assert "Traceback" not in stderr
    assert waited < 60


def test_ranks_split_rows_without_gaps_and_pad_training_order_evenly():
    import torch

    world = [Ranks(rank, 3, rank) for rank in range(3)]
    shards = [r.shard(10).tolist() for r in world]
    assert sorted(row for shard in shards for row in shard) == list(range(10))  # each row once
    order = torch.arange(7)
    taken = [r.take(order) for r in world]
    assert {len(t) for t in taken} == {3}  # the same number of steps on every rank
    assert set(torch.cat(taken).tolist()) == set(range(7))
    assert SINGLE.take(order) is order and SINGLE.map_rows(4, lambda rows: rows * 2).tolist() == [0, 2, 4, 6]


def test_commands_other_than_train_refuse_to_run_under_torchrun(monkeypatch, image_folder, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["inspect-data", str(image_folder)]) == 2
    assert "only `imgcls train` runs under torchrun" in capsys.readouterr().err


def test_torchrun_refuses_to_run_without_the_cache_or_beside_ray():
    from imgcls.data.records import DatasetScan
    from imgcls.training.run_plan import plan_run

    scan = DatasetScan(root=Path("."), classes=[], records=[], source=".", format="folder")
    with pytest.raises(ConfigError, match="feature cache"):
        plan_run(scan, TrainConfig(use_cache=False), Ranks(0, 2, 0))
    with pytest.raises(ConfigError, match="each spread the feature extraction"):
        plan_run(scan, TrainConfig(engine="ray"), Ranks(0, 2, 0))
    with pytest.raises(ConfigError, match="dist_timeout"):
        TrainConfig(dist_timeout=0)


def test_torchrun_reads_webdataset_shards_whole_and_refuses_too_few(data, tmp_path):
    from imgcls.data.convert import convert
    from imgcls.data.sources import open_source

    shards = tmp_path / "shards"
    convert(open_source(data), shards, to="webdataset", shard_samples=20)  # 72 images, 4 shards
    cache = tmp_path / "cache"
    _torchrun(*_train_args(shards, tmp_path / "ddp", cache))
    alone = imgcls.train(shards, tmp_path / "alone", config=_tiny(tmp_path / "fresh"))
    distributed = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # Features computed again here (two threads, other batches) and the head fitted again: fp32
    # ~1e-7 on the features, then the solver's ~1e-5 (above); bf16 rounds at 7.8e-3. Shards
    # read twice or skipped change the training rows: > 1e-2.
    rel = across_kernels(alone.config["precision"], 1e-4)
    assert alone.metrics["val"]["log_loss"] == pytest.approx(distributed["val"]["log_loss"], rel=rel)

    args = [*_train_args(shards, tmp_path / "refused", cache)]
    args[args.index("--workers") + 1] = "3"
    done = subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode != 0
    assert "4 shards for 2 processes x 3 loader workers: each needs a shard of its own" in done.stderr
