"""Every data source reads the same images the same way: folders, manifests, CIFAR as distributed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from imgcls.data.images import load_rgb
from imgcls.data.records import TEST, TRAIN, DatasetScan
from imgcls.data.sources import SOURCE_KINDS, detect_format, open_source
from imgcls.errors import DataError
from tests.conftest import COLOURS, TINY_BACKBONE
from tests.data.cifar_files import (
    CLASSES10,
    py2_batch,
    tar_gz,
    write_cifar10_binary,
    write_cifar10_python,
    write_shards,
)

TINY = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, input_size=32, report=False)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 32 x 32 images of the ten classes, each class a colour, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES10)
    base = rng.integers(0, 256, (len(CLASSES10), 3))
    pixels = np.clip(base[labels][:, None, None, :] + rng.normal(0, 20, (n, 32, 32, 3)), 0, 255)
    return pixels.astype(np.uint8), labels


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory) -> dict[str, Path]:
    """The same 70 images as a class-folder tree, a CSV and a JSONL manifest, CIFAR-10's python
    (folder and .tar.gz) and binary distributions, and WebDataset shards."""
    root = tmp_path_factory.mktemp("sources")
    train, test = _images(50, seed=1), _images(20, seed=2)
    rows = []
    shards: dict[str, list[tuple[str, bytes, int]]] = {TRAIN: [], TEST: []}
    for split, (pixels, labels) in ((TRAIN, train), (TEST, test)):
        for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
            path = root / "folder" / split / CLASSES10[label] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            shards[split].append((f"{i:05d}", path.read_bytes(), int(label)))
            rows.append(
                {
                    "path": path.relative_to(root / "folder").as_posix(),
                    "label": CLASSES10[label],
                    "split": split,
                }
            )
    (root / "folder" / "list.csv").write_text(
        "path,label,split\n" + "".join(f"{r['path']},{r['label']},{r['split']}\n" for r in rows)
    )
    (root / "folder" / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    python = write_cifar10_python(root / "py", train, test)
    return {
        "folder": root / "folder",
        "csv": root / "folder" / "list.csv",
        "jsonl": root / "folder" / "list.jsonl",
        "python": python,
        "torchvision root": root / "py",
        "tar.gz": tar_gz(python, root / "cifar-10-python.tar.gz"),
        "binary": write_cifar10_binary(root / "bin", train, test),
        "webdataset": write_shards(root / "shards", shards),
    }


def _content(scan: DatasetScan) -> list[tuple[str, str | None, bytes]]:
    """Each image's label, named split and pixels, in a canonical order."""
    return sorted(
        (r.label, r.folder_split, np.asarray(load_rgb(scan.absolute(r))).tobytes()) for r in scan.records
    )


def test_each_format_is_detected(cifar_like):
    expected = {"folder": "folder", "csv": "manifest", "jsonl": "manifest", "python": "cifar"}
    expected |= {
        "torchvision root": "cifar",
        "tar.gz": "cifar",
        "binary": "cifar",
        "webdataset": "webdataset",
    }
    assert {name: detect_format(path) for name, path in cifar_like.items()} == expected


def test_the_source_table_is_what_the_command_line_offers():
    from imgcls.cli.main import build_parser
    from imgcls.config import DATA_FORMATS

    names = [kind.name for kind in SOURCE_KINDS]
    assert sorted(names) == sorted(DATA_FORMATS[1:]) and DATA_FORMATS[0] == "auto"
    assert names[-1] == "folder" and SOURCE_KINDS[-1].recognises(Path("anything"))  # the fallback
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    offered = next(a.choices for a in train._actions if a.dest == "data_format")
    assert list(offered) == list(DATA_FORMATS)


def test_every_format_reads_the_same_images_labels_and_splits(cifar_like):
    scans = {name: open_source(path) for name, path in cifar_like.items()}
    reference = _content(scans["folder"])
    assert len(reference) == 70
    for name, scan in scans.items():
        assert scan.classes == sorted(CLASSES10), name
        assert scan.folder_splits == {TRAIN, TEST}, name
        assert _content(scan) == reference, name
    assert scans["python"].records[0].path == "data_batch_1/00000"


def test_a_cifar_batch_whose_pickle_would_run_code_is_refused_and_runs_nothing(cifar_like, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for item in cifar_like["python"].iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    marker = tmp_path / "ran"
    command = f"touch {marker}".encode()
    (folder / "data_batch_3").write_bytes(
        b"\x80\x02cos\nsystem\nq\x01U" + bytes([len(command)]) + command + b"q\x02\x85q\x03Rq\x04."
    )
    with pytest.raises(DataError, match=r"data_batch_3 refused: it asks for os\.system") as raised:
        open_source(folder)
    assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_a_python_batch_is_what_python_2_wrote():
    pixels, labels = _images(3, seed=3)
    data = py2_batch(pixels, labels, b"b")
    assert data.startswith(b"\x80\x02}q\x01(U\x0bbatch_labelq\x02U\x01bq\x03U\x06labels")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"_codecs" not in data


def test_cifar_with_a_missing_batch_names_it(cifar_like, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for item in cifar_like["python"].iterdir():
        if item.name != "data_batch_4":
            (folder / item.name).write_bytes(item.read_bytes())
    with pytest.raises(DataError, match="is missing data_batch_4"):
        open_source(folder)


def test_cifar_100_reads_fine_or_coarse_labels(tmp_path):
    from tests.data.cifar_files import Py2Pickler

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    pixels, labels = _images(20, seed=4)
    coarse = [int(v) % 2 for v in labels]
    for name in ("train", "test"):
        batch = Py2Pickler().dict_(
            {
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": coarse,
                b"data": pixels.transpose(0, 3, 1, 2).reshape(20, -1),
            }
        )
        (folder / name).write_bytes(batch)
    meta = Py2Pickler().dict_(
        {b"fine_label_names": [c.encode() for c in CLASSES10], b"coarse_label_names": [b"even", b"odd"]}
    )
    (folder / "meta").write_bytes(meta)
    assert open_source(folder).classes == sorted(CLASSES10)
    coarse_scan = open_source(folder, label_set="coarse")
    assert coarse_scan.classes == ["even", "odd"] and len(coarse_scan.records) == 40


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,label\na.png,x\n", "no 'path' column"),
        ("path,label\nmissing.png,x\n", "line 2: image missing.png does not exist"),
        ("path,label\na.png,x\nb.png,x\n", "only one class"),
        ("path,label,split\na.png,x,holdout\n", "unknown split 'holdout'"),
        ("path,label\na.png,x\na.png,y\n", "lists a.png again"),
    ],
)
def test_a_bad_manifest_says_what_is_wrong(tmp_path, content, message):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "list.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        open_source(tmp_path / "list.csv")


def test_a_manifest_may_name_its_path_and_label_columns(cifar_like, tmp_path, capsys):
    from imgcls.cli.main import main

    reference = _content(open_source(cifar_like["csv"]))
    text = cifar_like["csv"].read_text()
    renamed = cifar_like["folder"] / "renamed.csv"
    renamed.write_text(text.replace("path,label", "filename,class", 1))
    with pytest.raises(
        DataError, match=r"no 'path' or 'label' column \(found filename, class, split\).*--path-column"
    ):
        open_source(renamed)
    columns = {"path_column": "filename", "label_column": "class"}
    assert _content(open_source(renamed, **columns)) == reference
    clf = imgcls.train(renamed, tmp_path / "run", config=TINY.with_overrides(columns))
    assert clf.evaluate(renamed, split="test", **columns).report["n"] == 20
    flags = ["--path-column", "filename", "--label-column", "class"]
    assert main(["inspect-data", str(renamed), *flags, "--json"]) == 0
    assert sum(json.loads(capsys.readouterr().out)["counts"]["test"].values()) == 20
    assert main(["evaluate", str(tmp_path / "run"), str(renamed), "--split", "test", *flags, "--json"]) == 0


def test_a_dataframe_like_table_is_a_manifest(cifar_like, monkeypatch):
    class Frame:
        columns = ("path", "label", "split")

        def __init__(self, rows: list[dict]) -> None:
            self.rows = rows

        def to_dict(self, orient: str) -> list[dict]:
            assert orient == "records"
            return self.rows

    monkeypatch.chdir(cifar_like["folder"])
    rows = [json.loads(line) for line in cifar_like["jsonl"].read_text().splitlines()]
    scan = open_source(Frame(rows))
    assert scan.format == "manifest" and len(scan.records) == 70


def test_training_on_cifar_as_distributed_tests_on_its_test_batch(cifar_like, tmp_path):
    clf = imgcls.train(cifar_like["tar.gz"], tmp_path / "run", config=TINY)
    assert clf.metrics["test"]["n"] == 20
    assert clf.metrics["train"]["n"] + clf.metrics["val"]["n"] == 50
    evaluation = clf.evaluate(cifar_like["binary"], split="test")
    assert evaluation.report["n"] == 20 and evaluation.accuracy == clf.metrics["test"]["accuracy"]
    resumed_config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert resumed_config["data"] == str(cifar_like["tar.gz"].resolve())
    from imgcls.deploy.export import MAX_CHECK_IMAGES, export_model

    # The parity check reads the run's own validation images out of the archive.
    assert export_model(tmp_path / "run", format="onnx").images == MAX_CHECK_IMAGES
    # Prediction reads a source's images too, and names them by record id.
    from imgcls.cli.main import main

    output = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run"), str(cifar_like["binary"]), "--output", str(output)]) == 0
    rows = output.read_text().splitlines()
    assert len(rows) == 71 and any(row.startswith("test_batch.bin/00019,") for row in rows)


SYNSETS = {"n01440764": "tench, Tinca tinca", "n02102040": "English springer, English springer spaniel"}
SYNSETS |= {"n03000684": "chain saw, chainsaw"}


def _kaggle_imagenet(root: Path) -> Path:
    """Kaggle's ImageNet layout in miniature: class folders for train, one flat val folder."""
    from tests.conftest import make_image

    root.mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{k} {v}\n" for k, v in SYNSETS.items()))
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    solution = ["ImageId,PredictionString\n"]
    for c, synset in enumerate(SYNSETS):
        colour = list(COLOURS.values())[c]
        (images / "train" / synset).mkdir(parents=True)
        for i in range(10):
            make_image(colour, seed=100 * c + i).save(
                images / "train" / synset / f"{synset}_{i}.JPEG", "JPEG"
            )
        (images / "val").mkdir(exist_ok=True)
        for i in range(4):
            image_id = f"ILSVRC2012_val_{c * 4 + i + 1:08d}"
            make_image(colour, seed=900 + 10 * c + i).save(images / "val" / f"{image_id}.JPEG", "JPEG")
            solution.append(f"{image_id},{synset} 10 20 200 220\n")
    (root / "LOC_val_solution.csv").write_text("".join(solution))
    return root


def test_kaggle_imagenet_trains_evaluates_and_predicts_readable_class_names(tmp_path, capsys):
    from imgcls.cli.main import main

    data = _kaggle_imagenet(tmp_path / "imagenet")
    assert detect_format(data) == "imagenet"
    scan = open_source(data)
    assert scan.classes == ["n01440764 tench", "n02102040 English springer", "n03000684 chain saw"]
    assert scan.folder_splits == {TRAIN, "val"} and len(scan.records) == 42
    clf = imgcls.train(data, tmp_path / "run", config=TINY)
    assert clf.metrics["val"]["n"] == 12 and "train" in clf.metrics
    assert clf.evaluate(data, split="val").report["n"] == 12
    first_val = data / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG"
    assert clf.predict(str(first_val)).label in scan.classes
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(first_val), "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in scan.classes), printed


def test_a_kaggle_val_image_without_a_label_is_named(tmp_path):
    data = _kaggle_imagenet(tmp_path / "imagenet")
    (data / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    with pytest.raises(DataError, match=r"ILSVRC2012_val_00000001\.JPEG .* has no label"):
        open_source(data)


def test_a_shard_sample_without_a_label_is_named(tmp_path):
    import io
    import tarfile

    data = io.BytesIO()
    Image.new("RGB", (8, 8)).save(data, "PNG")
    with tarfile.open(tmp_path / "train-000000.tar", "w") as tar:
        member = tarfile.TarInfo("cat_001.png")
        member.size = len(data.getvalue())
        tar.addfile(member, io.BytesIO(data.getvalue()))
    with pytest.raises(DataError, match=r"train-000000\.tar: sample cat_001 has no label \(\.cls"):
        open_source(tmp_path)


@pytest.mark.parametrize(
    ("target", "name"), [("folder", "out"), ("manifest", "out/list.csv"), ("webdataset", "out")]
)
def test_convert_writes_a_layout_that_reads_back_the_same_images(cifar_like, tmp_path, target, name):
    from imgcls.cli.main import main

    reference = _content(open_source(cifar_like["python"]))
    output = tmp_path / name
    assert main(["convert", str(cifar_like["python"]), str(output), "--to", target]) == 0
    converted = open_source(output)
    assert converted.format == {"folder": "folder", "manifest": "manifest"}.get(target, "webdataset")
    assert _content(converted) == reference
    assert main(["convert", str(cifar_like["python"]), str(output), "--to", target]) == 2  # never overwrites


def test_converted_shards_carry_timms_split_info(cifar_like, tmp_path):
    from imgcls.data.convert import convert

    convert(open_source(cifar_like["binary"]), tmp_path / "shards", to="webdataset", shard_samples=16)
    info = json.loads((tmp_path / "shards" / "_info.json").read_text())
    assert info["classes"] == sorted(CLASSES10) and info["num_classes"] == 10
    assert info["splits"]["train"]["num_samples"] == 50 and info["splits"]["train"]["shard_lengths"] == [
        16,
        16,
        16,
        2,
    ]
    assert info["splits"]["test"]["filenames"] == ["test-000000.tar", "test-000001.tar"]


def _hf_rows(folder: Path) -> dict[str, dict[str, list]]:
    """The fixture's class-folder images as Hugging Face columns, per split."""
    columns: dict[str, dict[str, list]] = {}
    for path in sorted(folder.rglob("*.png")):
        split, label = path.relative_to(folder).parts[:2]
        part = columns.setdefault(split, {"img": [], "label": []})
        part["img"].append({"bytes": path.read_bytes(), "path": None})
        part["label"].append(CLASSES10.index(label))
    return columns


def test_a_hugging_face_dataset_and_its_parquet_files_read_the_same_images(cifar_like, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the data extra (pip install 'imgcls[data]')")
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES10))}
    )
    parts = {
        split: datasets.Dataset.from_dict(columns, features=features)
        for split, columns in _hf_rows(cifar_like["folder"]).items()
    }
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "hub").mkdir()
    for split, part in parts.items():
        part.to_parquet(str(tmp_path / "hub" / f"{split}-00000-of-00001.parquet"))
    reference = _content(open_source(cifar_like["folder"]))
    for source in (tmp_path / "saved", tmp_path / "hub", tmp_path / "hub" / "train-00000-of-00001.parquet"):
        assert detect_format(source) == "huggingface", source
        scan = open_source(source, min_classes=1)
        expected = reference if source.is_dir() else [c for c in reference if c[1] == TRAIN]
        assert _content(scan) == expected, source


def test_a_parquet_manifest_and_a_pandas_dataframe_are_manifests(cifar_like):
    pandas = pytest.importorskip("pandas", reason="the data extra (pip install 'imgcls[data]')")
    frame = pandas.read_csv(cifar_like["csv"])
    parquet = cifar_like["folder"] / "list.parquet"
    frame.to_parquet(parquet)
    reference = _content(open_source(cifar_like["folder"]))
    assert detect_format(parquet) == "manifest" and _content(open_source(parquet)) == reference
    frame["path"] = [str(cifar_like["folder"] / p) for p in frame["path"]]  # absolute paths
    assert detect_format(frame) == "manifest" and _content(open_source(frame)) == reference


def test_cross_validation_and_inspect_data_read_any_source(cifar_like, capsys):
    from imgcls.cli.main import main

    result = imgcls.cross_validate(cifar_like["jsonl"], folds=2, config=TINY)
    assert len(result.per_fold) == 2 and sum(f["n_val"] for f in result.per_fold) == 50  # test batch held out
    assert main(["inspect-data", str(cifar_like["tar.gz"]), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert sum(counts["counts"]["test"].values()) == 20


def test_class_folders_named_by_synset_get_readable_names_and_older_models_still_evaluate(tmp_path):
    from tests.conftest import make_image

    data = tmp_path / "imagenet"
    for c, synset in enumerate(SYNSETS):
        for split, count in (("train", 8), ("val", 3)):
            (data / split / synset).mkdir(parents=True)
            for i in range(count):
                make_image(list(COLOURS.values())[c], seed=50 * c + i).save(
                    data / split / synset / f"{i}.png"
                )
    scan = open_source(data)  # no mapping file beside it: the synset list timm ships names them
    assert scan.classes == ["n01440764 tench", "n02102040 English springer", "n03000684 chain saw"]
    assert scan.format == "folder" and scan.records[0].path.startswith("train/n01440764/")
    clf = imgcls.train(data, tmp_path / "run", config=TINY)
    assert clf.classes == scan.classes
    clf.classes = [c.split(" ")[0] for c in clf.classes]  # a model saved with bare synset ids
    assert clf.evaluate(data, split="val").report["n"] == 9


def test_a_damaged_parquet_file_or_saved_dataset_is_named(tmp_path):
    pytest.importorskip("pyarrow", reason="the data extra (pip install 'imgcls[data]')")
    (tmp_path / "list.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"cannot read Parquet file .*list\.parquet"):
        open_source(tmp_path / "list.parquet")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "state.json").write_text("{ damaged")
    with pytest.raises(DataError, match=r"cannot read the Hugging Face data set .*saved"):
        open_source(saved)


def test_shards_are_read_in_place_and_split_between_processes_by_whole_shards(image_folder, tmp_path):
    import gzip
    import shutil

    from imgcls.data.convert import convert
    from imgcls.data.sources.webdataset import share_by_shard
    from imgcls.models.features import file_digest

    folder = open_source(image_folder)
    convert(folder, tmp_path / "shards", to="webdataset", shard_samples=8)  # 36 images, 5 shards
    shards = open_source(tmp_path / "shards")
    image = shards.images[shards.records[0].path]
    assert image.member is not None and image.data is None  # a place in the shard, not its bytes
    originals = {file_digest(folder.absolute(r)) for r in folder.records}
    assert {file_digest(shards.absolute(r)) for r in shards.records} == originals  # same cache keys

    shares = [share_by_shard(shards, rank, 2, 1) for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(len(shards.records)))
    archives = [{shards.images[shards.records[i].path].member.archive for i in s} for s in shares]
    assert not archives[0] & archives[1] and len(archives[0]) == 3  # whole shards, 3 + 2
    with pytest.raises(DataError, match=r"5 shards for 2 processes x 3 loader workers"):
        share_by_shard(shards, 0, 2, 3)
    assert share_by_shard(folder, 0, 2, 1) is None  # files: shared out image by image

    first = sorted((tmp_path / "shards").glob("*.tar"))[0]
    packed = tmp_path / "packed"
    packed.mkdir()
    with first.open("rb") as plain, gzip.open(packed / first.name, "wb") as compressed:
        shutil.copyfileobj(plain, compressed)  # a compressed shard: held in memory instead
    read = open_source(packed, min_classes=1)
    assert all(read.images[r.path].data is not None for r in read.records)
