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
import re
from dataclasses import dataclass, field
from typing import Any

from engine.config_fields import WIDGETS, ConfigError, FieldSpec, _check, setting

__all__ = ["ACTIVATIONS", "AugmentConfig", "CLASS_WEIGHTS", "ConfigError", "DataConfig", "FieldSpec", "HUB_BASES",
           "MIXED_PRECISION", "MODEL_NAMES", "ModelConfig", "OPTIMIZERS", "POOLINGS", "RunConfig", "SCHEDULES",
           "TRANSFER_BASES", "TRANSFER_MIN_IMAGE_SIZE", "TrainConfig", "WIDGETS", "describe_fields", "field_spec",
           "section_titles", "setting"]

MODEL_NAMES = ("lenet5", "resnet", "resnet_cbam", "transfer")
# The transfer zoo (keras.applications); engine.models.zoo holds how each is built and where its weights come from.
TRANSFER_BASES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_v2b0",
                  "efficientnet_v2b1", "efficientnet_v2s", "resnet50_v2", "convnext_tiny")
# KerasHub image-classifier presets `weights list` shows; any `hub:<preset>` is a valid `model.base` (engine.zoo),
# outside `choices` (the form's select box and the CLI's --base offer the keras.applications bases; --set takes any).
HUB_BASES = ("hub:resnet_50_imagenet", "hub:efficientnet_b0_ra_imagenet", "hub:mobilenet_v3_small_100_imagenet")
_HUB_BASE = re.compile(r"hub:[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
# Smallest input each transfer base accepts (keras.applications refuses less; hub backbones take any size).
TRANSFER_MIN_IMAGE_SIZE = dict.fromkeys(TRANSFER_BASES, 32)
CLASS_WEIGHTS = ("none", "balanced")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
ACTIVATIONS = ("tanh", "relu")
POOLINGS = ("average", "max")
MIXED_PRECISION = ("auto", "on", "off")
_RESNETS = ("resnet", "resnet_cbam")


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
    path_column: str = setting("", label="Manifest: path column", max_length=200,
                               help="For a CSV/TSV manifest: the column of image paths (relative to the manifest); "
                                    "blank = detect.")
    label_column: str = setting("", label="Manifest: label column", max_length=200,
                                help="For a CSV/TSV manifest: the column of class labels; blank = detect.")
    split_column: str = setting("", label="Manifest: split column", max_length=200,
                                help="For a CSV/TSV manifest: the column naming each image's split (train, val, "
                                     "test); blank = detect, `none` = no split column.")
    group_near_duplicates: bool = setting(False, label="Keep near duplicates in one split",
                                          help="Keep each group of near-duplicate images (perceptual hash within "
                                               "10 of 64 bits) in one split, so that the test score is not "
                                               "inflated by near-copies of training images.")

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
    base: str = setting("mobilenet_v2", label="Base network", choices=TRANSFER_BASES + HUB_BASES, models=("transfer",),
                        help="The ImageNet-pretrained network the classifier is built on: a keras.applications "
                             "base or hub:<preset>, a KerasHub image-classifier preset.")
    weights: str = setting("imagenet", label="Base weights", models=("transfer",), required=True, max_length=1000,
                           help="imagenet (pretrained; `python -m engine weights get BASE` fetches them), random "
                                "(trained from scratch, base trainable) or the path of a .h5/.weights.h5 file "
                                "(a KerasHub preset folder for a hub: base).",
                           reason="give imagenet, random or the path of a weights file or preset folder")
    fine_tune_layers: int = setting(0, label="Fine-tuned base layers", range=(0, 1000), models=("transfer",),
                                    help="0 keeps the pretrained base frozen; with head epochs, the top layers "
                                         "unfrozen in the second phase.")
    dropout: float = setting(0.0, label="Dropout", range=(0, 0.9), step=0.05, format="%.2f",
                             help="Dropout rate before the classifier.")

    def validate(self) -> None:
        """As every section, except that `base` may also be any `hub:<preset>` (not only the form's choices)."""
        for spec in describe_fields(type(self)):
            if spec.name == "base" and str(self.base).startswith("hub:"):
                _check(bool(_HUB_BASE.fullmatch(self.base)), spec.key, self.base,
                       "a KerasHub base is hub:<preset name>, e.g. hub:resnet_50_imagenet")
            else:
                spec.check(getattr(self, spec.name))


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
    class_weight: str = setting("none", label="Class weights", choices=CLASS_WEIGHTS,
                                choice_labels={"none": "none", "balanced": "balanced (rare classes count more)"},
                                help="balanced weighs each class's loss by total / (classes x its count).")
    head_epochs: int = setting(0, label="Head-only epochs (two-phase)", range=(0, 10_000), models=("transfer",),
                               help="Transfer: train the head alone for this many epochs, then unfreeze the top "
                                    "fine-tuned base layers at a lower rate (all epochs or more: head only); "
                                    "0 = one phase.")
    fine_tune_lr_factor: float = setting(0.1, label="Fine-tune rate factor", range=(0, 1), low_exclusive=True,
                                         models=("transfer",),
                                         step=0.05, format="%.3f",
                                         help="Second phase: the learning rate times this factor.")
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
    workers: int = setting(1, label="Workers (processes)", range=(1, 256),
                           help="Train one model across this many worker processes (Ray Train with "
                                "MultiWorkerMirroredStrategy; the batch size stays global); more than 1 needs "
                                "the Ray backend (APERTURE_BACKEND=ray).")


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
            minimum = TRANSFER_MIN_IMAGE_SIZE.get(self.model.base, 32)
            _check(self.data.image_size >= minimum, "data.image_size", self.data.image_size,
                   f"the {self.model.base} base needs images of at least {minimum}x{minimum}")
        two_phase = self.model.name == "transfer" and self.train.head_epochs > 0 and self.model.weights != "random"
        _check(self.train.workers == 1 or not two_phase, "train.workers", self.train.workers,
               "two-phase fine-tuning (train.head_epochs > 0) trains on one worker: set train.workers=1 "
               "or train.head_epochs=0")

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
