"""Opening a model to predict with: a saved model directory in torch or ONNX Runtime, or a
pretrained backbone by name with its ImageNet classes. ``imgcls.load`` and every command that
predicts (``predict``, ``serve``) open models here, so Python and the CLI get the same thing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls._files import CONFIG_FILE, ONNX_FILE, model_dir, read_model_config
from imgcls.config import RUNTIMES, parse_device
from imgcls.data._prefetch import prefetch_paths
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.sources import prediction_inputs
from imgcls.errors import ConfigError, ImgclsError
from imgcls.inference.predictions import Predictor
from imgcls.inference.runtime_choice import RuntimeChoice, choose_runtime

if TYPE_CHECKING:
    from imgcls.data.images import ImageRef
    from imgcls.inference.encoder import Encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenedModel:
    """A model ready to predict, and which runtime runs it and why."""

    predictor: Predictor
    runtime: str
    reason: str


def looks_like_model_dir(value: str | Path) -> bool:
    """Whether ``value`` names a directory (a saved model) rather than a backbone name."""
    text = str(value)
    return Path(text).is_dir() or "/" in text or text.startswith(".")


def model_of_file(model: str | Path, runtime: str) -> tuple[str | Path, str]:
    """``model`` and ``runtime`` as a user meant them when ``model`` names one of a model
    directory's files (``model/model.onnx``, ``model/config.json`` ...): that directory, and
    with ``model.onnx`` and ``runtime="auto"``, the ONNX runtime. Anything else unchanged."""
    path = Path(model)
    if not path.is_file() or not (path.parent / CONFIG_FILE).is_file():
        return model, runtime
    if path.name == ONNX_FILE and runtime == "auto":
        runtime = "onnx"
    log.info("%s is a file of the model directory %s: using that directory", path, path.parent)
    return path.parent, runtime


def open_model(
    model: str | Path,
    *,
    runtime: str = "auto",
    weights: str | Path | None = None,
    tta: bool = False,
    choice: RuntimeChoice | None = None,
    device: str = "auto",
) -> OpenedModel:
    """A saved model (``RUN_DIR``, ``RUN_DIR/model`` or a file in it, see ``model_of_file``) or
    a backbone name, in ``runtime``, on
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; ONNX Runtime runs on the CPU).

    ``runtime`` is ``torch``, ``onnx`` (the directory's ``model.onnx``; no torch import) or
    ``auto`` (whichever is faster here; see ``runtime_choice``). ``weights`` goes with a
    backbone name only: a local ImageNet state dict for it. ``tta`` needs torch. ``choice`` is
    a ``choose_runtime`` answer already made for ``runtime``: it is kept, with its reason and
    the ONNX session it loaded, instead of deciding again.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown `runtime` {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    model, runtime = model_of_file(model, runtime)
    if weights and looks_like_model_dir(model):
        raise ConfigError("`weights` goes with a backbone name; a model directory has its own weights")
    if runtime == "onnx" and (weights or tta):
        raise ConfigError("`runtime=onnx` runs a saved model's export, without `weights` or `tta`")
    if runtime == "onnx" and parse_device(device)[0] not in ("auto", "cpu"):
        raise ConfigError(f"`runtime=onnx` runs on the CPU; `device={device}` needs `runtime=torch`")
    choice = choice or choose_runtime(runtime, model, tta=tta, device=device)
    log.debug("runtime: %s (%s)", choice.runtime, choice.reason)
    if choice.runtime == "onnx":
        from imgcls.inference.onnx_runtime import OnnxClassifier

        predictor: Predictor = choice.onnx or OnnxClassifier.load(model)
    else:
        from imgcls.inference.classifier import Classifier

        if looks_like_model_dir(model):
            predictor = Classifier.load(model, device=device)
        else:
            predictor = Classifier.pretrained(str(model), weights=weights, device=device)
    return OpenedModel(predictor, choice.runtime, choice.reason)


def load(
    model: str | Path, *, runtime: str = "torch", weights: str | Path | None = None, device: str = "cpu"
) -> Predictor:
    """Reload a saved model (``RUN_DIR`` or ``RUN_DIR/model``), or a backbone by name.

    ``runtime="auto"`` gives what ``imgcls predict`` uses: ONNX Runtime where it is faster here
    and an up-to-date export exists, else torch. ``device`` runs it there (``auto``: a GPU if
    there is one); a model trained on any device loads on any other.
    """
    return open_model(model, runtime=runtime, weights=weights, device=device).predictor


def open_encoder(
    model: str | Path,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
    precision: str = "auto",
    pretrained: bool = True,
    device: str = "cpu",
) -> Encoder:
    """The encoder of a saved model (``RUN_DIR`` or ``RUN_DIR/model``: its fitted backbone and
    preprocessing) or of a pretrained backbone by name (its feature preprocessing, as ``train``
    uses; ``weights`` is a local state dict for it; ``pretrained=False``: random init), run on
    ``device``."""
    if looks_like_model_dir(model):
        from imgcls.inference.classifier import Classifier

        if weights is not None or input_size is not None:
            raise ConfigError(
                "a saved model has its own `weights` and `input_size`; give them with a backbone"
            )
        return Classifier.load(model, device=device).encoder()
    from imgcls.inference.encoder import Encoder
    from imgcls.models.backbone import IMAGENET_CLASSES, build_network, prepare_for_inference
    from imgcls.models.registry import get_backbone, resolve_preprocessing
    from imgcls.system.devices import resolve_device
    from imgcls.system.precision import resolve_precision

    spec = get_backbone(str(model))
    network, info = build_network(spec, num_classes=IMAGENET_CLASSES, weights=weights, pretrained=pretrained)
    origin = {
        "model": spec.name,
        "weights": str(weights) if weights is not None else None,
        "input_size": input_size,
        "backbone": spec.name,
        "weights_source": info.to_dict(),
    }
    placed = resolve_device(device)
    return Encoder(
        prepare_for_inference(network),
        resolve_preprocessing(spec, input_size=input_size),
        resolve_precision(precision, placed),
        origin,
        device=placed,
    )


def decoding_ahead_of_prediction(
    model: str | Path, paths: Sequence[ImageRef] | None, runtime: str
) -> contextlib.AbstractContextManager:
    """With a saved model in torch, decode ``paths`` (``prediction_inputs``' answer) in a child
    process while torch imports; otherwise (or when anything is amiss) nothing: the prediction
    itself then reports the problem."""
    if paths is None or runtime != "torch" or not (model_dir(Path(model)) / CONFIG_FILE).is_file():
        return contextlib.nullcontext()
    try:
        config: dict[str, Any] = read_model_config(model_dir(Path(model)))
        pre = Preprocessing.from_dict(config["preprocessing"])
    except (ImgclsError, OSError, ValueError, KeyError):
        return contextlib.nullcontext()
    return prefetch_paths(paths, pre)


def inputs_or_none(inputs: Sequence[str]) -> list[ImageRef] | None:
    """The images ``inputs`` name (``prediction_inputs``), or ``None`` where they cannot be
    listed: the prediction itself then reports why."""
    try:
        return prediction_inputs(inputs)
    except (ImgclsError, OSError):
        return None
