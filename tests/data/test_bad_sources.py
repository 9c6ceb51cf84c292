"""Hostile data sources (tests/bad_sources.py): names from data never write outside the output
or onto each other, paths from data never read outside the source, malformed structure is a
``DataError`` that names the file, and nothing is lost without being reported."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from imgcls._files import FORMULA_STARTS, NameAllocator, csv_cell, csv_text, path_component
from imgcls.cli.main import main
from imgcls.data.convert import convert
from imgcls.data.images import UnreadableImageError, load_rgb
from imgcls.data.records import OUTSIDE_ROOT_ENV
from imgcls.data.sources import open_source
from imgcls.errors import DataError
from tests import bad_sources as bad


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _all_files_written_inside(root: Path, output: Path) -> None:
    """Every file under ``root`` (the test's whole folder) other than the inputs lies in ``output``."""
    outside = {
        p
        for p in _files_under(root)
        if not p.is_relative_to(output) and "in" not in p.relative_to(root).parts[:1]
    }
    assert not outside, sorted(map(str, outside))


# Names from data that become paths.


@pytest.mark.parametrize(
    "name", [*bad.ESCAPING_LABELS, "", ".", "...", ".hidden", "x" * 400, "nul.txt", "a\\b", "é"]
)
def test_a_data_name_becomes_one_safe_name_inside_its_folder(name, tmp_path):
    component = path_component(name)
    assert component and "/" not in component and "\\" not in component
    assert not component.startswith(".") and len(component.encode()) <= 200
    assert component.split(".")[0].lower() not in {"con", "prn", "aux", "nul"}
    assert (tmp_path / component).resolve().parent == tmp_path.resolve()


def test_names_that_come_out_the_same_are_numbered_and_recorded():
    files = NameAllocator()
    given = [files.unique(Path(n).stem, ".png") for n in bad.CLASHING_NAMES]
    assert len({g.casefold() for g in given}) == len(given) == 5
    assert given[:4] == ["img 1.png", "img_1.png", "img@1.png", "é.png"]  # distinct names stay
    assert files.collided == [("IMG_1", "IMG_1-2.png")]  # one file to a case-insensitive disk
    assert files.unique("img 1", ".png") == "img 1-2.png"  # a file is never given a taken name
    labels = NameAllocator()
    assert labels("a/b") == labels("a/b") == "a_b" and labels("a_b") == "a_b-2"  # a class: one folder
    assert labels.changed == [("a/b", "a_b"), ("a_b", "a_b-2")]
    assert path_component("हिंदी") == "हिंदी" and path_component("कि") != path_component("की")


@pytest.mark.parametrize("target", ["folder", "manifest", "webdataset"])
def test_convert_writes_labels_that_would_escape_only_inside_its_output(target, tmp_path):
    manifest = bad.labelled_manifest(tmp_path / "in", bad.ESCAPING_LABELS)
    scan = open_source(manifest)
    output = tmp_path / "out" / ("list.csv" if target == "manifest" else "converted")
    done = convert(scan, output, to=target)
    assert done.images == 3 * len(bad.ESCAPING_LABELS)
    _all_files_written_inside(tmp_path, tmp_path / "out")
    if target == "folder":
        assert {label for label, _ in done.renamed_labels} == set(bad.ESCAPING_LABELS)
        assert len({folder for _, folder in done.renamed_labels}) == len(bad.ESCAPING_LABELS)
        assert len(_files_under(output)) == done.images
    back = open_source(output, min_classes=1)
    assert len(back.records) == done.images and len(back.classes) == len(bad.ESCAPING_LABELS)
    if target != "folder":  # a manifest or shards keep the labels as text, exactly
        assert set(back.classes) == set(bad.ESCAPING_LABELS)


def test_shard_and_hugging_face_labels_are_folder_names_only_inside_the_output(tmp_path):
    pytest.importorskip("pyarrow", reason="the data extra (pip install 'imgcls[data]')")
    shard = bad.shards_with_labels(tmp_path / "in" / "shards", bad.ESCAPING_LABELS)
    cells = [{"bytes": bad.png_bytes(i), "path": None} for i in range(10)]
    parquet = bad.hf_parquet(tmp_path / "in" / "hub", cells, [*bad.ESCAPING_LABELS] * 2)
    for n, source in enumerate((shard, parquet)):
        done = convert(open_source(source), tmp_path / "out" / str(n), to="folder")
        assert len(_files_under(done.output)) == done.images == 10
    _all_files_written_inside(tmp_path, tmp_path / "out")


def test_convert_keeps_every_file_whose_names_clash_and_says_so(tmp_path, capsys):
    data = tmp_path / "in" / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i, name in enumerate((*bad.CLASHING_NAMES, "2.jpg", "2.JPG")):
            (data / label / name).write_bytes(bad.png_bytes(i + 10 * len(label)))
    output = tmp_path / "out"
    assert main(["convert", str(data), str(output), "--to", "folder"]) == 0
    said = capsys.readouterr().out
    assert "wrote 14 images" in said and "4 images numbered" in said
    assert len(_files_under(output)) == 14  # none overwritten by another of the same name
    assert "a_é.png" in {p.name for p in _files_under(output)}  # beyond ASCII is kept, not merged


def test_a_failed_or_killed_convert_leaves_no_output_that_looks_complete(tmp_path):
    pytest.importorskip("pyarrow", reason="the data extra (pip install 'imgcls[data]')")
    cells = [{"bytes": bad.png_bytes(i), "path": None} for i in range(6)]
    cells[4] = {"bytes": b"not an image", "path": None}
    parquet = bad.hf_parquet(tmp_path / "hub", cells, ["x", "y"] * 3)
    output = tmp_path / "out"
    with pytest.raises(DataError, match=r"parquet: the image of train/000004 is not an image file"):
        convert(open_source(parquet), output, to="folder")
    assert not output.exists() and not list(tmp_path.glob(".out*"))
    # What a kill leaves: a hidden partial folder, which the next conversion starts afresh.
    (tmp_path / ".out.partial" / "x").mkdir(parents=True)
    (tmp_path / ".out.partial" / "x" / "stale.png").write_bytes(b"stale")
    cells[4] = {"bytes": bad.png_bytes(4), "path": None}
    parquet.unlink()
    bad.hf_parquet(tmp_path / "hub", cells, ["x", "y"] * 3)
    done = convert(open_source(parquet), output, to="folder")
    assert len(_files_under(output)) == done.images == 6 and not (tmp_path / ".out.partial").exists()


def test_a_manifest_written_elsewhere_copies_its_images_beside_it(image_folder, tmp_path):
    done = convert(open_source(image_folder), tmp_path / "lists" / "all.csv", to="manifest")
    rows = list(csv.DictReader(done.output.open()))
    assert all(r["path"].startswith("images/") for r in rows) and done.files == len(rows) == 36
    beside = convert(open_source(image_folder), image_folder.parent / "beside.csv", to="manifest")
    assert beside.files == 0  # the images are in the manifest's folder already: listed, not copied
    assert {r["path"].split("/")[0] for r in csv.DictReader(beside.output.open())} == {image_folder.name}


def test_a_manifest_beside_an_images_folder_it_need_not_write_to(tmp_path):
    data = tmp_path / "images"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        (data / label / "1.png").write_bytes(bad.png_bytes(len(label)))
    done = convert(open_source(data), tmp_path / "train.csv", to="manifest")
    assert done.files == 0 and len(open_source(done.output).records) == 2


# Paths from data that are read.


@pytest.mark.parametrize("path", ["/etc/hostname", "../outside.png", "sub/../../outside.png"])
def test_a_manifest_path_outside_its_folder_is_refused_unless_allowed(path, tmp_path, monkeypatch):
    (tmp_path / "outside.png").write_bytes(bad.png_bytes(3))
    manifest = bad.manifest_naming(tmp_path / "data", path)
    with pytest.raises(DataError, match=rf"line 4 names {path}, outside .*--allow-outside-root"):
        open_source(manifest)
    if Path(tmp_path / "data" / path).is_file():
        assert len(open_source(manifest, allow_outside_root=True).records) == 3
        monkeypatch.setenv(OUTSIDE_ROOT_ENV, "1")
        assert len(open_source(manifest).records) == 3


def test_a_symbolic_link_in_the_data_to_a_file_elsewhere_counts_as_outside(tmp_path):
    (tmp_path / "secret.png").write_bytes(bad.png_bytes(5))
    manifest = bad.manifest_naming(tmp_path / "data", "linked.png")
    (tmp_path / "data" / "linked.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataError, match=r"line 4 names linked.png, outside"):
        open_source(manifest)
    assert len(open_source(manifest, allow_outside_root=True).records) == 3
    linked_root = tmp_path / "linked-data"
    linked_root.symlink_to(tmp_path / "data")  # a data folder that is itself a link is fine
    (tmp_path / "data" / "linked.png").unlink()
    (tmp_path / "data" / "linked.png").write_bytes(bad.png_bytes(6))
    assert len(open_source(linked_root / "list.csv").records) == 3


def test_the_cli_flag_lets_a_trusted_manifest_read_outside_its_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(OUTSIDE_ROOT_ENV, raising=False)
    (tmp_path / "outside.png").write_bytes(bad.png_bytes(3))
    manifest = bad.manifest_naming(tmp_path / "data", "../outside.png")
    assert main(["inspect-data", str(manifest)]) != 0
    assert "--allow-outside-root" in capsys.readouterr().err
    assert main(["inspect-data", str(manifest), "--allow-outside-root"]) == 0
    assert OUTSIDE_ROOT_ENV not in os.environ  # allowed for that command only


def test_a_device_file_is_not_a_regular_file(tmp_path):
    with pytest.raises(DataError, match=r"/dev/zero is not a regular file"):
        open_source(bad.manifest_naming(tmp_path / "data", "/dev/zero"), allow_outside_root=True)


def test_a_hugging_face_image_path_outside_the_data_set_is_not_read(tmp_path):
    pytest.importorskip("pyarrow", reason="the data extra (pip install 'imgcls[data]')")
    secret = tmp_path / "secret.png"
    secret.write_bytes(bad.png_bytes(7))
    inside = tmp_path / "hub" / "inside.png"
    inside.parent.mkdir()
    inside.write_bytes(bad.png_bytes(8))
    cells = [{"bytes": None, "path": str(secret)}, {"bytes": None, "path": "inside.png"}]
    parquet = bad.hf_parquet(tmp_path / "hub", cells, ["x", "y"])
    scan = open_source(parquet, min_classes=1)
    refused, allowed = (scan.images[r.path] for r in scan.records)
    with pytest.raises(UnreadableImageError, match=r"outside .*--allow-outside-root"):
        load_rgb(refused)
    assert load_rgb(allowed).size == (16, 16)  # a relative path inside the data set's folder
    trusted = open_source(parquet, min_classes=1, allow_outside_root=True)
    assert load_rgb(trusted.images[trusted.records[0].path]).size == (16, 16)


# Structure that crashed a reader.


def test_deeply_nested_json_lines_are_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"list.jsonl line 2 nests JSON too deeply"):
        open_source(bad.deeply_nested_jsonl(tmp_path / "data"))


@pytest.mark.parametrize(
    ("data", "labels", "expected"),
    [
        (np.array([None] * 4, dtype=object), [0, 1, 2, 3], r"data is a object array, not the uint8"),
        (bad.shared_reference_rows(), [0] * 150_000, r"data is a list, not the uint8"),
        (np.zeros((4, 3072), np.uint8), [None, 1, 2, 3], r"labels are not all whole numbers"),
        (np.zeros((4, 3072), np.float32), [0, 1, 2, 3], r"data is a float32 array"),
    ],
)
def test_a_cifar_batch_of_the_wrong_types_is_a_data_error(data, labels, expected, tmp_path):
    folder = bad.cifar_python_with(tmp_path, data, labels)
    with pytest.raises(DataError, match=rf"data_batch_1: (its )?{expected}"):
        open_source(folder)


def test_a_cifar_pickle_of_shared_references_stays_small_when_refused(tmp_path):
    folder = bad.cifar_python_with(tmp_path, bad.shared_reference_rows(), [0] * 150_000)
    assert (folder / "data_batch_1").stat().st_size < 2_000_000  # would expand to 460 MB of pixels
    with pytest.raises(DataError, match="not the uint8 pixel array"):
        open_source(folder)


def test_hugging_face_parquet_without_the_image_column_its_metadata_names(tmp_path):
    pytest.importorskip("pyarrow", reason="the data extra (pip install 'imgcls[data]')")
    features = {"image": {"_type": "Image"}, "label": {"_type": "Value", "dtype": "string"}}
    cells = [{"bytes": bad.png_bytes(i)} for i in range(4)]
    parquet = bad.hf_parquet(tmp_path / "hub", cells, ["x", "y"] * 2, features=features)
    with pytest.raises(DataError, match=r"train-00000-of-00001.parquet has no image column"):
        open_source(parquet, data_format="huggingface")


def test_a_shard_cut_at_a_member_boundary_is_reported_not_read_short(tmp_path):
    shard = bad.shard_cut_at_a_member_boundary(tmp_path / "shards")
    with pytest.raises(DataError, match=r"stops after 10 samples without the end-of-archive marker"):
        open_source(shard)


# Cells a spreadsheet would run.


@pytest.mark.parametrize("text", [*bad.FORMULA_LABELS, "''x", "'x", "plain", "", "=", "'"])
def test_a_csv_cell_is_never_a_formula_and_reads_back_as_written(text):
    cell = csv_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    assert csv_text(cell) == text


def test_labels_that_look_like_formulas_are_neutralised_in_every_csv_and_read_back(tmp_path):
    manifest = bad.labelled_manifest(tmp_path / "in", bad.FORMULA_LABELS[:3])
    written = convert(open_source(manifest), tmp_path / "out" / "list.csv", to="manifest").output
    cells = [cell for row in csv.reader(written.open()) for cell in row]
    assert cells and not [c for c in cells if c.startswith(FORMULA_STARTS)]
    assert set(open_source(written).classes) == set(bad.FORMULA_LABELS[:3])
