"""The commands that work on data sets themselves: ``convert`` and ``doctor``."""

from __future__ import annotations

import argparse

from imgcls.cli._options import (
    DATA_HELP,
    add_device_option,
    add_source_options,
    positive_int,
    print_json,
    source_keywords,
)
from imgcls.system.wording import count


def add_convert(p: argparse.ArgumentParser) -> None:
    from imgcls.data.convert import SHARD_SAMPLES, TARGETS

    p.add_argument("data", help=DATA_HELP)
    p.add_argument("output", help="the folder (or, for --to manifest, the .csv or .jsonl file) to write")
    p.add_argument("--to", required=True, choices=TARGETS, help="the layout to write")
    p.add_argument(
        "--shard-samples",
        type=positive_int,
        default=SHARD_SAMPLES,
        help=f"with --to webdataset: samples per shard (default: {SHARD_SAMPLES}; more, smaller "
        "shards spread over more processes)",
    )
    add_source_options(p, from_config=False)
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def run_convert(args: argparse.Namespace) -> int:
    from imgcls.data.convert import convert
    from imgcls.data.sources import open_source

    scan = open_source(args.data, **source_keywords(args))
    done = convert(scan, args.output, to=args.to, shard_samples=args.shard_samples)
    if args.json:
        print_json(
            {
                "output": str(done.output),
                "images": done.images,
                "files": done.files,
                "renamed_labels": dict(done.renamed_labels),
                "numbered_files": dict(done.numbered_files),
            }
        )
        return 0
    written = f"{count(done.images, 'image')} of {count(len(scan.classes), 'class')}"
    print(f"wrote {written} to {done.output} ({args.to})")
    for label, folder in done.renamed_labels:
        print(f"  class {label!r} is the folder {folder!r}: a folder is named by a safe, distinct name")
    if done.numbered_files:
        shown = ", ".join(f"{record!r} -> {name!r}" for record, name in done.numbered_files[:5])
        more = f" and {len(done.numbered_files) - 5} more" if len(done.numbered_files) > 5 else ""
        print(
            f"  {count(len(done.numbered_files), 'image')} numbered, their names being taken: {shown}{more}"
        )
    return 0


def add_doctor(p: argparse.ArgumentParser) -> None:
    from imgcls.config import FOLDS, TEST_FRACTION_DEFAULT_WORDS, TrainConfig

    defaults = TrainConfig()
    p.add_argument("data", help=DATA_HELP)
    add_source_options(p, from_config=False)
    p.add_argument(
        "-o",
        "--output",
        help="folder for doctor.html, doctor.json and issues.csv (default: DATA's name + -doctor, "
        "in the working directory)",
    )
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --output folder")
    p.add_argument(
        "--model", metavar="RUN_DIR", help="use this trained model's features (default: --backbone)"
    )
    p.add_argument(
        "--backbone", default=defaults.backbone, help=f"whose features (default: {defaults.backbone})"
    )
    p.add_argument("--weights", metavar="FILE", help="local state dict for --backbone")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random init (for tests)")
    add_device_option(p, "feature extraction and the mislabel check's heads")
    p.add_argument(
        "--input-size", type=positive_int, help="network input size in pixels (default: the backbone's)"
    )
    p.add_argument(
        "--folds", type=positive_int, default=FOLDS, help=f"folds of the mislabel check (default: {FOLDS})"
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of splits, folds and samples")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="validation share carved as train would carve it, for the leakage count",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        help=f"as for train ({TEST_FRACTION_DEFAULT_WORDS})",
    )
    p.add_argument(
        "--cache-dir", help="feature cache location (default: $IMGCLS_CACHE_DIR or ~/.cache/imgcls)"
    )
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="do not use the feature cache")
    p.add_argument(
        "--write-clean",
        metavar="MANIFEST",
        help="write a CSV manifest of the data without the duplicates, leaked copies, likely mislabels "
        "and outliers found (imgcls train reads it); nothing in DATA is moved or deleted",
    )
    p.add_argument(
        "--relabel",
        action="store_true",
        help="with --write-clean, give likely mislabels their suggested label instead of leaving them out",
    )
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")


def run_doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imgcls.config import TrainConfig
    from imgcls.errors import ConfigError
    from imgcls.workflows.doctor.outputs import DOCTOR_FILES
    from imgcls.workflows.doctor.run import doctor
    from imgcls.workflows.train import prepare_output_dir

    if args.relabel and not args.write_clean:
        raise ConfigError("--relabel goes with --write-clean MANIFEST")
    # The report always goes somewhere the summary names: by default DATA's name + -doctor here,
    # which a later run may write again as long as it holds only doctor's own files.
    default = f"{Path(args.data).expanduser().resolve().name or 'data'}-doctor"
    output = Path(args.output or default)
    ours = not args.output and output.is_dir() and {p.name for p in output.iterdir()} <= set(DOCTOR_FILES)
    prepare_output_dir(output, overwrite=args.overwrite or ours)
    args.output = str(output)
    config = TrainConfig(
        backbone=args.backbone,
        weights=args.weights,
        pretrained=args.pretrained,
        input_size=args.input_size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        cache_dir=args.cache_dir,
        use_cache=args.use_cache,
        **source_keywords(args),
        device=args.device,
    )
    diagnosis = doctor(
        args.data,
        args.output,
        model=args.model,
        config=config,
        folds=args.folds,
        write_clean=args.write_clean,
        relabel=args.relabel,
    )
    if args.json:
        print_json(diagnosis.to_dict())
        return 0
    print(f"images        {diagnosis.images} read, with the {diagnosis.backbone} features")
    for kind, n in diagnosis.counts().items():
        print(f"{kind:<20}{n}")
    for pair, leak in diagnosis.leakage.items():
        copies = f"{leak['with_copy_in_train']} of {leak['images']} held-out images"
        print(f"leakage {pair}: {copies} have a copy in train")
    if diagnosis.output is not None:
        print(f"report        {diagnosis.output / 'doctor.html'} (and doctor.json, issues.csv)")
    if args.write_clean:
        print(f"clean manifest {args.write_clean}")
    return 0
