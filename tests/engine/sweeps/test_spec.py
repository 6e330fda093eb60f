"""The sweep file: what it accepts, and one-line reasons naming the bad part for what it refuses."""

import json

import pytest

from engine.config import RunConfig
from engine.sweeps import SweepError, SweepSpec

EXAMPLE = {"base": {"data": {"source": "digits"}, "model": {"name": "lenet5"}, "train": {"epochs": 4}},
           "space": {"train.learning_rate": {"low": 0.0003, "high": 0.01, "log": True},
                     "model.width": {"low": 8, "high": 32, "step": 8},
                     "model.name": {"choices": ["lenet5", "resnet"]}},
           "objectives": {"val_accuracy": "maximize", "int8_latency_ms": "minimize"},
           "trials": 6, "parallel": 1}


def _with(**changes):
    spec = json.loads(json.dumps(EXAMPLE))
    for key, value in changes.items():
        spec[key] = value
    return spec


def test_the_issues_example_is_accepted():
    spec = SweepSpec.from_dict(EXAMPLE)
    assert [p.kind for p in spec.space.values()] == ["float", "int", "choice"]
    assert spec.sampler_name == "nsga2" and not spec.prunes and spec.exports
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    config = spec.config_for({"train.learning_rate": 0.001, "model.width": 16, "model.name": "resnet"}, name="t")
    assert isinstance(config, RunConfig) and config.model.width == 16 and config.train.epochs == 4
    assert config.name == "t" and config.train.learning_rate == 0.001


def test_one_accuracy_objective_uses_tpe_and_prunes():
    spec = SweepSpec.from_dict(_with(objectives={"val_accuracy": "maximize"}))
    assert spec.sampler_name == "tpe" and spec.prunes and not spec.exports
    assert not SweepSpec.from_dict(_with(objectives={"params": "minimize"})).prunes


@pytest.mark.parametrize(("change", "named"), [
    ({"space": {"train.learnin_rate": {"low": 0.001, "high": 0.01}}}, "'train.learnin_rate' is not a config setting"),
    ({"space": {"nonsense": {"low": 1, "high": 2}}}, "'nonsense' is not a config setting"),
    ({"space": {"train.learning_rate": {"low": 0.01, "high": 0.001}}}, "space.train.learning_rate: empty range"),
    ({"space": {"model.width": {"low": 16, "high": 16}}}, "space.model.width: empty range"),
    ({"space": {"model.width": {"low": 8.5, "high": 16}}}, "must be an integer"),
    ({"space": {"model.width": {"low": 8, "high": 16, "step": 0}}}, "step=0"),
    ({"space": {"train.learning_rate": {"low": 0, "high": 0.1, "log": True}}}, "space.train.learning_rate"),
    ({"space": {"train.epochs": {"low": 1, "high": 100000}}}, "space.train.epochs: 100000"),
    ({"space": {"model.name": {"choices": []}}}, "non-empty list"),
    ({"space": {"model.name": {"choices": ["lenet5", "vgg"]}}}, "'vgg' must be one of"),
    ({"space": {"data.source": {"low": 1, "high": 2}}}, "search it with \"choices\""),
    ({"space": {"model.width": {"low": 8, "high": 16, "choices": [8]}}}, "space.model.width"),
    ({"space": {}}, "space: give at least one setting"),
    ({"objectives": {"accuracy": "maximize"}}, "'accuracy' is not an objective"),
    ({"objectives": {"val_accuracy": "up"}}, "objectives.val_accuracy='up'"),
    ({"objectives": {}}, "objectives: give at least one"),
    ({"trials": 0}, "trials=0"),
    ({"trials": "6"}, "trials='6'"),
    ({"trials": True}, "trials=True"),
    ({"parallel": 0}, "parallel=0"),
    ({"base": {"train": {"epochz": 2}}}, "base: train.epochz"),
    ({"base": {"model": {"name": "transfer"}, "data": {"image_size": 16}}}, "base: data.image_size"),
    ({"sampler": "grid"}, "sampler='grid'"),
    ({"budget": 5}, "'budget' is not a sweep setting"),
])
def test_bad_input_is_refused_in_one_line_naming_it(change, named):
    with pytest.raises(SweepError) as caught:
        SweepSpec.from_dict(_with(**change))
    message = str(caught.value)
    assert named in message and "\n" not in message


def test_a_value_the_base_config_refuses_is_caught_before_any_trial():
    spec = _with(base={"model": {"name": "transfer"}, "data": {"image_size": 64}},
                 space={"data.image_size": {"low": 16, "high": 64, "step": 16}})
    with pytest.raises(SweepError, match="space.data.image_size=16 with the base config"):
        SweepSpec.from_dict(spec)


@pytest.mark.parametrize("value", [None, [], "sweep", 3])
def test_a_sweep_that_is_not_an_object(value):
    with pytest.raises(SweepError, match="must be a JSON object"):
        SweepSpec.from_dict(value)


def test_a_data_source_outside_the_allowed_folders_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("APERTURE_DATA_ROOTS", str(tmp_path / "allowed"))
    monkeypatch.setenv("APERTURE_HOME", str(tmp_path / "workspace"))
    for spec in (_with(base={"data": {"source": "/etc"}}),
                 _with(space={"data.source": {"choices": ["digits", "/etc/../etc"]}})):
        with pytest.raises(SweepError, match="data.source: '/etc.*outside the allowed data folders"):
            SweepSpec.from_dict(spec)
    assert SweepSpec.from_dict(_with(space={"data.source": {"choices": ["digits", str(tmp_path / "allowed" / "x")]}}))
