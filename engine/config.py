"""The typed run configuration: frozen dataclasses, validated, with a JSON round-trip.

The dashboard form, the CLI and the job process all go through `RunConfig`; a job
receives only its run id and reads the config back from the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

MODEL_NAMES = ("lenet5", "resnet", "resnet_cbam", "transfer")
TRANSFER_BASES = ("mobilenet_v2", "efficientnet_v2b0")
# Smallest input each transfer base accepts (keras.applications refuses less).
TRANSFER_MIN_IMAGE_SIZE = {"mobilenet_v2": 32, "efficientnet_v2b0": 32}
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
ACTIVATIONS = ("tanh", "relu")
POOLINGS = ("average", "max")
MIXED_PRECISION = ("auto", "on", "off")


class ConfigError(ValueError):
    """A config value is invalid; `field` names it, e.g. `train.learning_rate`."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


def _check(ok: bool, field: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(field, value, reason)


def _check_number(field: str, value: Any, low: float, high: float, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    _check(isinstance(value, kind) and not isinstance(value, bool), field, value,
           "must be an integer" if integer else "must be a number")
    _check(math.isfinite(value), field, value, "must be finite")
    _check(low <= value <= high, field, value, f"must be between {low:g} and {high:g}")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split.

    Args:
        source: a built-in dataset name (`digits`, `mnist`, `fashion_mnist`, `cifar10`,
            `shapes`) or a path to an image folder or a `.zip` of class folders.
            Default `digits`.
        image_size: side of the square images the model sees, 8 to 512. Default 32.
        val_fraction: share of the images held out for validation, 0.05 to 0.5.
        test_fraction: share held out for the final test, 0.05 to 0.5.
        max_per_class: keep at most this many images per class (0 = all).
        seed: seed for the split (and for `shapes` generation).
    """

    source: str = "digits"
    image_size: int = 32
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_per_class: int = 0
    seed: int = 0

    def validate(self) -> None:
        _check(isinstance(self.source, str) and self.source.strip() != "", "data.source",
               self.source, "give a built-in dataset name or a folder/zip path")
        _check_number("data.image_size", self.image_size, 8, 512, integer=True)
        _check_number("data.val_fraction", self.val_fraction, 0.05, 0.5)
        _check_number("data.test_fraction", self.test_fraction, 0.05, 0.5)
        _check(self.val_fraction + self.test_fraction <= 0.8, "data.test_fraction",
               self.test_fraction, "validation + test must leave at least 20% for training")
        _check_number("data.max_per_class", self.max_per_class, 0, 10_000_000, integer=True)
        _check_number("data.seed", self.seed, 0, 2**31 - 1, integer=True)


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied to training batches only (Keras preprocessing layers).

    Args:
        rotation: maximum rotation in degrees, 0 to 180 (0 = off). Default 10.
        shift: maximum shift as a fraction of the image side, 0 to 0.5. Default 0.1.
        flip: random horizontal flips (off by default: digits and text are not mirror-symmetric).
        zoom: maximum zoom in/out as a fraction, 0 to 0.9. Default 0.1.
        contrast: maximum contrast change as a fraction, 0 to 1.
        brightness: maximum brightness change as a fraction, 0 to 1.
    """

    rotation: float = 10.0
    shift: float = 0.1
    flip: bool = False
    zoom: float = 0.1
    contrast: float = 0.0
    brightness: float = 0.0

    def validate(self) -> None:
        _check_number("augment.rotation", self.rotation, 0, 180)
        _check_number("augment.shift", self.shift, 0, 0.5)
        _check(isinstance(self.flip, bool), "augment.flip", self.flip, "must be true or false")
        _check_number("augment.zoom", self.zoom, 0, 0.9)
        _check_number("augment.contrast", self.contrast, 0, 1)
        _check_number("augment.brightness", self.brightness, 0, 1)

    @property
    def enabled(self) -> bool:
        return bool(self.rotation or self.shift or self.flip or self.zoom or self.contrast
                    or self.brightness)


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build.

    Args:
        name: one of `lenet5`, `resnet`, `resnet_cbam`, `transfer`. Default `lenet5`.
        activation: `lenet5` only: `tanh` (as in the paper) or `relu`.
        pooling: `lenet5` only: `average` (as in the paper) or `max`.
        width: `resnet*`: filters of the first stage (doubled each stage), 4 to 512.
        depth: `resnet*`: residual blocks per stage (three stages), 1 to 8.
        base: `transfer` only: `mobilenet_v2` or `efficientnet_v2b0`.
        fine_tune_layers: `transfer` only: how many top layers of the base to train (0 = frozen).
        dropout: dropout rate before the classifier, 0 to 0.9.
    """

    name: str = "lenet5"
    activation: str = "tanh"
    pooling: str = "average"
    width: int = 16
    depth: int = 1
    base: str = "mobilenet_v2"
    fine_tune_layers: int = 0
    dropout: float = 0.0

    def validate(self) -> None:
        _check(self.name in MODEL_NAMES, "model.name", self.name, f"must be one of {', '.join(MODEL_NAMES)}")
        _check(self.activation in ACTIVATIONS, "model.activation", self.activation,
               f"must be one of {', '.join(ACTIVATIONS)}")
        _check(self.pooling in POOLINGS, "model.pooling", self.pooling, f"must be one of {', '.join(POOLINGS)}")
        _check_number("model.width", self.width, 4, 512, integer=True)
        _check_number("model.depth", self.depth, 1, 8, integer=True)
        _check(self.base in TRANSFER_BASES, "model.base", self.base, f"must be one of {', '.join(TRANSFER_BASES)}")
        _check_number("model.fine_tune_layers", self.fine_tune_layers, 0, 1000, integer=True)
        _check_number("model.dropout", self.dropout, 0, 0.9)


@dataclass(frozen=True)
class TrainConfig:
    """How to fit the model.

    Args:
        epochs: maximum epochs, 1 to 10000. Default 20.
        batch_size: images per step, 1 to 4096. Default 32.
        optimizer: `adam`, `adamw` or `sgd` (with momentum 0.9).
        learning_rate: initial learning rate, (0, 10].
        schedule: `constant` or `cosine` (decays to 0 over all epochs).
        weight_decay: L2 penalty on kernels (decoupled decay for `adamw`), 0 to 1.
        label_smoothing: 0 to 0.5.
        early_stopping: patience in epochs on validation loss (0 = off); the best
            weights are restored.
        mixed_precision: `auto` (on when a GPU is used), `on` or `off`.
        seed: seed for the weights, the shuffle order and the augmentation draws.
        deterministic: bit-exact reruns (TensorFlow op determinism; slower, and some GPU
            ops refuse it). Without it a rerun with the same seeds differs in the last digits.
    """

    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.003
    schedule: str = "cosine"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    early_stopping: int = 0
    mixed_precision: str = "auto"
    seed: int = 0
    deterministic: bool = False

    def validate(self) -> None:
        _check_number("train.epochs", self.epochs, 1, 10_000, integer=True)
        _check_number("train.batch_size", self.batch_size, 1, 4096, integer=True)
        _check(self.optimizer in OPTIMIZERS, "train.optimizer", self.optimizer,
               f"must be one of {', '.join(OPTIMIZERS)}")
        _check_number("train.learning_rate", self.learning_rate, 0, 10)
        _check(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "must be greater than 0")
        _check(self.schedule in SCHEDULES, "train.schedule", self.schedule, f"must be one of {', '.join(SCHEDULES)}")
        _check_number("train.weight_decay", self.weight_decay, 0, 1)
        _check_number("train.label_smoothing", self.label_smoothing, 0, 0.5)
        _check_number("train.early_stopping", self.early_stopping, 0, 10_000, integer=True)
        _check(self.mixed_precision in MIXED_PRECISION, "train.mixed_precision", self.mixed_precision,
               f"must be one of {', '.join(MIXED_PRECISION)}")
        _check_number("train.seed", self.seed, 0, 2**31 - 1, integer=True)
        _check(isinstance(self.deterministic, bool), "train.deterministic", self.deterministic,
               "must be true or false")


_SECTIONS = {"data": DataConfig, "augment": AugmentConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; immutable and validated on creation.

    Args:
        name: a label shown in the runs table (optional).
        data, augment, model, train: the sections above; each defaults to its defaults.
    """

    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(isinstance(self.name, str) and len(self.name) <= 200, "name", self.name,
               "must be text of at most 200 characters")
        for section in _SECTIONS:
            getattr(self, section).validate()
        if self.model.name == "transfer":
            minimum = TRANSFER_MIN_IMAGE_SIZE[self.model.base]
            _check(self.data.image_size >= minimum, "data.image_size", self.data.image_size,
                   f"the {self.model.base} base needs images of at least {minimum}x{minimum}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Builds a config from a (possibly partial) dict; unknown keys are errors."""
        if not isinstance(values, dict):
            raise ConfigError("config", values, "must be a JSON object")
        unknown = set(values) - set(_SECTIONS) - {"name"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(key, values[key], f"unknown section; expected {', '.join(['name', *_SECTIONS])}")
        sections = {}
        for section, klass in _SECTIONS.items():
            part = values.get(section, {})
            if not isinstance(part, dict):
                raise ConfigError(section, part, "must be a JSON object")
            known = {f.name for f in dataclasses.fields(klass)}
            for key in part:
                if key not in known:
                    raise ConfigError(f"{section}.{key}", part[key],
                                      f"unknown setting; expected one of {', '.join(sorted(known))}")
            sections[section] = klass(**part)
        return cls(name=values.get("name", ""), **sections)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError("config", text[:40], f"is not valid JSON ({error})") from None
        return cls.from_dict(values)

    def replace(self, **changes: dict[str, Any]) -> RunConfig:
        """Returns a copy with some settings changed, e.g. `replace(train={"epochs": 3})`."""
        values = self.to_dict()
        for section, part in changes.items():
            if isinstance(part, dict):
                values[section].update(part)
            else:
                values[section] = part
        return RunConfig.from_dict(values)
