"""imgcls doctor: planted duplicates, leakage, broken files and label errors are found."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.cli.main import main
from imgcls.config import TrainConfig
from imgcls.evaluation.duplicates import group_pairs, hash_pairs
from imgcls.evaluation.label_issues import find_label_issues
from imgcls.workflows.doctor.run import doctor
from tests.conftest import TINY_BACKBONE

TINY = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=64)
# Real features (the packaged weights, fast on a few dozen images): a random network finds
# every pair of these patterns alike.
LITE = TrainConfig(backbone="efficientnet_lite0")
TINTS = {"red": (1.0, 0.4, 0.4), "green": (0.4, 1.0, 0.4), "blue": (0.4, 0.4, 1.0)}


def _picture(tint: tuple[float, float, float], seed: int, side: int = 96) -> Image.Image:
    """A smooth random pattern in a class's tint: structure that survives resizing and JPEG."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    grey = np.asarray(coarse, dtype=np.float32)
    return Image.fromarray(np.clip(grey[..., None] * np.array(tint), 0, 255).astype(np.uint8))


def _data_set(root: Path) -> Path:
    for split, per_class, offset in (("train", 10, 0), ("val", 3, 500)):
        for c, (name, tint) in enumerate(TINTS.items()):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                _picture(tint, seed=offset + 100 * c + i).save(folder / f"{name}_{i:02d}.png")
    return root


def _plant(root: Path) -> dict[str, str]:
    """A training image copied into val, one shrunk to half and saved as JPEG quality 70 into
    val, one copied under another class; a corrupt file, an empty class folder, a text file."""
    shutil.copy(root / "train/red/red_00.png", root / "val/red/copy.png")
    with Image.open(root / "train/red/red_01.png") as image:
        image.resize((48, 48)).save(root / "val/red/small.jpg", quality=70)
    shutil.copy(root / "train/green/green_00.png", root / "train/blue/mislabelled_copy.png")
    (root / "train/blue/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "train/purple").mkdir()
    (root / "train/red/notes.txt").write_text("taken on a Tuesday")
    return {
        "exact": "val/red/copy.png",
        "small": "val/red/small.jpg",
        "cross": "train/blue/mislabelled_copy.png",
    }


def test_planted_duplicates_leaks_and_broken_files_are_all_found(tmp_path):
    data = _data_set(tmp_path / "data")
    planted = _plant(data)
    diagnosis = doctor(data, tmp_path / "doctor", config=LITE)
    by_kind: dict[str, list[list[str]]] = {}
    for finding in diagnosis.findings:
        by_kind.setdefault(finding.kind, []).append(finding.ids)
    assert sorted(by_kind["leakage"]) == [
        ["train/red/red_00.png", planted["exact"]],
        ["train/red/red_01.png", planted["small"]],
    ]
    assert by_kind["conflicting labels"] == [["train/blue/mislabelled_copy.png", "train/green/green_00.png"]]
    assert by_kind["unreadable"] == [["train/blue/broken.jpg"]]
    ignored = " ".join(ids[0] for ids in by_kind["ignored"])
    assert "train/purple (an empty class folder" in ignored and "train/red/notes.txt" in ignored
    assert diagnosis.leakage["val -> train"] == {"images": 11, "with_copy_in_train": 2, "share": 2 / 11}
    assert "duplicate" not in by_kind  # no other pair of these distinct pictures is taken for a copy

    saved = json.loads((tmp_path / "doctor" / "doctor.json").read_text())
    assert saved["counts"] == diagnosis.counts() and saved["calibration"]["threshold"] > 0
    rows = list(csv.DictReader((tmp_path / "doctor" / "issues.csv").open()))
    assert len(rows) == len(diagnosis.findings)
    assert {"kind", "ids", "splits", "score", "suggested_label", "action"} <= set(rows[0])
    page = (tmp_path / "doctor" / "doctor.html").read_text()
    assert "conflicting labels: 1 finding" in page and page.count("<img") >= 8


def test_write_clean_leaves_out_the_copies_and_train_reads_it(tmp_path):
    data = _data_set(tmp_path / "data")
    planted = _plant(data)
    manifest = tmp_path / "clean.csv"
    assert main(["doctor", str(data), "-o", str(tmp_path / "doctor"), "--write-clean", str(manifest)]) == 0
    rows = list(csv.DictReader(manifest.open()))
    assert all(not Path(r["path"]).is_absolute() for r in rows)  # the data lies in the manifest's folder
    kept = {(tmp_path / r["path"]).relative_to(data).as_posix() for r in rows}
    assert not kept & {planted["exact"], planted["small"], planted["cross"], "train/green/green_00.png"}
    assert "train/red/red_00.png" in kept and "train/blue/broken.jpg" not in kept
    assert len(kept) <= 42 - 4  # 42 readable pictures less two leaked copies and the cross-class pair
    assert (data / planted["exact"]).exists()  # nothing in the data is touched
    clf = imgcls.train(manifest, tmp_path / "run", config=TINY)
    assert clf.metrics["train"]["n"] + clf.metrics["val"]["n"] == len(kept)


def test_confident_learning_finds_flipped_labels_and_agrees_with_cleanlab():
    rng = np.random.default_rng(0)
    n, k = 600, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 4.0  # a good model: confident in the true class
    flipped = rng.choice(n, 30, replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + rng.integers(1, k, 30)) % k
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    issues = find_label_issues(given, probs)
    found = set(issues.flagged_ranked().tolist())
    assert len(found & set(flipped.tolist())) >= 24 and len(found - set(flipped.tolist())) <= 6
    assert set(issues.ranked()[:30].tolist()) <= found | set(flipped.tolist())
    cleanlab = pytest.importorskip("cleanlab.filter")
    theirs = set(
        cleanlab.find_label_issues(given, probs, filter_by="confident_learning").nonzero()[0].tolist()
    )
    assert len(found & theirs) / len(found | theirs) >= 0.9  # the same rule, written independently


def test_hash_pairs_match_a_brute_force_search():
    rng = np.random.default_rng(1)
    hashes = [int(h) for h in rng.integers(0, 2**63, 300, dtype=np.int64)]
    hashes += [h ^ (1 << int(b)) for h, b in zip(hashes[:40], rng.integers(0, 64, 40), strict=True)]
    hashes += [h ^ 0b1011 for h in hashes[40:60]]
    brute = {
        (i, j): (hashes[i] ^ hashes[j]).bit_count()
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if (hashes[i] ^ hashes[j]).bit_count() <= 3
    }
    assert hash_pairs(hashes, 3) == brute and len(brute) == 60
    assert group_pairs([(0, 1), (1, 2), (5, 6)], 8) == [[0, 1, 2], [5, 6]]


def test_a_small_copy_of_a_photo_keeps_its_perceptual_hash():
    import skimage.data

    from imgcls.data.fingerprints import fingerprint
    from imgcls.data.images import MemoryImage

    def encoded(image: Image.Image, **options: object) -> MemoryImage:
        buffer = io.BytesIO()
        image.save(buffer, **options)
        return MemoryImage("photo", data=buffer.getvalue())

    cat = Image.fromarray(skimage.data.chelsea())
    original = fingerprint(encoded(cat, format="PNG"))
    small = fingerprint(encoded(cat.resize((cat.width // 2, cat.height // 2)), format="JPEG", quality=70))
    other = fingerprint(encoded(Image.fromarray(skimage.data.coffee()), format="PNG"))
    assert original.distance(small) <= 4 < 16 <= original.distance(other)
    assert (original.width, original.height) == cat.size and not original.grey


def test_train_warns_in_one_line_of_identical_images_across_splits(tmp_path, caplog):
    data = _data_set(tmp_path / "data")
    shutil.copy(data / "train/red/red_00.png", data / "val/red/copy.png")
    shutil.copy(data / "train/red/red_02.png", data / "train/red/again.png")
    caplog.set_level("WARNING", logger="imgcls")
    imgcls.train(data, tmp_path / "run", config=TINY)
    warnings = [r.getMessage() for r in caplog.records if "identical images" in r.getMessage()]
    assert warnings == [
        "2 groups of identical images (1 in training and a held-out split at once, which flatters held-out "
        "accuracy); `imgcls doctor` lists them, with near copies, likely mislabels and outliers"
    ]


def test_doctor_uses_a_trained_models_features_and_prints_json(tmp_path, capsys, caplog, monkeypatch):
    data = _data_set(tmp_path / "data")
    imgcls.train(data, tmp_path / "run", config=TINY)
    monkeypatch.chdir(tmp_path)  # the report's default folder: DATA's name + -doctor, here
    assert main(["doctor", str(data), "--model", str(tmp_path / "run"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in (tmp_path / "data-doctor").iterdir()) == [
        "doctor.html",
        "doctor.json",
        "issues.csv",
    ]
    assert main(["doctor", str(data), "--model", str(tmp_path / "run"), "-q"]) == 0  # its own folder again
    assert "report        data-doctor/doctor.html" in capsys.readouterr().out
    assert "logistic head" not in caplog.text  # the folds' fits stay quiet
    assert out["backbone"] == TINY_BACKBONE and out["images"] == 39
    assert out["label_check"]["folds"] == 5 and out["counts"].get("unreadable", 0) == 0
    assert main(["doctor", str(data), "--relabel"]) == 2
    assert "--relabel goes with --write-clean" in capsys.readouterr().err
