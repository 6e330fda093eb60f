"""The typed run configuration: frozen dataclasses, validated, with a JSON round-trip.

The dashboard form, the CLI and the job process all go through `RunConfig`; a job
receives only its run id and reads the config back from the run folder.

Each setting is declared once, with `setting(...)`: its default and its metadata (label,
help, range, choices, the architectures it applies to, widget hints). `validate()`, the Train
form, the config table and the CLI's options are all generated from that metadata; read it
with `describe_fields(section)` or `field_spec("train.learning_rate")`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping
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
WIDGETS = ("number", "slider", "select", "toggle", "text")
_RESNETS = ("resnet", "resnet_cbam")


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


# -- field metadata ---------------------------------------------------------------


def setting(default: Any, *, label: str, help: str = "", range: tuple[float, float] | None = None,
            low_exclusive: bool = False, choices: tuple[str, ...] | None = None,
            choice_labels: Mapping[str, str] | None = None, models: tuple[str, ...] | None = None,
            required: bool = False, max_length: int | None = None, reason: str = "", widget: str | None = None,
            **ui: Any) -> Any:
    """Declares one config setting: its default and the metadata everything else is generated from.

    Args:
        default: the default value; its type (bool, int, float or str) is the setting's type.
        label: the name people read (form widget, config table, error messages).
        help: one sentence for the form's tooltip and the CLI's `--help`.
        range: `(low, high)`, both allowed, for a number. Required for numbers.
        low_exclusive: `low` itself is not allowed (a learning rate of 0).
        choices: the allowed values of a text setting.
        choice_labels: how the form shows some of the choices (others show as themselves).
        models: the architectures (`model.name`) the setting applies to. Default: all.
        required: a free text setting must not be blank.
        max_length: the most characters a free text setting may have. Default: no limit.
        reason: the error for a free text setting that breaks `required` or `max_length`.
        widget: the form widget, one of `WIDGETS`. Default: `toggle` for a bool, `select` with
            choices, `text` for other text, else `number`.
        **ui: more keyword arguments for the form widget, e.g. `step`, `format`, `min_value`.

    Returns:
        A `dataclasses.field` carrying the metadata.
    """
    if widget is None:
        widget = ("toggle" if isinstance(default, bool) else "select" if choices else
                  "text" if isinstance(default, str) else "number")
    if widget not in WIDGETS or (widget in ("number", "slider")) != (range is not None):
        raise ValueError(f"{label!r}: widget={widget!r} needs one of {', '.join(WIDGETS)}, and a range for numbers")
    metadata = {"label": label, "help": help, "range": range, "low_exclusive": low_exclusive,
                "choices": choices, "choice_labels": dict(choice_labels or {}), "models": models,
                "required": required, "max_length": max_length, "reason": reason, "widget": widget, "ui": ui}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """One setting's metadata as `setting(...)` declared it, with its `section` ("" at the top) and `name`."""

    section: str
    name: str
    default: Any
    label: str
    help: str
    range: tuple[float, float] | None
    low_exclusive: bool
    choices: tuple[str, ...] | None
    choice_labels: Mapping[str, str]
    models: tuple[str, ...] | None
    required: bool
    max_length: int | None
    reason: str
    widget: str
    ui: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The setting's full name, as errors and `--set` spell it: `train.learning_rate`."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def kind(self) -> type:
        """`bool`, `int`, `float` or `str`: the type of the default."""
        return type(self.default)

    def applies_to(self, model_name: str) -> bool:
        """Whether the setting matters for the architecture `model_name`."""
        return self.models is None or model_name in self.models

    def choice_label(self, value: Any) -> str:
        return self.choice_labels.get(value, str(value))

    def allowed(self) -> str:
        """The allowed values in words, e.g. `1 to 10000` or `one of adam, adamw, sgd`."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.range:
            low, high = (f"{v:,}" if isinstance(v, int) else f"{v:g}" for v in self.range)
            return f"more than {low}, up to {high}" if self.low_exclusive else f"{low} to {high}"
        return "true or false" if self.kind is bool else "text"

    def check(self, value: Any) -> None:
        """Raises `ConfigError` naming the setting and `value` when the metadata does not allow it."""
        if self.kind is bool:
            _check(isinstance(value, bool), self.key, value, "must be true or false")
        elif self.choices is not None:
            _check(value in self.choices, self.key, value, f"must be one of {', '.join(self.choices)}")
        elif self.range is not None:
            low, high = self.range
            _check_number(self.key, value, low, high, integer=self.kind is int)
            _check(value > low or not self.low_exclusive, self.key, value, f"must be greater than {low:g}")
        else:
            ok = (isinstance(value, str) and (value.strip() != "" or not self.required)
                  and (self.max_length is None or len(value) <= self.max_length))
            limit = f" of at most {self.max_length} characters" if self.max_length else ""
            _check(ok, self.key, value, self.reason or f"must be text{limit}")


class _Validated:
    """A config part whose `validate()` checks each field against its metadata."""

    def validate(self) -> None:
        """Raises `ConfigError` for the first field its metadata does not allow."""
        for spec in describe_fields(type(self)):
            spec.check(getattr(self, spec.name))


# -- the sections -----------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig(_Validated):
    """Where the images come from and how they are split; each field's metadata says what it allows."""

    source: str = setting("digits", label="Source", required=True,
                          help="A built-in dataset (digits, mnist, fashion_mnist, cifar10, shapes) "
                               "or the path of an image folder or a .zip of class folders.",
                          reason="give a built-in dataset name or a folder/zip path")
    image_size: int = setting(32, label="Image size (px)", range=(8, 512), step=8,
                              help="Images are resized to this square side.")
    val_fraction: float = setting(0.15, label="Validation share", range=(0.05, 0.5), step=0.05, format="%.2f",
                                  help="Share of the images held out for validation.")
    test_fraction: float = setting(0.15, label="Test share", range=(0.05, 0.5), step=0.05, format="%.2f",
                                   help="Share of the images held out for the final test.")
    max_per_class: int = setting(0, label="Max images per class (0 = all)", range=(0, 10_000_000), step=100,
                                 help="Keep at most this many images of each class; 0 keeps them all.")
    seed: int = setting(0, label="Split seed", range=(0, 2**31 - 1),
                        help="Seed for the split (and for generating `shapes`).")

    def validate(self) -> None:
        super().validate()
        _check(self.val_fraction + self.test_fraction <= 0.8, "data.test_fraction",
               self.test_fraction, "validation + test must leave at least 20% for training")


@dataclass(frozen=True)
class AugmentConfig(_Validated):
    """Random augmentation applied to training batches only (Keras preprocessing layers)."""

    rotation: float = setting(10.0, label="Rotation (°)", range=(0, 180), widget="slider", step=5.0,
                              help="Maximum rotation in degrees; 0 = off.")
    shift: float = setting(0.1, label="Shift (share of side)", range=(0, 0.5), widget="slider", step=0.05,
                           help="Maximum shift as a share of the image side.")
    flip: bool = setting(False, label="Horizontal flip",
                         help="Leave off for digits and text: a flipped 2 is not a 2.")
    zoom: float = setting(0.1, label="Zoom", range=(0, 0.9), widget="slider", step=0.05,
                          help="Maximum zoom in or out, as a fraction.")
    contrast: float = setting(0.0, label="Contrast", range=(0, 1), widget="slider", step=0.05,
                              help="Maximum contrast change, as a fraction.")
    brightness: float = setting(0.0, label="Brightness", range=(0, 1), widget="slider", step=0.05,
                                help="Maximum brightness change, as a fraction.")

    @property
    def enabled(self) -> bool:
        return bool(self.rotation or self.shift or self.flip or self.zoom or self.contrast
                    or self.brightness)


@dataclass(frozen=True)
class ModelConfig(_Validated):
    """Which network to build; `models=` on a field names the architectures that use it."""

    name: str = setting("lenet5", label="Architecture", choices=MODEL_NAMES,
                        choice_labels={"lenet5": "LeNet-5 (small, fast)", "resnet": "ResNet",
                                       "resnet_cbam": "ResNet + CBAM attention",
                                       "transfer": "Transfer learning (pretrained base)"},
                        help="The network to train.")
    activation: str = setting("tanh", label="Activation", choices=ACTIVATIONS, models=("lenet5",),
                              help="tanh (as in the paper) or relu.")
    pooling: str = setting("average", label="Pooling", choices=POOLINGS, models=("lenet5",),
                           help="average (as in the paper) or max.")
    width: int = setting(16, label="Width (filters)", range=(4, 512), models=_RESNETS, step=4,
                         help="Filters of the first stage, doubled each stage.")
    depth: int = setting(1, label="Depth (blocks per stage)", range=(1, 8), models=_RESNETS,
                         help="Residual blocks in each of the three stages.")
    base: str = setting("mobilenet_v2", label="Base network", choices=TRANSFER_BASES, models=("transfer",),
                        help="The ImageNet-pretrained network the classifier is built on.")
    fine_tune_layers: int = setting(0, label="Fine-tuned base layers", range=(0, 1000), models=("transfer",),
                                    help="0 keeps the pretrained base frozen.")
    dropout: float = setting(0.0, label="Dropout", range=(0, 0.9), step=0.05, format="%.2f",
                             help="Dropout rate before the classifier.")


@dataclass(frozen=True)
class TrainConfig(_Validated):
    """How to fit the model."""

    epochs: int = setting(20, label="Epochs", range=(1, 10_000), help="The most epochs to train for.")
    batch_size: int = setting(32, label="Batch size", range=(1, 4096), help="Images per step.")
    optimizer: str = setting("adam", label="Optimizer", choices=OPTIMIZERS,
                             help="adam, adamw (decoupled weight decay) or sgd (with momentum 0.9).")
    learning_rate: float = setting(0.003, label="Learning rate", range=(0, 10), low_exclusive=True,
                                   min_value=1e-6, step=1e-4, format="%.5f", help="The initial learning rate.")
    schedule: str = setting("cosine", label="Schedule", choices=SCHEDULES,
                            help="constant, or cosine: decays to 0 over all epochs.")
    weight_decay: float = setting(0.0, label="Weight decay", range=(0, 1), step=1e-4, format="%.4f",
                                  help="L2 penalty on kernels (decoupled decay for adamw).")
    label_smoothing: float = setting(0.0, label="Label smoothing", range=(0, 0.5), step=0.05, format="%.2f",
                                     help="How much of each one-hot target is spread over all classes.")
    early_stopping: int = setting(0, label="Patience (epochs)", range=(0, 10_000),
                                  help="Stop after this many epochs without a better validation loss "
                                       "(the best weights are restored); 0 = off.")
    mixed_precision: str = setting("auto", label="Mixed precision", choices=MIXED_PRECISION,
                                   help="auto (on when a GPU is used), on or off.")
    seed: int = setting(0, label="Training seed", range=(0, 2**31 - 1),
                        help="Seed for the weights, the shuffle order and the augmentation draws.")
    deterministic: bool = setting(False, label="Bit-exact reruns",
                                  help="TensorFlow op determinism: the same seed gives the same numbers to the "
                                       "last digit. Slower, and some GPU ops refuse it.")


_SECTIONS = {"data": DataConfig, "augment": AugmentConfig, "model": ModelConfig, "train": TrainConfig}


def _section(title: str, klass: type) -> Any:
    return field(default_factory=klass, metadata={"title": title})


@dataclass(frozen=True)
class RunConfig(_Validated):
    """Everything a training run needs; immutable and validated on creation.

    Args:
        name: a label shown in the runs table (optional).
        data, augment, model, train: the sections above; each defaults to its defaults.
    """

    name: str = setting("", label="Run name", max_length=200, placeholder="e.g. lenet baseline",
                        help="A label shown in the runs table.")
    data: DataConfig = _section("Data", DataConfig)
    augment: AugmentConfig = _section("Augmentation", AugmentConfig)
    model: ModelConfig = _section("Model", ModelConfig)
    train: TrainConfig = _section("Training", TrainConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        super().validate()
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


# -- reading the metadata ---------------------------------------------------------


def describe_fields(section: str | type) -> tuple[FieldSpec, ...]:
    """The metadata of a section's settings, in declaration order.

    Args:
        section: `data`, `augment`, `model` or `train` (or its class); `""` or `RunConfig`
            for the top-level settings (`name`).

    Returns:
        One `FieldSpec` per setting.
    """
    if isinstance(section, str):
        if section not in _SECTIONS and section != "":
            raise KeyError(f"section={section!r}: expected one of {', '.join(_SECTIONS)}")
        section = _SECTIONS.get(section, RunConfig)
    return _specs(section)


@functools.cache
def _specs(klass: type) -> tuple[FieldSpec, ...]:
    name = next((n for n, k in _SECTIONS.items() if k is klass), "")
    return tuple(FieldSpec(section=name, name=f.name, default=f.default, **f.metadata)
                 for f in dataclasses.fields(klass) if "label" in f.metadata)


def field_spec(key: str) -> FieldSpec:
    """The metadata of one setting by its full name, e.g. `train.learning_rate` or `name`.

    Raises:
        KeyError: no such setting.
    """
    section, _, name = key.rpartition(".")
    for spec in describe_fields(section):
        if spec.name == name:
            return spec
    raise KeyError(f"{key!r} is not a config setting")


def section_titles() -> dict[str, str]:
    """The sections' names and titles in order: `{"data": "Data", "augment": "Augmentation", ...}`."""
    return {f.name: f.metadata["title"] for f in dataclasses.fields(RunConfig) if "title" in f.metadata}
