"""imgcls: an accurate image classifier from a pretrained backbone and a folder of photos.

>>> import imgcls
>>> clf = imgcls.train("photos/", "runs/photos")
>>> clf.evaluate("photos/", split="val").accuracy
>>> clf.predict("new.jpg").label
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "Evaluation",
    "ImgclsError",
    "Prediction",
    "TrainConfig",
    "__version__",
    "compare",
    "cross_validate",
    "load",
    "resume",
    "train",
]

if TYPE_CHECKING:
    from imgcls.api import load, resume, train
    from imgcls.classifier import Classifier, Evaluation, Prediction
    from imgcls.config import TrainConfig
    from imgcls.crossval import compare, cross_validate
    from imgcls.errors import ImgclsError

# Imported on first use so that ``import imgcls`` (and ``imgcls --help``) does not load torch.
_LAZY = {
    "train": "imgcls.api",
    "load": "imgcls.api",
    "resume": "imgcls.api",
    "cross_validate": "imgcls.crossval",
    "compare": "imgcls.crossval",
    "Classifier": "imgcls.classifier",
    "Evaluation": "imgcls.classifier",
    "Prediction": "imgcls.classifier",
    "TrainConfig": "imgcls.config",
    "ImgclsError": "imgcls.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
