"""``Classifier``: a network, its class names and its preprocessing, ready to predict.

Scoring goes through the backbone's pooled features and the classification layer, the same
computation as the full forward pass, so features cached on disk (keyed by content and
backbone) make re-evaluating a model on the same images nearly free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from imgcls.backbone import (
    IMAGENET_CLASSES,
    build_network,
    create_network,
    prepare_for_inference,
    resolve_preprocessing,
)
from imgcls.batchnorm_fold import folded_for_inference
from imgcls.config import Preprocessing
from imgcls.cpu_features import cpu_has_native_bf16
from imgcls.data import DatasetScan, ImageRecord, expand_inputs, scan_dataset
from imgcls.errors import DataError, WeightsError
from imgcls.features import (
    FeatureCache,
    default_cache_dir,
    extract_features,
    feature_space,
    pooled_features,
)
from imgcls.images import ImageInput, as_rgb_image, to_rgb
from imgcls.layout import model_dir
from imgcls.metrics import classification_report
from imgcls.model_io import load_weights_into, read_model_config, save_model_dir
from imgcls.predictions import PathScores, Prediction, PredictionRun, rank_classes
from imgcls.registry import get_backbone
from imgcls.report import Mistake, confident_mistakes
from imgcls.splits import MANIFEST_NAME, SPLITS, read_manifest, splits_from_manifest
from imgcls.transforms import TTA_VIEWS, eval_transform, view_settings

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Metrics of a classifier on one split of a labelled folder."""

    split: str
    report: dict[str, Any]
    unreadable: dict[str, str] = field(default_factory=dict)
    tta: dict[str, Any] | None = None
    mistakes: list[Mistake] = field(default_factory=list)
    # Whether the top class was right, per scored image (path relative to the data folder):
    # what a paired test of two models on the same images needs.
    outcomes: dict[str, bool] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.report["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        data = {"split": self.split, **self.report, "unreadable": self.unreadable}
        if self.tta is not None:
            data["tta"] = self.tta
        return data


@dataclass
class _Scores:
    """Per-view class probabilities of the readable images, and why the others failed."""

    views: list[str]
    probs: list[np.ndarray] = field(default_factory=list)
    readable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def mean_probs(self) -> np.ndarray:
        return np.mean(self.probs, axis=0)


def _fingerprint(model: nn.Module) -> tuple:
    """Which tensors ``model`` holds and how often each was changed in place (torch counts)."""
    return tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers()))


class Classifier:
    """A trained (or ImageNet-pretrained) classifier.

    Args:
        model: a timm network whose classifier has ``len(classes)`` outputs.
        classes: class names in output-index order.
        preprocessing: the eval transform's settings.
        config: the saved model config (backbone, metrics, ...); see ``model_io``.
        directory: where the model was saved or loaded from, if anywhere.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        classes: Sequence[str],
        preprocessing: Preprocessing,
        config: dict[str, Any],
        directory: Path | None = None,
    ) -> None:
        self.model = prepare_for_inference(model)
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.config = config
        self.directory = directory
        # The precision the features were computed in when the head was fitted (bf16 only
        # where this CPU runs it natively; fp32 otherwise).
        wanted = str(config.get("precision", "fp32"))
        self.precision = wanted if wanted == "fp32" or cpu_has_native_bf16() else "fp32"
        self._folded: tuple[tuple, nn.Module] | None = None  # (model's state fingerprint, copy)

    @property
    def backbone(self) -> str:
        return str(self.config["backbone"]["name"])

    @property
    def run_dir(self) -> Path | None:
        """The training run's directory (``RUN_DIR`` of ``RUN_DIR/model``), if saved."""
        if self.directory is None:
            return None
        return self.directory.parent if self.directory.name == "model" else self.directory

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.config.get("metrics", {}))

    # -- loading and saving -------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path) -> Classifier:
        """Load a model saved by ``save`` (``RUN_DIR/model`` or ``RUN_DIR`` itself)."""
        directory = model_dir(Path(directory))
        config = read_model_config(directory)
        spec = get_backbone(config["backbone"]["name"])
        model = create_network(spec, num_classes=len(config["classes"]))
        load_weights_into(model, directory)
        pre = Preprocessing.from_dict(config["preprocessing"])
        return cls(model, classes=config["classes"], preprocessing=pre, config=config, directory=directory)

    @classmethod
    def pretrained(cls, backbone: str, *, weights: str | Path | None = None) -> Classifier:
        """The backbone with its ImageNet head, predicting the 1,000 ImageNet classes."""
        spec = get_backbone(backbone)
        model, info = build_network(spec, num_classes=IMAGENET_CLASSES, weights=weights)
        if info.report is not None and not info.report.classifier_loaded:
            raise WeightsError(
                f"the weights for {backbone} ({info.location}) carry no 1000-class ImageNet head"
            )
        config = {"backbone": {"name": spec.name, "timm_arch": spec.timm_arch, "weights": info.to_dict()}}
        return cls(
            model,
            classes=imagenet_class_names(),
            preprocessing=resolve_preprocessing(spec, for_features=False),
            config=config,
        )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        config = {
            k: v
            for k, v in self.config.items()
            if k not in ("format", "format_version", "created", "versions")
        }
        config.update(
            classes=self.classes,
            num_classes=len(self.classes),
            preprocessing=self.preprocessing.to_dict(),
        )
        save_model_dir(directory, self.model, config)
        self.directory = directory
        return directory

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, image: ImageInput, *, top_k: int = 5, tta: bool = False) -> Prediction:
        """Classify one image: a file path, a PIL image, an HxWx3 uint8 array or encoded bytes.

        With ``tta``, probabilities are averaged over the centre crop, the whole image and
        the mirror image of each.
        """
        path, pil = as_rgb_image(image, min_side=self.preprocessing.resize_size)
        views = []
        for view in _views(tta):
            pre, flip = view_settings(self.preprocessing, view)
            batch = eval_transform(pre, flip=flip)(pil).unsqueeze(0)
            with torch.inference_mode():
                views.append(self._logits(batch).float().softmax(-1))
        return self._top_k(torch.stack(views).mean(0).numpy(), [path], top_k)[0]

    def predict_paths(
        self,
        inputs: Sequence[str | Path],
        *,
        top_k: int = 5,
        tta: bool = False,
        batch_size: int = 32,
        workers: int = 0,
    ) -> PredictionRun:
        """Classify files, folders (recursively) and glob patterns; unreadable files are listed."""
        paths = expand_inputs([str(p) for p in inputs])
        if not paths:
            raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
        scored = self._score(paths, tta=tta, cache_dir=None, batch_size=batch_size, workers=workers)
        kept = [str(p) for p, ok in zip(paths, scored.readable, strict=True) if ok]
        unreadable = {str(paths[i]): reason for i, reason in scored.failures.items()}
        return PredictionRun(self._top_k(scored.mean_probs, kept, top_k), unreadable)

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (images x classes) of decoded images, in one batch."""
        if not images:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        transform = eval_transform(self.preprocessing)
        batch = torch.stack([transform(to_rgb(image)) for image in images])
        with torch.inference_mode():
            logits = self._logits(batch)
        return logits.float().softmax(dim=-1).numpy()

    def score_paths(
        self, paths: Sequence[Path], *, batch_size: int = 32, workers: int = 0, tta: bool = False
    ) -> PathScores:
        """Class probabilities of the readable files among ``paths`` (no feature cache)."""
        scored = self._score(paths, tta=tta, cache_dir=None, batch_size=batch_size, workers=workers)
        return PathScores(scored.mean_probs, scored.readable, scored.failures)

    def _inference_network(self) -> nn.Module:
        """``model`` with its BatchNorms folded (``model`` itself keeps the saved layout for
        ``save`` and ``export``), built again whenever ``model``'s tensors have changed."""
        state = _fingerprint(self.model)
        if self._folded is None or self._folded[0] != state:
            self._folded = (state, folded_for_inference(self.model, self.preprocessing.input_size))
        return self._folded[1]

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        network = self._inference_network()
        return network.get_classifier()(pooled_features(network, batch, self.precision))

    def _top_k(self, probs: np.ndarray, paths: Sequence[str | None], k: int) -> list[Prediction]:
        return rank_classes(probs, self.classes, paths, k)

    def _score(
        self, paths: Sequence[Path], *, tta: bool, cache_dir: Path | None, batch_size: int, workers: int
    ) -> _Scores:
        """Class probabilities of each readable image under each view; features come from
        (and go to) the disk cache when ``cache_dir`` is given, else a throw-away one."""
        scores = _Scores(views=list(_views(tta)))
        for view in scores.views:
            pre, flip = view_settings(self.preprocessing, view)
            # Digesting the weights costs a pass over them: only worth it for the disk cache.
            space = (
                feature_space(self.model, pre, flip=flip, precision=self.precision)
                if cache_dir is not None
                else ""
            )
            cache = FeatureCache(cache_dir, space)
            extraction = extract_features(
                self._inference_network(),
                paths,
                pre,
                cache=cache,
                flip=flip,
                batch_size=batch_size,
                workers=workers,
                precision=self.precision,
            )
            with torch.inference_mode():
                features = torch.from_numpy(extraction.features)
                logits = (
                    self.model.get_classifier()(features)
                    if len(features)
                    else torch.zeros((0, len(self.classes)))
                )
            scores.probs.append(logits.float().softmax(dim=-1).numpy())
            scores.readable, scores.failures = extraction.readable, extraction.failures
        return scores

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(
        self,
        data: str | Path,
        *,
        split: str = "val",
        tta: bool = False,
        batch_size: int = 32,
        workers: int = 0,
        cache_dir: Path | None = None,
    ) -> Evaluation:
        """Metrics on one split of a labelled folder (see ``metrics.classification_report``).

        ``split`` is ``val``, ``test``, ``train`` or ``all``. A split with its own folder is
        used as is; otherwise the ``splits.csv`` written at training time says which images
        it holds. With ``tta`` the report is for averaged views, and ``Evaluation.tta``
        compares it with the plain centre crop.
        """
        scan = scan_dataset(data, min_classes=1)
        records = self._select(scan, split)
        unknown = sorted({r.label for r in records} - set(self.classes))
        if unknown:
            raise DataError(
                f"{scan.root} has classes the model does not know: {unknown}; "
                f"the model's classes are {self.classes}"
            )
        paths = [scan.absolute(r) for r in records]
        scored = self._score(
            paths, tta=tta, cache_dir=cache_dir or default_cache_dir(), batch_size=batch_size, workers=workers
        )
        if not scored.readable.any():
            raise DataError(
                f"none of the {len(paths)} images of the {split} split in {scan.root} could be read"
            )
        index = {name: i for i, name in enumerate(self.classes)}
        y_true = np.array(
            [index[r.label] for r, ok in zip(records, scored.readable, strict=True) if ok], dtype=np.int64
        )
        report = classification_report(y_true, scored.mean_probs, self.classes)
        kept = [r for r, ok in zip(records, scored.readable, strict=True) if ok]
        mistakes = confident_mistakes(
            [scan.absolute(r) for r in kept], [r.path for r in kept], y_true, scored.mean_probs, self.classes
        )
        unreadable = {records[i].path: reason for i, reason in scored.failures.items()}
        right = scored.mean_probs.argmax(axis=1) == y_true
        outcomes = {r.path: bool(ok) for r, ok in zip(kept, right, strict=True)}
        evaluation = Evaluation(split, report, unreadable, mistakes=mistakes, outcomes=outcomes)
        if tta:
            plain = classification_report(y_true, scored.probs[0], self.classes)
            evaluation.tta = {
                "views": scored.views,
                "accuracy_without": plain["accuracy"],
                "accuracy_with": report["accuracy"],
                "log_loss_without": plain["log_loss"],
                "log_loss_with": report["log_loss"],
            }
        return evaluation

    def _select(self, scan: DatasetScan, split: str) -> list[ImageRecord]:
        if split == "all":
            return scan.records
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose val, test, train or all")
        # The training run's manifest wins when it covers these images: a val split carved from
        # train/ must not be scored as train. Other data falls back to its split folders.
        manifest_path = self._manifest_path()
        splits: list[str | None] = [None] * len(scan.records)
        if manifest_path is not None:
            splits = splits_from_manifest(scan.records, read_manifest(manifest_path), source=manifest_path)
        if not any(splits) and split in scan.folder_splits:
            return [r for r in scan.records if r.folder_split == split]
        if not any(splits):
            raise DataError(
                f"{scan.root} has no {split}/ folder and no {MANIFEST_NAME} beside the model lists its "
                f"images, so nothing says which images form the {split} split; use --split all"
            )
        selected = [r for r, s in zip(scan.records, splits, strict=True) if s == split]
        if not selected:
            raise DataError(f"the {split} split in {manifest_path} holds no images of {scan.root}")
        return selected

    def _manifest_path(self) -> Path | None:
        if self.directory is None:
            return None
        for candidate in (self.directory / MANIFEST_NAME, self.directory.parent / MANIFEST_NAME):
            if candidate.is_file():
                return candidate
        return None


def _views(tta: bool) -> tuple[str, ...]:
    return TTA_VIEWS if tta else TTA_VIEWS[:1]


def imagenet_class_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(IMAGENET_CLASSES)]
