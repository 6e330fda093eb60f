import json
import math

import pytest

from engine.config import ConfigError, RunConfig


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
