"""``Classifier``: a network, its class names and its preprocessing, ready to predict.

Scoring goes through the backbone's pooled features and the classification layer, the same
computation as the full forward pass, so features cached on disk (keyed by content and
backbone) make re-evaluating a model on the same images nearly free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from imgcls.data.images import ImageInput, to_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.transforms import TTA_VIEWS, eval_transform, view_settings
from imgcls.errors import WeightsError
from imgcls.inference._scoring import score_views, views_for
from imgcls.inference.encoder import Encoder
from imgcls.inference.evaluate import Evaluation, evaluate
from imgcls.inference.model_format import SavedModel, read_saved_model, write_saved_model
from imgcls.inference.predictions import PathScores, Predictor
from imgcls.models._batchnorm_fold import folded_for_inference
from imgcls.models.backbone import (
    IMAGENET_CLASSES,
    build_network,
    imagenet_class_names,
    prepare_for_inference,
)
from imgcls.models.features import (
    pooled_features,
)
from imgcls.models.registry import get_backbone, resolve_preprocessing
from imgcls.system.cpu import cpu_has_native_bf16
from imgcls.system.devices import CPU, place, resolve_device

log = logging.getLogger(__name__)


def _fingerprint(model: nn.Module) -> tuple:
    """Which tensors ``model`` holds and how often each was changed in place (torch counts)."""
    return tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers()))


class Classifier(Predictor):
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
        device: torch.device = CPU,
    ) -> None:
        self.model = prepare_for_inference(model)
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.config = config
        self.directory = directory
        self.device = device
        self.precision = _precision_on(device, str(config.get("precision", "fp32")))
        self._folded: tuple[tuple, nn.Module] | None = None  # (model's state fingerprint, copy)

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
    def load(cls, directory: str | Path, *, device: str = "cpu") -> Classifier:
        """Load a model saved by ``save`` (``RUN_DIR/model`` or ``RUN_DIR`` itself) to run on
        ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), whichever it was trained on."""
        saved = read_saved_model(Path(directory))
        return cls(
            saved.model,
            classes=saved.classes,
            preprocessing=saved.preprocessing,
            config=saved.config,
            directory=saved.directory,
            device=resolve_device(device),
        )

    @classmethod
    def pretrained(
        cls, backbone: str, *, weights: str | Path | None = None, device: str = "cpu"
    ) -> Classifier:
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
            device=resolve_device(device),
        )

    def save(self, directory: str | Path) -> Path:
        """Write the model to ``directory`` (``model.safetensors`` and ``config.json``)."""
        directory = Path(directory)
        write_saved_model(SavedModel(self.model, self.classes, self.preprocessing, self.config, directory))
        self.directory = directory
        return directory

    # -- prediction (``predict`` and ``predict_paths`` are ``Predictor``'s) --------------------

    def image_probabilities(self, image: Image.Image, *, tta: bool) -> np.ndarray:
        views = []
        for view in views_for(tta):
            pre, flip = view_settings(self.preprocessing, view)
            batch = eval_transform(pre, flip=flip)(image).unsqueeze(0)
            with torch.inference_mode():
                views.append(self._logits(batch).float().softmax(-1)[0])
        return torch.stack(views).mean(0).numpy()

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
        self,
        paths: Sequence[Path],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        tta: bool = False,
    ) -> PathScores:
        """Class probabilities of the readable files among ``paths`` (no feature cache)."""
        scored = score_views(self, paths, tta=tta, cache_dir=None, batch_size=batch_size, workers=workers)
        return PathScores(scored.mean_probs, scored.readable, scored.failures)

    @overload
    def embed(self, image: ImageInput) -> np.ndarray: ...
    @overload
    def embed(self, image: list[ImageInput] | tuple[ImageInput, ...]) -> np.ndarray: ...

    def embed(self, image: ImageInput | list[ImageInput] | tuple[ImageInput, ...]) -> np.ndarray:
        """The pooled features this model's classifier reads (float32): a vector for one image,
        an images x dim matrix for a list of them."""
        if isinstance(image, list | tuple):
            return self.encoder().embed_images(image)
        return self.encoder().embed_images([image])[0]

    def encoder(self) -> Encoder:
        """This model's backbone as an ``Encoder`` (for ``imgcls embed --model RUN_DIR``)."""
        origin = {
            "model": str(self.run_dir) if self.run_dir is not None else None,
            "weights": None,
            "input_size": None,
            "backbone": self.backbone,
            "weights_source": self.config["backbone"].get("weights"),
        }
        encoder = Encoder(self.model, self.preprocessing, self.precision, origin, device=self.device)
        encoder._folded = self.inference_network()
        return encoder

    def inference_network(self) -> nn.Module:
        """``model`` with its BatchNorms folded (``model`` itself keeps the saved layout for
        ``save`` and ``export``), built again whenever ``model``'s tensors have changed."""
        state = _fingerprint(self.model)
        if self._folded is None or self._folded[0] != state:
            folded = folded_for_inference(self.model, self.preprocessing.input_size)
            self._folded = (state, place(folded, self.device))
        return self._folded[1]

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        network = self.inference_network()
        features = pooled_features(network, place(batch, self.device), self.precision)
        return network.get_classifier()(features).cpu()

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(
        self,
        data: str | Path,
        *,
        split: str = "val",
        tta: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        cache_dir: Path | None = None,
        data_format: str = "auto",
        label_set: str = "fine",
        path_column: str = "path",
        label_column: str = "label",
    ) -> Evaluation:
        """Metrics on one split of a labelled data set (see ``inference.evaluate.evaluate``)."""
        return evaluate(
            self,
            data,
            split=split,
            tta=tta,
            batch_size=batch_size,
            workers=workers,
            cache_dir=cache_dir,
            data_format=data_format,
            label_set=label_set,
            path_column=path_column,
            label_column=label_column,
        )


def _precision_on(device: torch.device, trained: str) -> str:
    """The precision to compute features in: the one the head was fitted on where ``device``
    runs it (bf16 on CPUs with native bf16; bf16 or fp16 on a GPU), fp32 otherwise."""
    if trained == "fp32":
        return "fp32"
    if device.type == "cuda":
        return trained if trained != "bf16" or torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if trained == "bf16" and device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def _views(tta: bool) -> tuple[str, ...]:
    return TTA_VIEWS if tta else TTA_VIEWS[:1]
