"""Sources that keep images elsewhere are scanned without reading their images: Hugging Face
Parquet files and saved data sets read an image's bytes when it is read, CIFAR's binary
batches are memory-mapped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgcls.data.images import UnreadableImageError, load_rgb
from imgcls.data.sources import huggingface, open_source
from imgcls.data.sources.huggingface import ParquetCell, SavedCell
from tests.data.cifar_files import CLASSES10, write_cifar10_binary


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def images():
    return [_png(10 * i) for i in range(24)], [i % 3 for i in range(24)]


def test_parquet_images_are_read_a_row_group_at_a_time_when_asked_for(images, tmp_path):
    pa = pytest.importorskip("pyarrow", reason="the data extra (pip install 'imgcls[data]')")
    import pyarrow.parquet as pq

    data, labels = images
    cells = [{"bytes": b, "path": None} for b in data]
    cells[5] = {"bytes": None, "path": None}  # a row without an image
    table = pa.table({"image": cells, "label": [f"c{v}" for v in labels]})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet", row_group_size=8)
    huggingface._row_group.cache_clear()
    scan = open_source(tmp_path, min_classes=1)
    assert huggingface._row_group.cache_info().misses == 0  # scanned from the labels alone
    assert len(scan.records) == 24 and scan.classes == ["c0", "c1", "c2"]
    stored = [scan.images[r.path] for r in scan.records]
    assert all(isinstance(s.member, ParquetCell) and s.data is None for s in stored)
    assert np.asarray(load_rgb(stored[17]))[0, 0, 0] == 170
    assert huggingface._row_group.cache_info().misses == 1  # one row group of three
    assert stored[16].encoded() == data[16]  # its neighbour came with it
    assert huggingface._row_group.cache_info().misses == 1
    with pytest.raises(UnreadableImageError, match=r"train/000005.*row group 0.*no image bytes"):
        load_rgb(stored[5])  # reported as that image's fault, like a broken file


def test_a_saved_dataset_reads_its_images_on_demand(images, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the data extra (pip install 'imgcls[data]')")
    data, labels = images
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}
    )
    part = datasets.Dataset.from_dict(
        {"img": [{"bytes": b, "path": None} for b in data], "label": labels}, features=features
    )
    datasets.DatasetDict({"train": part}).save_to_disk(str(tmp_path / "saved"))
    scan = open_source(tmp_path / "saved", min_classes=1)
    stored = [scan.images[r.path] for r in scan.records]
    assert all(isinstance(s.member, SavedCell) and s.data is None for s in stored)
    assert [r.label for r in scan.records] == [["a", "b", "c"][v] for v in labels]
    assert [s.encoded() for s in stored] == data


def test_cifar_binary_batches_are_mapped_not_read(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(30) % len(CLASSES10)
    folder = write_cifar10_binary(tmp_path, (pixels[:25], labels[:25]), (pixels[25:], labels[25:]))
    scan = open_source(folder)
    first = scan.images[scan.records[0].path].pixels
    assert isinstance(first.base, np.memmap) or isinstance(first, np.memmap)  # a view of the file
    np.testing.assert_array_equal(first, pixels[0])
