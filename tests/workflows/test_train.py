"""Training, saving, reloading, evaluating and predicting end to end with a tiny backbone."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.cli.main import main
from imgcls.config import TrainConfig
from imgcls.deploy.export import export_model
from imgcls.errors import DataError
from tests.conftest import TINY_ARGS, TINY_BACKBONE, make_image, run_cli, write_class_folders

TINY = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64)


def test_train_writes_a_complete_run_directory(image_folder, tmp_path):
    run = tmp_path / "run"
    clf = imgcls.train(image_folder, run, config=TINY)
    assert sorted(p.name for p in run.iterdir()) == [
        "README.md", "metrics.json", "model", "report.html", "run_config.json", "skipped.csv", "splits.csv",
    ]  # fmt: skip
    assert sorted(p.name for p in (run / "model").iterdir()) == [
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]
    assert "`model/model.onnx`" in (run / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.8  # colours are easy even for random features
    assert metrics["val"]["n"] == 6  # round(20% of 12) = 2 per class, stratified
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["classes"] == ["blue", "green", "red"]
    assert config["preprocessing"]["input_size"] == 64
    assert config["backbone"]["weights"]["source"] == "random-init"
    assert {"torch", "timm", "imgcls"} <= set(config["versions"])
    rows = list(csv.DictReader((run / "splits.csv").open()))
    assert Counter(r["split"] for r in rows) == {"train": 27, "val": 6, "test": 3}  # the default 10% test
    assert metrics["test"]["n"] == 3
    assert json.loads((run / "run_config.json").read_text())["train"]["backbone"] == TINY_BACKBONE
    assert clf.metrics["val"]["accuracy"] == metrics["val"]["accuracy"]


def test_the_export_train_writes_scores_as_torch_and_its_failure_costs_only_the_export(
    image_folder, tmp_path, monkeypatch, caplog
):
    from imgcls.deploy import export

    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    onnx = imgcls.load(tmp_path / "run", runtime="onnx")
    image = next(image_folder.rglob("*.png"))
    assert onnx.predict(image).label == clf.predict(image).label
    assert imgcls.load(tmp_path / "run", runtime="auto").predict(image).label == clf.predict(image).label

    imgcls.train(image_folder, tmp_path / "none", config=TINY.with_overrides({"onnx": False}))
    assert not (tmp_path / "none" / "model" / "model.onnx").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("an operator the exporter lacks")

    monkeypatch.setattr(export, "export_model", broken)
    caplog.set_level("WARNING", logger="imgcls")
    kept = imgcls.train(image_folder, tmp_path / "kept", config=TINY)
    assert (tmp_path / "kept" / "metrics.json").is_file() and kept.metrics["val"]["n"] == 6
    assert not (tmp_path / "kept" / "model" / "model.onnx").exists()
    assert any("model.onnx not written (RuntimeError: an operator the exporter lacks)" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_saved_model_has_no_pickle_and_reloads_identically_in_a_fresh_process(image_folder, tmp_path):
    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    weights = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    assert b"pickle" not in weights[:2000] and not weights.startswith(b"PK")  # not a torch zip
    probe = [str(p) for p in sorted(image_folder.rglob("*.png"))[:6]]
    before = [clf.predict(p, top_k=3).to_dict() for p in probe]
    script = (
        "import json, sys, imgcls\n"
        "clf = imgcls.load(sys.argv[1])\n"
        "print(json.dumps([clf.predict(p, top_k=3).to_dict() for p in sys.argv[2:]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run"), *probe], capture_output=True, text=True
    )
    after = json.loads(out.stdout)
    for b, a in zip(before, after, strict=True):
        assert [p["label"] for p in b["predictions"]] == [p["label"] for p in a["predictions"]]
        np.testing.assert_allclose(
            [p["probability"] for p in b["predictions"]],
            [p["probability"] for p in a["predictions"]],
            atol=1e-6,
        )


def test_evaluate_reuses_the_split_manifest(image_folder, tmp_path):
    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    loaded = imgcls.load(tmp_path / "run" / "model")
    evaluation = loaded.evaluate(image_folder, split="val")
    assert evaluation.report["n"] == clf.metrics["val"]["n"]
    assert evaluation.accuracy == pytest.approx(clf.metrics["val"]["accuracy"])
    assert loaded.evaluate(image_folder, split="all").report["n"] == 36
    in_memory = imgcls.train(image_folder, config=TINY)  # no run dir: no manifest to find
    with pytest.raises(DataError, match="no val/ folder"):
        in_memory.evaluate(image_folder, split="val")


def test_cli_train_evaluate_predict(image_folder, tmp_path):
    run = tmp_path / "run"
    out = run_cli("train", str(image_folder), "--output", str(run), *TINY_ARGS)
    assert "val accuracy" in out.stdout and "RANDOM INIT" in out.stdout
    assert f"report        {run / 'report.html'}" in out.stdout and (run / "report.html").is_file()
    assert "NO PRETRAINED WEIGHTS" in out.stderr
    evaluation = json.loads(run_cli("evaluate", str(run), str(image_folder), "--json").stdout)
    assert evaluation["split"] == "val" and len(evaluation["confusion_matrix"]) == 3
    assert set(evaluation["per_class"]) == {"blue", "green", "red"}
    text = run_cli("evaluate", str(run), str(image_folder), "--split", "all").stdout
    assert "precision" in text and "confusion matrix" in text
    predictions = json.loads(
        run_cli("predict", str(run), str(image_folder / "red"), "--json", "--top-k", "2").stdout
    )
    assert len(predictions) == 12
    first = predictions[0]
    assert set(first) == {"path", "predictions"} and len(first["predictions"]) == 2
    assert set(first["predictions"][0]) == {"label", "index", "probability"}


def test_messy_folder_trains_and_reports_exactly_the_unreadable_files(tmp_path):
    data = write_class_folders(tmp_path / "messy", per_class=8, classes=("red", "blue"))
    folder = data / "red"
    (folder / "zero.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    make_image((200, 0, 0), 50, size=128).save(buffer, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:1500])
    (folder / "text.jpg").write_text("hello, I am not an image")
    make_image((200, 0, 0), 51).convert("P").save(folder / "palette.gif")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(data / "blue" / "sixteen.png")
    Image.new("RGBA", (32, 32), (0, 0, 255, 128)).save(data / "blue" / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    make_image((0, 0, 200), 52, size=48).save(data / "blue" / "rotated.jpg", exif=exif.tobytes())
    run = tmp_path / "run"
    out = run_cli("train", str(data), "--output", str(run), *TINY_ARGS)
    skipped = {r["path"]: r["reason"] for r in csv.DictReader((run / "skipped.csv").open())}
    assert set(skipped) == {"red/zero.jpg", "red/truncated.jpg", "red/text.jpg"}
    assert "empty file" in skipped["red/zero.jpg"] and "not an image" in skipped["red/text.jpg"]
    for path in skipped:
        assert path in out.stdout
    trained = {r["path"] for r in csv.DictReader((run / "splits.csv").open())}
    assert {
        "red/palette.gif",
        "red/cmyk.jpg",
        "blue/sixteen.png",
        "blue/alpha.png",
        "blue/rotated.jpg",
    } <= trained
    assert not trained & set(skipped)


def test_feature_cache_makes_the_second_run_extract_nothing(image_folder, tmp_path, caplog):
    caplog.set_level("INFO", logger="imgcls")
    imgcls.train(image_folder, config=TINY)
    caplog.clear()
    imgcls.train(image_folder, config=TINY)
    assert "features: 0 computed, 36 from cache" in caplog.text
    caplog.clear()
    imgcls.train(image_folder, config=TINY.with_overrides({"input_size": 96}))  # new preprocessing
    assert "features: 36 computed" in caplog.text


def test_existing_run_directory_is_not_overwritten_silently(image_folder, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="`overwrite=True`"):  # a Python user is told the keyword
        imgcls.train(image_folder, run, config=TINY)
    imgcls.train(image_folder, run, config=TINY, overwrite=True)
    assert (run / "precious.txt").read_text() == "keep me"


def test_a_failed_run_leaves_no_empty_run_directory(image_folder, tmp_path):
    run = tmp_path / "runs" / "failed"
    unknown = TINY.with_overrides({"backbone": "no_such_net"})
    with pytest.raises(Exception, match="no_such_net"):
        imgcls.train(image_folder, run, config=unknown)
    assert not run.exists()
    with pytest.raises(DataError):
        imgcls.train(tmp_path / "missing", run, config=TINY)  # bad data: nothing is created
    assert not run.exists()


def test_offline_backbone_without_weights_fails_fast_with_guidance(image_folder):
    result = run_cli("train", str(image_folder), "--backbone", "resnet50", "--output", "unused", check=False)
    assert result.returncode == 2
    assert "--weights" in result.stderr and "--no-pretrained" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_values_are_clear_errors(image_folder, capsys):
    assert main(["train", str(image_folder), "--val-fraction", "1.5", "--output", "x"]) == 2
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err
    assert main(["train", str(image_folder), "--backbone", "no_such_net", "--output", "x"]) == 2
    assert "unknown backbone 'no_such_net'" in capsys.readouterr().err
    assert main(["evaluate", str(image_folder), str(image_folder)]) == 2
    assert "not an imgcls model directory" in capsys.readouterr().err
    assert main(["predict", str(image_folder), str(image_folder), "--weights", "w.pth"]) == 2
    assert "--weights goes with a backbone name" in capsys.readouterr().err


def test_three_line_api_with_in_memory_image(image_folder, tmp_path):
    clf = imgcls.train(image_folder, tmp_path / "run", config=TINY)
    assert clf.evaluate(image_folder, split="val").accuracy >= 0.8
    prediction = clf.predict(np.asarray(make_image((200, 30, 30), 7)))
    assert prediction.label == "red" and 0 < prediction.probability <= 1


def test_interrupted_cache_shard_is_ignored(image_folder, tmp_path, _private_cache):
    imgcls.train(image_folder, config=TINY)
    space = next((_private_cache / "features").iterdir())
    shard = next(space.glob("*.npz"))
    (space / ".half-written.tmp").write_bytes(shard.read_bytes()[:100])  # what a kill leaves
    (space / "0-torn.npz").write_bytes(shard.read_bytes()[:100])  # a damaged shard
    assert imgcls.train(image_folder, config=TINY).metrics["val"]["n"] == 6


def test_evaluate_train_split_excludes_the_carved_validation_images(tmp_path):
    data = write_class_folders(tmp_path / "data" / "train", per_class=10)
    clf = imgcls.train(tmp_path / "data", tmp_path / "run", config=TINY)
    loaded = imgcls.load(tmp_path / "run")
    assert loaded.evaluate(data.parent, split="train").report["n"] == clf.metrics["train"]["n"] == 21
    assert loaded.evaluate(data.parent, split="val").report["n"] == 6
    assert loaded.evaluate(data.parent, split="test").report["n"] == 3


def test_the_python_api_takes_every_setting_as_a_keyword_and_lists_of_images(image_folder, tmp_path):
    clf = imgcls.train(
        image_folder, backbone=TINY_BACKBONE, pretrained=False, input_size=64, val_fraction=0.25, report=False
    )
    assert clf.metrics["val"]["n"] == 9  # a quarter of each class's 12 images
    with pytest.raises(imgcls.ImgclsError, match="unknown config keys \\['epoch'\\]"):
        imgcls.train(image_folder, epoch=3)
    images = [str(image_folder / "red" / "red_000.png"), str(image_folder / "blue" / "blue_000.png")]
    predictions = clf.predict(images, top_k=1)
    assert [p.path for p in predictions] == images and clf.predict(tuple(images))[1].label == predictions[
        1
    ].label
    assert {"train", "load", "cross_validate", "TrainConfig"} <= set(dir(imgcls))
    cv = imgcls.cross_validate(image_folder, folds=2, backbone=TINY_BACKBONE, pretrained=False, input_size=64)
    assert len(cv.per_fold) == 2


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_follow_the_umask(image_folder, tmp_path, umask):
    old = os.umask(umask)
    try:
        imgcls.train(image_folder, tmp_path / "run", config=TINY)
        export_model(tmp_path / "run", format="onnx")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files) and any(p.suffix == ".onnx" for p in files)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)  # readable by others exactly when the umask allows


def test_the_model_card_names_the_data_the_metrics_and_how_to_use_the_model(image_folder, tmp_path):
    run = tmp_path / "run"
    clf = imgcls.train(image_folder, run, config=TINY.with_overrides({"test_fraction": 0.25}))
    card = (run / "README.md").read_text()
    assert f"{TINY_BACKBONE} classifier for colours" in card
    assert "3 classes: `blue`, `green`, `red`" in card and "random init, no pretrained weights" in card
    for split in ("val", "test"):
        m = clf.metrics[split]
        assert f"| {split} | {m['n']} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} |" in card
    assert f"imgcls predict {run} photo.jpg" in card and f'clf = imgcls.load("{run}")' in card
