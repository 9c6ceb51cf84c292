"""The fine-tune strategy end to end with tiny backbones: artefacts, resume, time limit,
class weights, network splitting and the augmentation presets."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import imgcls
from imgcls._files import CHECKPOINT_FILE
from imgcls.cli.main import main
from imgcls.config import TrainConfig, parse_duration, parse_unfreeze
from imgcls.data.transforms import batch_mixer, train_transform
from imgcls.errors import ConfigError
from imgcls.models._network_split import split_network
from imgcls.training._loop import seed_epoch
from imgcls.training._tasks import ActivationTask, LabelledRows
from imgcls.training.checkpoint import load_checkpoint
from imgcls.workflows.inspect_data import HEADER_PX, LABEL_PX
from tests.conftest import TINY_ARGS, TINY_BACKBONE, across_kernels, write_class_folders

TINY_FT = TrainConfig(
    backbone=TINY_BACKBONE, pretrained=False, input_size=64, strategy="finetune", epochs=3, workers=0
)


def test_finetune_writes_history_curves_and_a_model_that_scores_as_reported(image_folder, tmp_path):
    run = tmp_path / "run"
    clf = imgcls.train(image_folder, run, config=TINY_FT)
    names = {p.name for p in run.iterdir()}
    assert {"history.csv", "curves.png", "metrics.json", "model", "report.html", "run_config.json"} <= names
    assert CHECKPOINT_FILE not in names  # finished runs leave no checkpoint behind
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert all(float(r["train_loss"]) > 0 for r in rows[1:])
    with Image.open(run / "curves.png") as curves:
        assert curves.size[0] > 300 and curves.size[1] > 150
    metrics = json.loads((run / "metrics.json").read_text())
    tuned = metrics["finetune"]
    assert tuned["plan"]["mode"] == "activations" and tuned["plan"]["trainable_stages"] == 3
    assert tuned["best_epoch"] in {0, 1, 2, 3}
    best_val = max(float(r["val_accuracy"]) for r in rows)
    chosen = tuned["interpolation"]  # None when epoch 0 (the probe) was best
    kept = chosen["val_accuracy"][f"{chosen['alpha']:.2f}"] if chosen else best_val
    assert kept >= best_val and metrics["val"]["accuracy"] == pytest.approx(kept)
    reloaded = imgcls.load(run)
    evaluation = reloaded.evaluate(image_folder, split="val")
    # Other kernels (folded network on images vs the trained top on cached maps), but 6 confident
    # images (val loss ~1e-4): no margin near the ~1e-2 bf16 noise, so no prediction can flip.
    assert evaluation.accuracy == pytest.approx(metrics["val"]["accuracy"])
    assert clf.config["head"]["type"] == "finetuned"


def test_unfreeze_all_trains_on_images_with_every_preset_shape(image_folder, tmp_path):
    cfg = TINY_FT.with_overrides({"unfreeze": "all", "augment": "strong", "epochs": 2})
    clf = imgcls.train(image_folder, tmp_path / "run", config=cfg)
    plan = clf.metrics and json.loads((tmp_path / "run" / "metrics.json").read_text())["finetune"]["plan"]
    assert plan["mode"] == "images" and plan["trainable_stages"] is None
    assert clf.evaluate(image_folder, split="val").accuracy == pytest.approx(clf.metrics["val"]["accuracy"])


def test_same_seed_gives_the_same_result(image_folder, tmp_path):
    first = imgcls.train(image_folder, tmp_path / "a", config=TINY_FT)
    second = imgcls.train(image_folder, tmp_path / "b", config=TINY_FT)
    a = (tmp_path / "a" / "history.csv").read_text()
    b = (tmp_path / "b" / "history.csv").read_text()
    strip = [",".join(line.split(",")[:5]) for line in a.splitlines()]  # drop timings
    # Exact: one process runs the same kernels in the same order twice.
    assert strip == [",".join(line.split(",")[:5]) for line in b.splitlines()]
    assert first.metrics["val"] == second.metrics["val"]


def _train_command(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "imgcls", "train", str(data), "-o", str(run), *TINY_ARGS,
        "--strategy", "finetune", "--unfreeze", "all", "--augment", "light", "--workers", "0",
        "--epochs", "6", "--patience", "6", "--seed", "3", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fine-tune run straight through, and its data, for the interrupted runs to match."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = write_class_folders(root / "colours", per_class=60)
    straight = root / "straight"
    env = {**os.environ, "IMGCLS_NO_REEXEC": "1"}
    subprocess.run(_train_command(data, straight), check=True, capture_output=True, env=env)
    return data, straight


def _interrupt_after_a_checkpoint(data: Path, run: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start a fine-tune, send ``sig`` once epoch 1 is checkpointed; its exit code and stderr."""
    env = {**os.environ, "IMGCLS_NO_REEXEC": "1"}
    log = run.parent / f"{run.name}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(_train_command(data, run), stderr=stderr, env=env)
        deadline = time.monotonic() + 120
        while not (run / CHECKPOINT_FILE).exists():  # epoch 1 is done: stop somewhere in epoch 2+
            assert process.poll() is None and time.monotonic() < deadline, "run ended before a checkpoint"
            time.sleep(0.01)
        # At once: epoch 2 has begun, and on a fast machine the last epochs take a tenth of a
        # second each, so any wait here races the run's end.
        process.send_signal(sig)
        code = process.wait(60)
    assert not (run / "metrics.json").exists(), "the run finished before it was stopped"
    assert load_checkpoint(run / CHECKPOINT_FILE)["state"]["next_epoch"] <= 6
    return code, log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_stopped_fine_tune_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, sig):
    data, straight = uninterrupted
    stopped = tmp_path / "stopped"
    code, stderr = _interrupt_after_a_checkpoint(data, stopped, sig)
    if sig == signal.SIGINT:
        assert code == 130
        assert "the checkpoint after epoch " in stderr and f"is kept in {stopped}" in stderr
        assert f"continue with: imgcls train --resume {stopped}" in stderr

    assert main(["train", "--resume", str(stopped)]) == 0
    expected = json.loads((straight / "metrics.json").read_text())
    resumed = json.loads((stopped / "metrics.json").read_text())
    # The resume replays the same kernels in the same order on this machine (bit for bit in
    # practice); 1e-4 only spares the log-loss sum a last-digit change, far below the ~1e-1 a
    # resume from the wrong epoch, weights or random state gives.
    assert resumed["val"]["accuracy"] == expected["val"]["accuracy"]
    assert resumed["val"]["log_loss"] == pytest.approx(expected["val"]["log_loss"], rel=1e-4, abs=1e-6)
    assert resumed["finetune"]["best_epoch"] == expected["finetune"]["best_epoch"]
    losses = [float(r["train_loss"] or 0) for r in csv.DictReader((stopped / "history.csv").open())]
    expected_losses = [float(r["train_loss"] or 0) for r in csv.DictReader((straight / "history.csv").open())]
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    assert not (stopped / CHECKPOINT_FILE).exists()


def test_the_cpu_default_fine_tune_resumes_exactly_after_kill_9(tmp_path):
    """Where users run: the last stages on cached activations, maps cached by a loader process."""
    data = write_class_folders(tmp_path / "colours", per_class=60)
    env = {**os.environ, "IMGCLS_NO_REEXEC": "1"}

    def command(run: Path) -> list[str]:
        return [
            sys.executable, "-m", "imgcls", "train", str(data), "-o", str(run), "--backbone", TINY_BACKBONE,
            "--no-pretrained", "--input-size", "128", "--strategy", "finetune", "--workers", "1",
            "--epochs", "40", "--patience", "40", "--cache-dir", str(tmp_path / "cache"),
        ]  # fmt: skip

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    subprocess.run(command(straight), check=True, capture_output=True, env=env)
    plan = json.loads((straight / "metrics.json").read_text())["finetune"]["plan"]
    assert plan["mode"] == "activations" and plan["trainable_stages"] is not None
    process = subprocess.Popen(command(stopped), stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not (stopped / CHECKPOINT_FILE).exists():
        assert process.poll() is None and time.monotonic() < deadline, "run ended before a checkpoint"
        time.sleep(0.02)
    process.kill()
    process.wait(30)
    assert not (stopped / "metrics.json").exists(), "the run finished before it was killed"
    assert main(["train", "--resume", str(stopped)]) == 0

    def table(run: Path) -> list[list[str]]:
        return [line.split(",")[:5] for line in (run / "history.csv").read_text().splitlines()]

    # Exact: the resumed epochs replay the uninterrupted run's kernels in the same order here.
    assert table(stopped) == table(straight)
    assert (
        json.loads((stopped / "metrics.json").read_text())["val"]
        == json.loads((straight / "metrics.json").read_text())["val"]
    )


def test_ctrl_c_before_anything_worth_keeping_removes_the_run_and_says_how_to_start_again(
    image_folder, tmp_path, monkeypatch, capsys
):
    from imgcls.workflows import train as train_workflow

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_workflow, "fit_and_score", interrupt)
    run = tmp_path / "run"
    assert main(["train", str(image_folder), "-o", str(run), *TINY_ARGS]) == 130
    err = capsys.readouterr().err
    assert f"nothing worth keeping was written; {run} was removed" in err
    assert f"start again with: imgcls train {image_folder} -o {run}" in err
    assert not run.exists()

    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(["train", str(image_folder), "-o", str(run), "--overwrite", *TINY_ARGS]) == 130
    assert "holds no checkpoint" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine"  # a folder the user made is never deleted


def test_resume_of_a_finished_or_probe_run_is_a_clear_error(image_folder, tmp_path, capsys):
    imgcls.train(image_folder, tmp_path / "done", config=TINY_FT)
    assert main(["train", "--resume", str(tmp_path / "done")]) != 0
    assert "nothing to resume" in capsys.readouterr().err
    imgcls.train(
        image_folder, tmp_path / "probe", config=TrainConfig(backbone=TINY_BACKBONE, pretrained=False)
    )
    assert main(["train", "--resume", str(tmp_path / "probe")]) != 0
    assert "probe run" in capsys.readouterr().err


def test_time_limit_stops_within_an_epoch_and_keeps_the_best_model(tmp_path):
    data = write_class_folders(tmp_path / "colours", per_class=60)
    cfg = TINY_FT.with_overrides({"unfreeze": "all", "epochs": 200, "patience": 200, "time_limit": 15.0})
    started = time.perf_counter()
    clf = imgcls.train(data, tmp_path / "run", config=cfg)
    elapsed = time.perf_counter() - started
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert metrics["finetune"]["stopped"] == "time limit"
    assert 1 <= len(rows) - 1 < 200
    slowest_epoch = max(float(r["seconds"]) for r in rows)
    assert elapsed <= 15.0 + slowest_epoch + 10  # + saving the model and the report
    best = max(rows, key=lambda r: (float(r["val_accuracy"]), -float(r["val_loss"])))
    assert metrics["finetune"]["best_epoch"] == int(best["epoch"])
    assert clf.evaluate(data, split="val").accuracy == pytest.approx(float(best["val_accuracy"]))


def _imbalanced_folder(root: Path) -> Path:
    """Two grey classes whose brightness overlaps, 8:1. Without weights the minority is mostly missed."""
    rng = np.random.default_rng(0)
    for name, count, level in (("common", 160, 120), ("rare", 20, 140)):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            offset = rng.normal(0, 12)  # per image: the classes overlap
            pixels = np.clip(level + offset + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.mark.parametrize("strategy", ["probe", "finetune"])
def test_class_weights_auto_raises_balanced_accuracy(tmp_path, strategy):
    data = _imbalanced_folder(tmp_path / "imbalanced")
    base = TrainConfig(
        backbone=TINY_BACKBONE,
        pretrained=False,
        input_size=32,
        strategy=strategy,
        val_fraction=0.45,
        workers=0,
    )
    plain = imgcls.train(data, config=base)
    weighted = imgcls.train(data, config=base.with_overrides({"class_weights": "auto"}))
    assert weighted.metrics["val"]["balanced_accuracy"] > plain.metrics["val"]["balanced_accuracy"]


def test_split_network_is_exact_for_every_cut():
    for arch, stages in (("test_efficientnet", 5), ("test_resnet", 4)):
        model = timm.create_model(arch, num_classes=3).eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
            for k in range(1, stages + 1):
                split = split_network(model, k)
                assert torch.allclose(split.top(split.trunk(x)), expected, atol=1e-5), (arch, k)
    assert split_network(timm.create_model("test_vit", num_classes=3), 1) is None


def test_activation_task_augments_maps_and_mixes_soft_targets():
    maps = torch.randn(10, 4, 8, 8)
    rows = LabelledRows(torch.arange(10) % 2, torch.arange(8), torch.tensor([8, 9]))
    task = ActivationTask(torch.nn.Identity(), maps, rows, num_classes=2, batch_size=4, augment="strong")
    batches = list(task.batches(seed_epoch(0, 1)))
    assert len(batches) == task.num_batches() == 2
    inputs, targets = batches[0]
    assert inputs.shape[-1] <= 8 and inputs.shape[-1] >= 4
    assert targets.shape == (4, 2) and torch.allclose(targets.sum(1), torch.ones(4))
    again = list(task.batches(seed_epoch(0, 1)))
    assert torch.equal(again[0][0], inputs)  # the epoch's generator decides everything


def test_augment_presets_change_views_and_none_is_the_eval_view():
    from imgcls.config import AUGMENT_PRESETS
    from imgcls.data.preprocessing import Preprocessing

    pre = Preprocessing(64, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    torch.manual_seed(0)
    for preset in AUGMENT_PRESETS:
        transform = train_transform(pre, preset)
        a, b = transform(image), transform(image)
        assert a.shape == b.shape == (3, 64, 64)
        assert torch.equal(a, b) == (preset == "none"), preset
    assert batch_mixer("strong", 3) is not None and batch_mixer("standard", 3) is None


def test_inspect_data_prints_counts_and_saves_a_grid_of_different_views(image_folder, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    args = ["inspect-data", str(image_folder), "--augment", "strong", "--output", str(grid), "--rows", "2"]
    assert main([*args, "--views", "3", "--input-size", "48", "--backbone", TINY_BACKBONE]) == 0
    out = capsys.readouterr().out
    assert "red" in out and "total" in out
    pixels = np.asarray(Image.open(grid)).astype(int)
    step = 48 + 4
    cells = [
        pixels[HEADER_PX : HEADER_PX + 48, LABEL_PX + c * step : LABEL_PX + c * step + 48] for c in range(4)
    ]
    assert pixels.shape[:2] == (HEADER_PX + 2 * step, LABEL_PX + 4 * step)
    for row in range(2):  # each row's class and file name are written in the left band
        band = pixels[HEADER_PX + row * step : HEADER_PX + (row + 1) * step, :LABEL_PX]
        assert (band.max(axis=2) < 128).sum() > 30
    assert (pixels[:HEADER_PX, LABEL_PX:].max(axis=2) < 160).sum() > 30  # the column names
    for view in cells[1:]:
        assert np.abs(view - cells[0]).mean() > 2  # each augmented view differs from the eval view
    assert np.abs(cells[1] - cells[2]).mean() > 2


def test_finetune_settings_are_validated(image_folder, capsys):
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_unfreeze("last-2") == 2 and parse_unfreeze("all") is None
    for bad in ("last-0", "first-2", "some"):
        with pytest.raises(ConfigError, match="last-N"):
            parse_unfreeze(bad)
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon")
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment="wild")
    with pytest.raises(SystemExit):
        main(["train", str(image_folder), *TINY_ARGS, "--time-limit", "soon"])
    assert "duration" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="`strategy=probe` trains no network"):
        TrainConfig(compile=True)
    cfg = TINY_FT.with_overrides({"unfreeze": "last-1", "backbone": "test_vit"})
    with pytest.raises(ConfigError, match="`unfreeze=all`"):
        imgcls.train(image_folder, config=cfg.with_overrides({"input_size": None}))


def test_auto_strategy_picks_the_probe_for_small_data_and_says_why(image_folder, tmp_path):
    from imgcls.training.finetune_plan import choose_strategy

    cfg = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64, strategy="auto")
    clf = imgcls.train(image_folder, tmp_path / "run", config=cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["auto"]["strategy"] == "probe" and "too few" in metrics["auto"]["reason"]
    assert clf.config["strategy"] == "probe"
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for device in (cpu, gpu):
        assert choose_strategy(5000, device, None)[0] == "finetune"
        assert choose_strategy(200, device, None)[0] == "probe"
        assert choose_strategy(5000, device, 30.0)[0] == "probe"
    assert choose_strategy(5000, gpu, 300.0)[0] == "finetune"
    strategy, reason = choose_strategy(5000, cpu, 300.0)  # a CPU needs longer
    assert strategy == "probe" and "600 s" in reason


def test_profile_prints_where_the_time_went(image_folder, tmp_path, capsys):
    # --no-cache: other tests may have cached these images' activations, and then nothing decodes.
    args = [
        "train",
        str(image_folder),
        *TINY_ARGS,
        "-o",
        str(tmp_path / "run"),
        "--profile",
        "-q",
        "--no-cache",
    ]
    assert main([*args, "--strategy", "finetune", "--epochs", "1", "--workers", "0"]) == 0
    table = capsys.readouterr().err.split("where the time went:")[1]
    for stage in (
        "decode (loader processes)",
        "forward (features)",
        "head fit",
        "train backward + step",
        "wall",
    ):
        assert stage in table, stage
    decode = next(line for line in table.splitlines() if line.startswith("decode"))
    assert int(decode.split()[-1]) == 36  # one decode per image


def test_decoded_images_are_kept_after_one_pass_and_change_nothing(image_folder):
    from imgcls.data.preprocessing import Preprocessing
    from imgcls.training._tasks import _TrainImages

    paths = sorted(image_folder.rglob("*.png"))
    pre = Preprocessing(48, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    plain = _TrainImages(paths, [0] * len(paths), train_transform(pre, "standard"), 55)
    kept = _TrainImages(paths, [0] * len(paths), train_transform(pre, "standard"), 55)
    kept.keep_decoded(budget_bytes=10**8, workers=0)
    assert len(kept.decoded) == len(paths)
    torch.manual_seed(0)
    first = [plain[i][0] for i in range(5)]
    torch.manual_seed(0)
    assert all(torch.equal(a, kept[i][0]) for i, a in enumerate(first))
    small = _TrainImages(paths, [0] * len(paths), train_transform(pre, "standard"), 55)
    small.keep_decoded(budget_bytes=3 * 32 * 32 * 3, workers=0)  # room for three images
    assert len(small.decoded) == 3


def test_finetune_calibrate_folds_the_temperature_into_the_saved_model(image_folder, tmp_path):
    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY_FT.with_overrides({"calibrate": True}))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["temperature"] > 0 and {"val_ece_before", "val_ece_after"} <= set(calibration)
    evaluation = imgcls.load(tmp_path / "run").evaluate(image_folder, split="val")
    # Training scored the fused top on cached maps, the reload the folded network on images:
    # other kernels (bf16: 3.7e-4 relative measured on the uncalibrated log loss). A temperature
    # left out of the saved model scales every logit by T, far more than 1e-2 unless T ~ 1.
    rel = across_kernels(clf.config["precision"], 1e-3)
    assert evaluation.report["log_loss"] == pytest.approx(metrics["val"]["log_loss"], rel=rel, abs=1e-5)
    assert clf.config["head"]["temperature"] == calibration["temperature"]


def test_on_a_cpu_depthwise_units_keep_their_pretrained_values_and_the_rest_trains():
    """Depthwise kernels and the BatchNorm after each are left out of the optimiser on a CPU
    (their gradients are the slow part of a CPU step); pointwise layers and the head train."""
    from imgcls.models._batchnorm_fold import conv_norm_pairs
    from imgcls.training._fast_path import is_depthwise
    from imgcls.training.finetune import _optimisation
    from imgcls.training.finetune_plan import plan_finetune

    model = timm.create_model(TINY_BACKBONE, pretrained=False, num_classes=3)
    split = split_network(model, 2)
    plan = plan_finetune(TINY_FT, n_train=100, device=torch.device("cpu"), trainable=2, precision="fp32")
    assert plan.train_depthwise is False
    _optimisation(model, split.top, plan, None, None, balanced=False, steps=10)  # type: ignore[arg-type]
    units = [p for p in conv_norm_pairs(split.top) if is_depthwise(p.conv)]
    top_units = [u for u in units if any(u.conv is m for m in split.top.stages.modules())]
    assert top_units
    for unit in top_units:
        assert not unit.conv.weight.requires_grad
        assert not unit.norm.weight.requires_grad and not unit.norm.bias.requires_grad
    pointwise = [m for m in split.top.stages.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    assert pointwise and all(m.weight.requires_grad for m in pointwise)
    assert model.get_classifier().weight.requires_grad


def test_a_checkpoint_missing_keys_is_a_one_line_error(image_folder, tmp_path, capsys):
    from imgcls.training.checkpoint import save_checkpoint

    run = tmp_path / "run"
    imgcls.train(image_folder, run, config=TINY_FT)
    save_checkpoint(run / "checkpoint.pt", {"module": {}, "state": {}})  # what a damaged run could leave
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    error = capsys.readouterr().err
    assert "the checkpoint does not fit this run" in error and error.count("\n") == 1


def test_a_fine_tune_estimates_its_time_warns_of_small_splits_and_says_when_the_probe_is_kept(
    tmp_path, caplog
):
    data = write_class_folders(tmp_path / "colours", per_class=8)
    caplog.set_level("INFO", logger="imgcls")
    wrecked = TINY_FT.with_overrides({"epochs": 1, "lr": 0.9})  # a step this large ruins the probe head
    clf = imgcls.train(data, tmp_path / "run", config=wrecked)
    logged = caplog.text
    assert "fine-tuning: 1 epoch of" in logged and "in all (a first estimate)" in logged
    assert "validation has only" in logged and "too few to tell the fine-tune from the probe" in logged
    assert "training has only" in logged and "images per class" in logged
    assert clf.config["head"]["best_epoch"] == 0
    assert "no epoch beat the probe on validation; the probe is saved" in logged


@pytest.mark.slow  # inductor compiles the network's C++ kernels: tens of seconds
def test_compile_trains_through_a_compiled_graph_to_the_eager_result(image_folder, tmp_path):
    from torch._dynamo.utils import counters

    cfg = TINY_FT.with_overrides({"unfreeze": "all", "epochs": 2})
    eager = imgcls.train(image_folder, tmp_path / "eager", config=cfg)
    counters.clear()
    tuned = imgcls.train(image_folder, tmp_path / "compiled", config=cfg.with_overrides({"compile": True}))
    assert counters["stats"]["unique_graphs"] >= 1  # the training steps went through dynamo
    assert not counters["recompiles"]  # the epoch's smaller last batch reused the graph
    assert json.loads((tmp_path / "compiled" / "run_config.json").read_text())["train"]["compile"] is True
    losses = [
        [
            float(r["train_loss"])
            for r in csv.DictReader((tmp_path / run / "history.csv").open())
            if r["epoch"] != "0"
        ]
        for run in ("eager", "compiled")
    ]
    # Inductor fuses and rounds at other points than eager (and skips the CPU fast path): fp32
    # agrees to ~1e-7 (measured), bf16 to ~1e-3 (5.7e-4 on AVX512-BF16, 1.06e-3 on AMX). A step
    # that does not train, or trains another graph, misses epoch 2's loss (12% below epoch
    # 1's) by far more than 1e-2.
    assert losses[1] == pytest.approx(losses[0], rel=across_kernels(eager.config["precision"], 1e-4))
    # One of the 6 images is 0.17: exact in effect; no near tie to flip (val loss ~1e-3).
    assert tuned.metrics["val"]["accuracy"] == pytest.approx(eager.metrics["val"]["accuracy"], abs=0.05)


@pytest.mark.slow  # dynamo traces the network before the compiler is looked for
def test_a_compile_that_fails_is_one_line_that_says_to_train_without_it(
    image_folder, tmp_path, monkeypatch, capsys
):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", (None, str(tmp_path / "no-such-c++")))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # nothing compiled yet
    args = ["train", str(image_folder), "-o", str(tmp_path / "run"), *TINY_ARGS, "--workers", "0"]
    assert main([*args, "--strategy", "finetune", "--unfreeze", "all", "--epochs", "1", "--compile"]) == 2
    error = capsys.readouterr().err
    assert "torch.compile could not compile the network" in error and "train without --compile" in error
    assert "Traceback" not in error


def test_a_time_limit_too_short_for_one_epoch_is_said_before_training(tmp_path, caplog):
    data = write_class_folders(tmp_path / "colours", per_class=20)
    cfg = TINY_FT.with_overrides({"unfreeze": "all", "epochs": 5, "time_limit": 0.01})
    with caplog.at_level(logging.INFO, logger="imgcls"):
        imgcls.train(data, tmp_path / "run", config=cfg)
    said = caplog.text
    assert "no epoch will run, and the probe the fine-tune starts from is what is saved" in said
    assert said.index("no epoch will run") < said.index("training time limit; best val")  # before the loop
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["0"]
    # the export would take the run further past its limit: it is left for `imgcls export`
    assert "model.onnx not written: the time limit leaves no room" in said
    assert not (tmp_path / "run" / "model" / "model.onnx").exists()
