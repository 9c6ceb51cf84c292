"""fastai's ``vision_learner(...).fine_tune(EPOCHS)`` with EfficientNet-Lite0 and the same weights.

Run by ``benchmarks/run.py`` with fastai on PYTHONPATH (installed into its own folder):

    python benchmarks/fastai_baseline.py DATA TIMM_WEIGHTS.pth EPOCHS   # prints one JSON line

The weights reach timm through ``pretrained_cfg_overlay=dict(file=...)``; fastai normalises
with the timm model's own mean/std. Trains on ``train/``, validates on ``val/``, and scores
``test/`` when present.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fastai.vision.all import (
    ImageDataLoaders,
    Resize,
    accuracy,
    aug_transforms,
    get_image_files,
    vision_learner,
)


def main() -> None:
    data, weights, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    started = time.perf_counter()
    dls = ImageDataLoaders.from_folder(
        data,
        train="train",
        valid="val",
        item_tfms=Resize(224),
        batch_tfms=aug_transforms(size=224),
        bs=32,
        num_workers=1,
    )
    learn = vision_learner(
        dls,
        "tf_efficientnet_lite0",
        pretrained=True,
        pretrained_cfg_overlay={"file": weights},
        metrics=accuracy,
    )
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    result = {"val_accuracy": float(learn.validate()[1]), "train_s": time.perf_counter() - started}
    if (data / "test").is_dir():
        test_dl = dls.test_dl(get_image_files(data / "test"), with_labels=True)
        probs, targets = learn.get_preds(dl=test_dl)
        result["test_accuracy"] = float((probs.argmax(1) == targets).float().mean())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
