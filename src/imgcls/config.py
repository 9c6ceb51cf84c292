"""Typed configuration shared by the CLI and the Python API.

Precedence is defaults < config file < explicit arguments; ``None`` in a field means
"the backbone's default" and is resolved in exactly one place (``resolve_preprocessing``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from imgcls.errors import ConfigError


@functools.cache
def installed_version() -> str:
    """imgcls's version, from the installed package's metadata (``pyproject.toml`` is the one
    place it is written); read on first use, since importing ``importlib.metadata`` takes
    longer than a prediction's start can spare."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgcls")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


DEFAULT_BACKBONE = "efficientnet_lite0"
STRATEGIES = ("probe", "finetune", "auto")
AUGMENT_PRESETS = ("none", "light", "standard", "strong")
DEVICES = ("auto", "cpu", "cuda", "mps")
DIST_TIMEOUT_S = 1800.0  # torch's default for a Gloo process group
ENGINES = ("local", "ray")  # where extraction and batch prediction run: here, or on a Ray cluster
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLASS_WEIGHTS = ("none", "auto")
HEADS = ("linear", "mlp", "knn")  # the probe's classification layer; see training.heads
# How a data source is read; see data.sources.
DATA_FORMATS = ("auto", "folder", "manifest", "cifar", "imagenet", "webdataset", "huggingface")
LABEL_SETS = ("fine", "coarse")  # CIFAR-100's 100 classes or its 20 superclasses
RUNTIMES = ("auto", "torch", "onnx")  # for prediction: see inference.runtime_choice

# Defaults of settings outside TrainConfig, shared by the library functions that take them
# and the CLI flags that set them.
FOLDS = 5
REPEATS = 1
TOP_K = 5  # classes listed per predicted image
PREDICT_BATCH_SIZE = 32  # images per forward pass when predicting or evaluating on a CPU
# ... and on an accelerator: a GPU is busy only with hundreds at a time (a CPU runs them eight
# at a time, see models.features).
ACCELERATOR_BATCH = 256
# An export's largest |logit difference| from PyTorch, as a fraction of the logits' spread on
# the check images: float32 kernels that sum in another order differ far below it, a wrong
# export far above it (see deploy.export).
EXPORT_RELATIVE_TOLERANCE = 1e-3
NEIGHBOURS = 10  # nearest neighbours listed per query by `similar`
SEARCH_ENGINES = ("auto", "numpy", "faiss")  # see inference.similarity
EMBED_CHUNK_ROWS = 1024  # images per part file while embedding: what an interruption can lose
GRID_ROWS = 6  # images in inspect-data's augmentation grid
GRID_VIEWS = 6  # augmented views of each


@dataclass(frozen=True)
class ServeLimits:
    """What one request to ``imgcls serve`` may ask for, and how requests are batched."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_files: int = 16
    max_batch: int = 32
    max_wait_ms: float = 5.0
    top_k: int = TOP_K
    max_concurrent: int = 64  # /predict requests in flight; more get 503 and Retry-After
    request_timeout_s: float = 60.0  # a /predict request that takes longer gets 503


# The test split carved where the data gives no held-out folder and the user names no fraction:
# with validation's default 20%, a 70/20/10 split.
DEFAULT_TEST_FRACTION = 0.1
TEST_FRACTION_DEFAULT_WORDS = (
    f"default: {DEFAULT_TEST_FRACTION:g} where the data has no val/ or test/ folder, else 0"
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the outcome of ``imgcls train``; saved with every run."""

    backbone: str = DEFAULT_BACKBONE
    # How to read the data: detected (auto) or named; CIFAR-100's label set.
    data_format: str = "auto"
    label_set: str = "fine"
    # A manifest's columns of image paths and labels.
    path_column: str = "path"
    label_column: str = "label"
    weights: str | None = None
    pretrained: bool = True
    strategy: str = "probe"
    head: str = "linear"
    seed: int = 0
    val_fraction: float = 0.2
    # None: DEFAULT_TEST_FRACTION where the data has no val/ or test/ folder (a held-out split
    # the run's choices never see), none where its own folders already hold images out.
    test_fraction: float | None = None
    batch_size: int = 32
    workers: int | None = None
    input_size: int | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    calibrate: bool = False
    report: bool = True
    # model/model.onnx beside the weights (when onnx and onnxruntime are installed), so that
    # predict answers a few images without the seconds torch takes to import.
    onnx: bool = True
    # Fine-tuning (strategy finetune/auto); None = a default that depends on the data size.
    epochs: int | None = None
    lr: float | None = None
    freeze_epochs: int = 0
    unfreeze: str = "auto"
    augment: str = "standard"
    device: str = "auto"
    precision: str = "auto"
    patience: int | None = None
    time_limit: float | None = None
    class_weights: str = "none"
    label_smoothing: float = 0.1
    # Under torchrun: how long a rank waits for the others before the run stops with an error.
    dist_timeout: float = DIST_TIMEOUT_S
    # Where probe features are computed: here, or on a Ray cluster (same features, via the cache).
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None
    # Fine-tuning: compile the training step with torch.compile (pays back on long runs).
    compile: bool = False

    def __post_init__(self) -> None:
        _check_fraction("val_fraction", self.val_fraction)
        if self.test_fraction is not None:
            _check_fraction("test_fraction", self.test_fraction)
        if self.val_fraction + (self.test_fraction or 0.0) >= 0.9:
            raise ConfigError(
                f"`val_fraction` + `test_fraction` must leave data to train on; got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown `strategy` {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be >= 1, got {self.batch_size}")
        if self.input_size is not None and self.input_size < 16:
            raise ConfigError(f"`input_size` must be at least 16 pixels, got {self.input_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"`workers` must be >= 0, got {self.workers}")
        _check_choice("data_format", self.data_format, DATA_FORMATS)
        _check_choice("label_set", self.label_set, LABEL_SETS)
        _check_choice("augment", self.augment, AUGMENT_PRESETS)
        parse_device(self.device)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _check_choice("head", self.head, HEADS)
        _check_choice("engine", self.engine, ENGINES)
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ConfigError(f"`ray_actors` must be >= 1, got {self.ray_actors}")
        if self.compile and self.strategy == "probe":
            raise ConfigError(
                "`compile=True` compiles the fine-tune's training step; `strategy=probe` trains no "
                "network (use strategy=finetune or auto)"
            )
        if self.head != "linear" and self.strategy == "finetune":
            raise ConfigError(
                f"`head={self.head}` is fitted on frozen features: it goes with `strategy=probe` "
                "(a fine-tune trains a linear head with the network)"
            )
        parse_unfreeze(self.unfreeze)
        for name in ("epochs", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {value}")
        if self.freeze_epochs < 0:
            raise ConfigError(f"`freeze_epochs` must be >= 0, got {self.freeze_epochs}")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError(f"`lr` must be in (0, 1), got {self.lr}")
        if self.dist_timeout <= 0:
            raise ConfigError(f"`dist_timeout` must be positive seconds, got {self.dist_timeout}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ConfigError(f"`time_limit` must be positive seconds, got {self.time_limit}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"`label_smoothing` must be in [0, 1), got {self.label_smoothing}")
        if self.weights is not None and not self.pretrained:
            raise ConfigError("`weights` and `pretrained=False` contradict each other; pick one")

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """Return a copy with the non-``None`` values of ``overrides`` applied."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def source_options(self) -> dict[str, str]:
        """How to read the data: ``open_source``'s keywords from these settings."""
        return {
            "data_format": self.data_format,
            "label_set": self.label_set,
            "path_column": self.path_column,
            "label_column": self.label_column,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_settings(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    """``config`` (or the defaults) with ``settings`` applied: ``TrainConfig`` field names as
    keyword arguments of ``imgcls.train`` and friends (``None`` leaves a field as it is; a path
    becomes its string). An unknown name is an error that lists the known ones."""
    values = {name: str(value) if isinstance(value, Path) else value for name, value in settings.items()}
    return (config or TrainConfig()).with_overrides(values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown `{name}` {value!r}; choose one of {', '.join(choices)}")


def parse_device(value: str) -> tuple[str, int | None]:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` -> (kind, N or ``None``)."""
    kind, _, index = value.partition(":")
    if kind in DEVICES and (not index or (kind == "cuda" and index.isdigit())):
        return kind, int(index) if index else None
    raise ConfigError(f"unknown `device` {value!r}; choose one of {', '.join(DEVICES)} or cuda:N")


def parse_unfreeze(value: str) -> int | None:
    """``all`` -> ``None`` (every stage), ``last-N`` -> N, ``auto`` -> 0 (decided per device)."""
    if value == "all":
        return None
    if value == "auto":
        return 0
    prefix, _, count = value.partition("-")
    if prefix != "last" or not count.isdigit() or int(count) < 1:
        raise ConfigError(
            f"`unfreeze` must be 'auto', 'all' or 'last-N' with N >= 1 (e.g. last-2), got {value!r}"
        )
    return int(count)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h`` -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"cannot read duration {text!r}; write e.g. 90s, 10m or 1.5h") from None
    if seconds <= 0:
        raise ConfigError(f"duration must be positive, got {text!r}")
    return seconds


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"`{name}` must be in [0, 1), got {value}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML file of ``TrainConfig`` fields (e.g. a saved ``run_config.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    # A saved run config nests the training settings under "train".
    return dict(data.get("train", data))
