"""The classification layers a network can carry on its pooled features: linear, MLP, kNN.

Each is a plain ``nn.Module`` installed where the network keeps its classifier, so a model
with any head saves to the same safetensors format, predicts through the same code and
exports to ONNX. Fitting them is the training package's job; this module only builds them,
rebuilds them from a saved config, and folds a calibration temperature into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.errors import ModelFormatError
from imgcls.models.weights import classifier_prefix

# The kNN head weighs each neighbour's vote by exp(cosine / VOTE_TEMPERATURE), as in DINO's
# k-NN evaluation: near neighbours count for more, and ties between classes are broken.
VOTE_TEMPERATURE = 0.07
# Share of the kNN probability spread evenly over the classes, so that a class no neighbour
# voted for keeps a finite log-probability (log-loss and calibration stay defined).
KNN_SMOOTHING = 0.01
# Bank rows a kNN query is compared with at once.
BANK_CHUNK = 65_536


class MLPHead(nn.Sequential):
    """One hidden layer: ``Linear -> ReLU -> Dropout -> Linear``."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


class KNNHead(nn.Module):
    """Cosine k-nearest-neighbour classifier over a bank of training features.

    Output: log class probabilities (similarity-weighted votes of the ``k`` nearest training
    images, times a per-class weight, smoothed), scaled by ``scale`` (1 / temperature).

    The bank and its labels are not in the state dict: a saved model keeps them in files of
    their own, memory-mapped when it is opened, so that the weights file does not grow with
    the training set. A query is compared with ``BANK_CHUNK`` bank rows at a time, so memory
    holds one chunk's similarities however large the bank.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        bank_labels: torch.Tensor,
        num_classes: int,
        k: int,
        *,
        normalised: bool = False,
    ) -> None:
        super().__init__()
        if len(bank) < 1 or not 1 <= k <= len(bank):
            raise ValueError(f"a kNN head needs 1 <= k <= {len(bank)} training images, got k={k}")
        self.k, self.num_classes = k, num_classes
        bank = bank if normalised else F.normalize(bank.float(), dim=-1)
        self.register_buffer("bank", bank, persistent=False)
        self.register_buffer("bank_labels", bank_labels.long(), persistent=False)
        self.register_buffer("class_weight", torch.ones(num_classes))
        self.register_buffer("scale", torch.ones(()))

    @property
    def in_features(self) -> int:
        return int(self.bank.shape[1])

    def neighbours(self, features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarity to the ``k`` nearest bank entries of each row, and their indices."""
        queries = F.normalize(features.float(), dim=-1)
        if len(self.bank) <= BANK_CHUNK:  # one product: also the graph an export traces
            return (queries @ self.bank.T).topk(k, dim=-1)
        best: tuple[torch.Tensor, torch.Tensor] | None = None
        for start in range(0, len(self.bank), BANK_CHUNK):
            block = self.bank[start : start + BANK_CHUNK].to(queries.device, torch.float32)
            similarity, index = (queries @ block.T).topk(min(k, len(block)), dim=-1)
            if best is not None:
                similarity = torch.cat([best[0], similarity], dim=-1)
                index = torch.cat([best[1], index + start], dim=-1)
            kept = similarity.topk(min(k, similarity.shape[-1]), dim=-1)
            best = kept.values, index.gather(-1, kept.indices)
        assert best is not None
        return best

    def vote(self, similarity: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Class probabilities (rows sum to one) from the neighbours' weighted votes."""
        weight = torch.exp((similarity - 1.0) / VOTE_TEMPERATURE)  # shifted by the max: no overflow
        classes = torch.arange(self.num_classes, device=similarity.device)
        onehot = (self.bank_labels[index].unsqueeze(-1) == classes).to(weight.dtype)
        votes = (weight.unsqueeze(-1) * onehot).sum(dim=1) * self.class_weight
        probs = votes / votes.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return probs * (1.0 - KNN_SMOOTHING) + KNN_SMOOTHING / self.num_classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log(self.vote(*self.neighbours(features, self.k))) * self.scale


def linear_layer(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """A ``Linear`` layer holding ``weight`` (classes x features) and ``bias``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def install_classifier(model: nn.Module, layer: nn.Module) -> None:
    """Put ``layer`` where ``model`` keeps its classifier (``fc``, ``classifier``, ``head.fc``...).

    Only a network whose classifier reads pooled features (a ``Linear`` layer or one of these
    heads) can take another; a convolutional classifier reads activation maps.
    """
    current = model.get_classifier()
    if not isinstance(current, nn.Linear | MLPHead | KNNHead):
        raise TypeError(
            f"cannot replace classifier {type(current).__name__}: it does not read pooled features"
        )
    *parents, name = classifier_prefix(model).split(".")
    owner = model
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, name, layer)


def feature_width(model: nn.Module) -> int:
    """How many features the network's classifier reads."""
    layer = model.get_classifier()
    width = getattr(layer, "in_features", None)
    if width is None and isinstance(layer, nn.Sequential):
        width = getattr(layer[0], "in_features", None)
    if width is None:
        raise TypeError(f"cannot tell the feature width of classifier {type(layer).__name__}")
    return int(width)


def head_for_config(
    head: dict[str, Any] | None,
    *,
    in_features: int,
    num_classes: int,
    bank: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> nn.Module | None:
    """A layer of the shape a saved model's ``head`` config describes, to load its tensors
    into (a kNN head's ``bank``: its normalised features and labels, kept beside the weights);
    ``None`` for a linear head (the network's own classifier fits)."""
    spec = head or {}
    kind = spec.get("type", "logistic_regression")
    build = SAVED_LAYERS.get(kind)
    if build is None:
        raise ModelFormatError(
            f"unknown head type {kind!r} in the model's config; a newer imgcls may read it"
        )
    return build(spec, in_features, num_classes, bank)


def _mlp_layer(
    spec: dict[str, Any], in_features: int, num_classes: int, bank: tuple[torch.Tensor, torch.Tensor] | None
) -> nn.Module:
    return MLPHead(in_features, int(spec["hidden"]), num_classes, float(spec.get("dropout", 0.0)))


def _knn_layer(
    spec: dict[str, Any], in_features: int, num_classes: int, bank: tuple[torch.Tensor, torch.Tensor] | None
) -> nn.Module:
    if bank is None:
        raise ModelFormatError("a kNN head needs its bank of training features")
    return KNNHead(*bank, num_classes, int(spec["k"]), normalised=True)


def _own_classifier(*_: Any) -> None:
    return None


# The layer each saved head ``type`` is rebuilt as (``None``: the network's own classifier).
SAVED_LAYERS: dict[str, Callable[..., nn.Module | None]] = {
    "logistic_regression": _own_classifier,
    "finetuned": _own_classifier,
    "mlp": _mlp_layer,
    "knn": _knn_layer,
}


def fold_temperature(layer: nn.Module, temperature: float) -> None:
    """Divide ``layer``'s outputs by ``temperature`` in place, so that its logits come out
    calibrated at no cost at prediction time."""
    with torch.no_grad():
        if isinstance(layer, KNNHead):
            layer.scale /= temperature
            return
        last = layer[-1] if isinstance(layer, nn.Sequential) else layer
        if not isinstance(last, nn.Linear):
            raise TypeError(f"cannot fold a temperature into {type(layer).__name__}")
        last.weight /= temperature
        last.bias /= temperature
