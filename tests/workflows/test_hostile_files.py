"""Tampered files run no code, full disks and misplaced outputs end in a message that names the
path, and nothing that failed looks finished."""

from __future__ import annotations

import contextlib
import errno
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgcls.cli.main import main
from imgcls.errors import ModelFormatError, WeightsError
from tests.conftest import TINY_ARGS


class _RunsCode:
    """Unpickling this would run ``touch MARKER``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def trained(image_folder, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(image_folder), "--output", str(run), *TINY_ARGS]) == 0
    return run


def test_a_pickle_disguised_as_a_model_checkpoint_or_weights_runs_nothing(trained, tmp_path, capsys):
    from imgcls.models.weights import read_state_dict
    from imgcls.training.checkpoint import load_checkpoint

    marker = tmp_path / "ran"
    payload = pickle.dumps(_RunsCode(str(marker)))
    (trained / "model" / "model.safetensors").write_bytes(payload)
    capsys.readouterr()
    assert main(["predict", str(trained), str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "is not a readable safetensors file" in error and error.count("\n") == 1
    (tmp_path / "checkpoint.pt").write_bytes(payload)
    with pytest.raises(ModelFormatError) as raised:
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert "\n" not in str(raised.value)
    (tmp_path / "weights.pth").write_bytes(payload)
    with pytest.raises(WeightsError) as raised:
        read_state_dict(tmp_path / "weights.pth")
    assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_a_full_disk_names_the_path_and_leaves_no_finished_looking_run(
    image_folder, tmp_path, monkeypatch, capsys
):
    import imgcls.workflows.train as workflow

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(workflow, "write_manifest", no_space)
    run = tmp_path / "run"
    assert main(["train", str(image_folder), "--output", str(run), *TINY_ARGS]) == 2
    error = capsys.readouterr().err
    assert f"imgcls: error: {run / 'splits.csv'}: No space left on device" in error
    assert "Traceback" not in error and not (run / "metrics.json").exists()


@contextlib.contextmanager
def _small_filesystem(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` with ``options`` (e.g. ``size=96k``, ``ro``); the test skips
    where this machine does not allow mounting (the simulated full disk above still runs)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("strategy", ["probe", "finetune"])
def test_a_real_full_filesystem_under_the_output_ends_in_a_message_not_a_finished_run(
    image_folder, tmp_path, capsys, strategy
):
    with _small_filesystem(tmp_path / "small", "size=96k") as small:
        run = small / "run"
        args = ["train", str(image_folder), "--output", str(run), *TINY_ARGS, "--strategy", strategy]
        assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 2
        error = capsys.readouterr().err
        assert f"imgcls: error: {run}" in error and "No space left on device" in error
        assert "Traceback" not in error
        assert not (run / "metrics.json").exists()  # nothing that failed looks finished
        assert not list(small.rglob("*.tmp"))


def test_a_full_or_read_only_feature_cache_leaves_the_run_whole(image_folder, tmp_path, caplog):
    for options in ("size=8k", "ro"):
        with _small_filesystem(tmp_path / options.replace("=", "-"), options) as cache:
            run = tmp_path / f"run-{cache.name}"
            args = ["train", str(image_folder), "--output", str(run), *TINY_ARGS, "--cache-dir", str(cache)]
            assert main(args) == 0
            assert (run / "metrics.json").is_file()
    assert caplog.text.count("feature cache not written") == 2


def test_a_read_only_output_names_the_path(image_folder, tmp_path, capsys):
    with _small_filesystem(tmp_path / "read-only", "ro") as read_only:
        run = read_only / "run"
        assert main(["train", str(image_folder), "--output", str(run), *TINY_ARGS]) == 2
        error = capsys.readouterr().err
        assert f"imgcls: error: {run}" in error and "Read-only file system" in error
        assert "Traceback" not in error


def test_an_unwritable_feature_cache_is_a_warning_not_a_failure(image_folder, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    args = ["train", str(image_folder), "--output", str(tmp_path / "run"), *TINY_ARGS]
    assert main([*args, "--cache-dir", str(blocker / "cache")]) == 0
    assert "feature cache not written" in caplog.text
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_output_inside_the_data_is_refused_and_an_old_one_is_not_a_class(image_folder, tmp_path, capsys):
    inside = image_folder / "runs" / "first"
    assert main(["train", str(image_folder), "--output", str(inside), *TINY_ARGS]) == 2
    assert "is inside the data folder" in capsys.readouterr().err and not inside.exists()
    outside = tmp_path / "run"
    assert main(["train", str(image_folder), "--output", str(outside), *TINY_ARGS]) == 0
    shutil.copytree(outside, image_folder / "old-run")  # as an earlier version allowed
    from imgcls.data.sources import open_source

    scan = open_source(image_folder)
    assert "old-run" not in scan.classes
    assert any("old-run (an imgcls run directory" in entry for entry in scan.ignored)
