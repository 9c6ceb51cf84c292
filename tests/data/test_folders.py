"""Finding labelled images in the layouts users have."""

from __future__ import annotations

import pytest

from imgcls.data.sources.folders import expand_inputs, scan_dataset
from imgcls.errors import DataError
from tests.conftest import make_image, write_class_folders


def test_class_folders_layout(image_folder):
    scan = scan_dataset(image_folder)
    assert scan.classes == ["blue", "green", "red"]
    assert len(scan.records) == 36
    assert scan.folder_splits == set()
    assert all(r.folder_split is None for r in scan.records)


def test_split_folders_layout_with_valid_alias(tmp_path):
    write_class_folders(tmp_path / "train")
    write_class_folders(tmp_path / "valid", per_class=2)
    scan = scan_dataset(tmp_path)
    assert scan.folder_splits == {"train", "val"}
    assert sum(r.folder_split == "val" for r in scan.records) == 6


def test_nested_images_hidden_files_and_other_files(image_folder):
    nested = image_folder / "red" / "more"
    nested.mkdir()
    make_image((200, 0, 0), 99).save(nested / "deep.png")
    (image_folder / "red" / ".hidden.png").write_bytes(b"x")
    (image_folder / "red" / "notes.txt").write_text("n")
    (image_folder / "README.md").write_text("r")
    scan = scan_dataset(image_folder)
    paths = {r.path for r in scan.records}
    assert "red/more/deep.png" in paths
    assert "red/.hidden.png" not in paths
    assert any("notes.txt" in i for i in scan.ignored) and any("README.md" in i for i in scan.ignored)


def test_empty_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        scan_dataset(tmp_path)


def test_single_class_is_an_error(tmp_path):
    write_class_folders(tmp_path, classes=("red",))
    with pytest.raises(DataError, match="only one class"):
        scan_dataset(tmp_path)


def test_missing_folder_and_val_without_train(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    write_class_folders(tmp_path / "val")
    with pytest.raises(DataError, match="no train/ folder"):
        scan_dataset(tmp_path)


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    write_class_folders(tmp_path / "train", classes=("red", "green"))
    write_class_folders(tmp_path / "val", classes=("red", "blue"))
    with pytest.raises(DataError, match="blue"):
        scan_dataset(tmp_path)


def test_empty_class_folder_is_skipped(image_folder):
    (image_folder / "empty").mkdir()
    assert "empty" not in scan_dataset(image_folder).classes


def test_expand_inputs_files_folders_globs(image_folder):
    one = image_folder / "red" / "red_000.png"
    assert expand_inputs([str(one)]) == [one]
    assert len(expand_inputs([str(image_folder)])) == 36
    assert len(expand_inputs([str(image_folder / "*" / "*_00[01].png")])) == 6
    with pytest.raises(DataError, match="matches no files"):
        expand_inputs([str(image_folder / "*.jpeg")])
    with pytest.raises(DataError, match="does not exist"):
        expand_inputs([str(image_folder / "missing.png")])


def test_broken_and_looping_links_are_reported_not_dropped(image_folder, tmp_path, capsys):
    import os

    from imgcls.cli.main import main
    from tests.conftest import TINY_ARGS

    os.symlink(image_folder / "red" / "gone.png", image_folder / "red" / "dangling.png")
    os.symlink(image_folder / "red" / "loop.png", image_folder / "red" / "loop.png")
    os.symlink(tmp_path / "nowhere", image_folder / "red" / "notes.txt")
    scan = scan_dataset(image_folder)
    assert {"red/dangling.png", "red/loop.png"} <= {r.path for r in scan.records}
    assert any("notes.txt (a symbolic link to nothing)" in entry for entry in scan.ignored)
    run = tmp_path / "run"
    assert main(["train", str(image_folder), "--output", str(run), *TINY_ARGS]) == 0
    skipped = (run / "skipped.csv").read_text()
    assert "red/dangling.png,cannot read file (No such file or directory)" in skipped
    assert "red/loop.png,cannot read file (Too many levels of symbolic links)" in skipped


def test_images_without_class_folders_are_diagnosed(tmp_path):
    flat = tmp_path / "photos"
    flat.mkdir()
    for i in range(3):
        make_image((200, 0, 0), seed=i).save(flat / f"{i}.png")
    with pytest.raises(DataError, match=r"found 3 images directly in .*photos but no class sub-folders"):
        scan_dataset(flat)


@pytest.mark.parametrize("under_train", [False, True], ids=["classes", "train-val-classes"])
def test_one_class_folder_given_as_data_points_to_the_data_set(tmp_path, under_train):
    classes_at = tmp_path / "hymenoptera" / ("train" if under_train else "")
    write_class_folders(classes_at, per_class=1, classes=("red", "green"))
    with pytest.raises(DataError) as caught:
        scan_dataset(classes_at / "red")
    assert str(caught.value) == (
        f"{classes_at / 'red'} looks like a single class (1 image directly in {classes_at / 'red'} but no "
        f"class sub-folders); did you mean {tmp_path / 'hymenoptera'}, which has classes green and red?"
    )


def test_a_run_directory_given_as_data_asks_about_a_swap(image_folder, tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"is an imgcls run directory .*did you swap DATA and MODEL"):
        scan_dataset(run)


def test_messages_count_in_plain_english():
    from imgcls.system.wording import count, join_names

    assert [count(1, "image"), count(2, "image"), count(1, "entry"), count(3, "class")] == [
        "1 image", "2 images", "1 entry", "3 classes",
    ]  # fmt: skip
    assert join_names(["ants"]) == "ants" and join_names(["ants", "bees"]) == "ants and bees"
    assert join_names(list("abcdefg"), limit=3) == "a, b, c and 4 more"
