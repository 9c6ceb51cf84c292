"""imgcls: an accurate image classifier from a pretrained backbone and a folder of photos.

>>> import imgcls
>>> clf = imgcls.train("photos/", "runs/photos")
>>> clf.evaluate("photos/", split="val").accuracy
>>> clf.predict("new.jpg").label
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Classifier",
    "Evaluation",
    "ImgclsError",
    "Prediction",
    "TrainConfig",
    "__version__",
    "compare",
    "cross_validate",
    "doctor",
    "embed",
    "load",
    "resume",
    "show_progress",
    "similar",
    "train",
]

if TYPE_CHECKING:
    __version__: str
    from imgcls.config import TrainConfig
    from imgcls.errors import ImgclsError
    from imgcls.inference.classifier import Classifier
    from imgcls.inference.evaluate import Evaluation
    from imgcls.inference.loading import load
    from imgcls.inference.predictions import Prediction
    from imgcls.system.progress import show_bars as show_progress
    from imgcls.workflows.crossval import compare, cross_validate
    from imgcls.workflows.doctor.run import doctor
    from imgcls.workflows.embed import embed
    from imgcls.workflows.similar import similar
    from imgcls.workflows.train import resume, train

# Imported on first use so that ``import imgcls`` (and ``imgcls --help``) does not load torch.
_LAZY = {
    "train": "imgcls.workflows.train",
    "load": "imgcls.inference.loading",
    "resume": "imgcls.workflows.train",
    "cross_validate": "imgcls.workflows.crossval",
    "compare": "imgcls.workflows.crossval",
    "doctor": "imgcls.workflows.doctor.run",
    "embed": "imgcls.workflows.embed",
    "similar": "imgcls.workflows.similar",
    "Classifier": "imgcls.inference.classifier",
    "Evaluation": "imgcls.inference.evaluate",
    "Prediction": "imgcls.inference.predictions",
    "TrainConfig": "imgcls.config",
    "ImgclsError": "imgcls.errors",
}


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from imgcls.config import installed_version

        return installed_version()
    if name == "show_progress":
        from imgcls.system.progress import show_bars

        return show_bars
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
