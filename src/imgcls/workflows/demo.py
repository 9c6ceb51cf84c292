"""``imgcls demo``: the whole job on real data and weights that ship with the install.

The data are scikit-learn's 1,797 handwritten digits (8x8 scans from UCI), written out as a
class-folder tree of PNG files; the backbone is EfficientNet-Lite0 with its packaged
ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls._files import MODEL_SUBDIR, SPLITS_FILE
from imgcls.data.records import TEST, VAL
from imgcls.data.splits import read_manifest

# The scans are 8x8; smooth upsampling gives the pretrained backbone strokes rather than blocks.
DIGIT_SIZE = 64


def write_digits(folder: Path) -> Path:
    """Write scikit-learn's digits as ``folder/<digit>/<n>.png`` (64x64 grayscale, bicubic)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        out = folder / str(int(target)) / f"{index:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC).save(out)
    return folder


def run_demo(output: Path, *, overwrite: bool, echo: Callable[[str], None]) -> int:
    """Write the data, train, evaluate on the held-out split, predict one held-out image per
    class; how many of those predictions are right."""
    from imgcls.workflows.train import train

    data = output / "data"
    if not (data / "9").is_dir():
        write_digits(data)
    echo(f"data: scikit-learn digits written to {data}")
    clf = train(data, output / "run", overwrite=overwrite)
    validation = clf.evaluate(data, split=VAL)
    echo(f"validation accuracy: {validation.accuracy:.4f} on {validation.report['n']} images")
    evaluation = clf.evaluate(data, split=TEST)
    echo(f"test accuracy: {evaluation.accuracy:.4f} on {evaluation.report['n']} held-out images")
    samples = _one_test_image_per_class(output / "run" / SPLITS_FILE)
    right = 0
    for path, digit in samples:
        prediction = clf.predict(data / path)
        right += prediction.label == digit
        echo(f"predict held-out {path}: {prediction.label} ({prediction.probability:.2f}), true {digit}")
    echo(f"{right} of {len(samples)} sample predictions right")
    echo(f"model saved in {output / 'run' / MODEL_SUBDIR}; try: imgcls predict {output / 'run'} {data / '3'}")
    return right


def _one_test_image_per_class(manifest: Path) -> list[tuple[str, str]]:
    chosen: dict[str, str] = {}
    for path, (label, split) in read_manifest(manifest).items():
        if split == TEST:
            chosen.setdefault(label, path)
    return [(path, label) for label, path in sorted(chosen.items())]
