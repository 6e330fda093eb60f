import argparse
import dataclasses
import json
import math

import pytest

from engine.cli import build_parser
from engine.cli.runs import CONFIG_FLAGS, config_from_args
from engine.config import (MODEL_NAMES, OPTIMIZERS, HUB_BASES, TRANSFER_BASES, ConfigError, RunConfig, describe_fields,
                           field_spec, section_titles)


def test_defaults_are_valid_and_round_trip_through_json():
    config = RunConfig()
    assert config.data.source == "digits" and config.model.name == "lenet5"
    assert RunConfig.from_json(config.to_json()) == config


def test_partial_dict_fills_defaults():
    config = RunConfig.from_dict({"train": {"epochs": 3}, "name": "quick"})
    assert config.train.epochs == 3 and config.name == "quick"
    assert config.train.batch_size == RunConfig().train.batch_size


@pytest.mark.parametrize(("section", "key", "value", "field"), [
    ("train", "learning_rate", 0.0, "train.learning_rate"),
    ("train", "learning_rate", math.nan, "train.learning_rate"),
    ("train", "learning_rate", math.inf, "train.learning_rate"),
    ("train", "learning_rate", 1e6, "train.learning_rate"),
    ("train", "epochs", 0, "train.epochs"),
    ("train", "epochs", 2.5, "train.epochs"),
    ("train", "batch_size", True, "train.batch_size"),
    ("train", "optimizer", "rmsprop", "train.optimizer"),
    ("data", "image_size", 4, "data.image_size"),
    ("data", "source", "  ", "data.source"),
    ("model", "name", "vgg", "model.name"),
    ("augment", "rotation", -5, "augment.rotation"),
    ("augment", "flip", "yes", "augment.flip"),
    ("train", "deterministic", 1, "train.deterministic"),
])
def test_bad_values_name_the_field_and_value(section, key, value, field):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict({section: {key: value}})
    assert caught.value.field == field
    assert field in str(caught.value) and repr(value) in str(caught.value)


def test_unknown_settings_are_refused():
    with pytest.raises(ConfigError, match="train.epoch"):
        RunConfig.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_dict({"optimiser": {}})


def test_split_must_leave_training_data():
    with pytest.raises(ConfigError, match="at least 20% for training"):
        RunConfig.from_dict({"data": {"val_fraction": 0.5, "test_fraction": 0.5}})


def test_transfer_base_minimum_image_size():
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict({"model": {"name": "transfer"}, "data": {"image_size": 16}})
    assert caught.value.field == "data.image_size"


def test_invalid_json_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="JSON object"):
        RunConfig.from_json(json.dumps([1, 2]))


def test_replace_returns_a_validated_copy():
    config = RunConfig().replace(train={"epochs": 2}, name="x")
    assert config.train.epochs == 2 and config.name == "x"
    with pytest.raises(ConfigError):
        RunConfig().replace(train={"epochs": -1})


# -- field metadata: declared once on each field, read by validate(), the form, the table and the CLI ------------

SECTIONS = ("", *section_titles())
SPECS = [spec for section in SECTIONS for spec in describe_fields(section)]


def _config_with(spec, value, **others):
    """`RunConfig.from_dict` with one setting (and any `others`, by full name) set."""
    values: dict = {}
    for key, v in {spec.key: value, **others}.items():
        section, _, name = key.rpartition(".")
        (values.setdefault(section, {}) if section else values)[name] = v
    return RunConfig.from_dict(values)


def test_every_setting_is_declared_with_metadata():
    for section in SECTIONS:
        klass = type(getattr(RunConfig(), section)) if section else RunConfig
        names = [f.name for f in dataclasses.fields(klass) if not (section == "" and f.name in section_titles())]
        assert [spec.name for spec in describe_fields(section)] == names
    for spec in SPECS:
        assert spec.label and spec.help, spec.key
        assert field_spec(spec.key) is spec
        spec.check(spec.default)  # the default obeys its own metadata
        assert set(spec.models or ()) <= set(MODEL_NAMES)
        assert (spec.range is not None) == (spec.kind in (int, float)), spec.key
        assert (spec.choices is not None) == (spec.widget == "select"), spec.key
    for section in SECTIONS:
        labels = [spec.label for spec in describe_fields(section)]
        assert len(labels) == len(set(labels)), f"two settings of {section!r} share a label"
    assert list(section_titles()) == ["data", "augment", "model", "train"]


def test_field_spec_names_settings_as_errors_do():
    assert field_spec("train.learning_rate").key == "train.learning_rate"
    assert field_spec("name").section == "" and field_spec("name").max_length == 200
    assert field_spec("model.width").applies_to("resnet") and not field_spec("model.width").applies_to("lenet5")
    assert field_spec("model.dropout").applies_to("transfer")
    for key in ("train.epoch", "optimiser.lr", "nothing"):
        with pytest.raises(KeyError):
            field_spec(key)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.range], ids=lambda s: s.key)
def test_validate_follows_each_range(spec):
    low, high = spec.range
    ok = [high] if spec.low_exclusive else [low, high]
    bad = [low - 1, high + 1, math.nan, True, "1"] + ([low] if spec.low_exclusive else [])
    if spec.kind is int:
        bad.append(low + 0.5)
    for value in ok:
        _config_with(spec, value, **({"data.val_fraction": 0.05} if spec.name == "test_fraction" else {}))
    for value in bad:
        with pytest.raises(ConfigError) as caught:
            _config_with(spec, value)
        assert caught.value.field == spec.key and repr(value) in str(caught.value)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.choices], ids=lambda s: s.key)
def test_validate_follows_each_choice_list(spec):
    for choice in spec.choices:
        _config_with(spec, choice, **({"data.image_size": 32} if spec.key == "model.name" else {}))
    with pytest.raises(ConfigError) as caught:
        _config_with(spec, "no-such-choice")
    assert caught.value.field == spec.key and ", ".join(spec.choices) in caught.value.reason


def test_text_and_bool_settings_follow_their_metadata():
    with pytest.raises(ConfigError, match="at most 200 characters"):
        RunConfig(name="x" * 201)
    for value in ("", "   ", 3):
        with pytest.raises(ConfigError, match="data.source"):
            RunConfig.from_dict({"data": {"source": value}})
    for spec in (s for s in SPECS if s.kind is bool):
        with pytest.raises(ConfigError, match="must be true or false"):
            _config_with(spec, 0)


def test_cli_train_options_come_from_the_metadata():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.option_strings[0]: a for a in subparsers.choices["train"]._actions if a.option_strings}
    for flag, key in CONFIG_FLAGS.items():
        spec, action = field_spec(key), actions[flag]
        assert action.choices == spec.choices and spec.help in action.help, flag
        assert action.type is (None if spec.kind is str else spec.kind), flag
    assert actions["--model"].choices == MODEL_NAMES and actions["--base"].choices == TRANSFER_BASES + HUB_BASES
    assert actions["--optimizer"].choices == OPTIMIZERS
    args = parser.parse_args(["train", "--model", "resnet", "--lr", "0.01", "--image-size", "24", "--name", "n"])
    config = config_from_args(args)
    assert (config.model.name, config.train.learning_rate, config.data.image_size, config.name) == (
        "resnet", 0.01, 24, "n")
