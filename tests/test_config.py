"""Run config validation: defaults, hp merging, and errors that name the key and value."""

from __future__ import annotations

import pytest
import yaml

from persafl import methods
from persafl.config import ConfigError, load_run_config, resolve_run_config

SCHEDULE = {"model": "clock", "staleness_bound": 2, "num_updates": 10}


def minimal(**overrides) -> dict:
    config = {"method": {"name": "persafl_me"}, "schedule": dict(SCHEDULE)}
    config.update(overrides)
    return config


def test_defaults_are_filled_in_and_method_hp_merged():
    config = resolve_run_config(minimal(method={"name": "persafl_me", "hp": {"local_steps": 3}}))
    assert config["seed"] == 0
    assert config["backend"] == "auto" and config["device"] == "auto"
    assert config["eval"] == {"every": 50}
    assert config["partition"]["test_fraction"] == 0.25
    hp = config["method"]["hp"]
    assert hp["local_steps"] == 3  # the user's value wins
    defaults = methods.get("persafl_me").defaults
    assert hp["moreau_lambda"] == defaults["moreau_lambda"]  # the method's default beneath
    assert config["schedule"]["policy"] == "drop"  # schedule defaults from ScheduleConfig


def test_resolving_twice_is_stable():
    once = resolve_run_config(minimal())
    assert resolve_run_config(once) == once


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        (minimal(optimizer="adam"), ["unknown key", "optimizer"]),
        (minimal(eval={"every": 5, "often": True}), ["'eval'", "often"]),
        (minimal(eval={"every": "often"}), ["eval.every", "'often'", "integer >= 1"]),
        (minimal(eval={"every": True}), ["eval.every", "True"]),
        (minimal(seed=-1), ["'seed'", "-1", ">= 0"]),
        (minimal(backend="gpu"), ["'backend'", "'gpu'", "vectorized"]),
        (minimal(dataset="mnist"), ["'dataset'", "'mnist'", "mapping"]),
        (minimal(partition={"test_fraction": 1.5}), ["partition.test_fraction", "1.5"]),
        (minimal(method={"name": "fedprox"}), ["method.name", "'fedprox'", "persafl_me"]),
        (
            minimal(method={"name": "afl", "hp": {"learning_rate": 1}}),
            ["method.hp", "learning_rate"],
        ),
        (
            minimal(method={"name": "afl", "hp": {"local_lr": "fast"}}),
            ["method.hp.local_lr", "fast"],
        ),
        (minimal(method={"name": "afl", "hp": {"batch_size": 2.5}}), ["batch_size", "2.5"]),
        (minimal(schedule={**SCHEDULE, "model": "lottery"}), ["schedule", "lottery"]),
        (minimal(schedule={"model": "clock"}), ["schedule", "num_updates"]),
    ],
)
def test_bad_configs_name_the_key_and_value(config, fragments):
    with pytest.raises(ConfigError) as info:
        resolve_run_config(config)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_load_run_config_reads_yaml_and_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal(seed=4)))
    assert load_run_config(path)["seed"] == 4
    path.write_text(yaml.safe_dump(minimal(sed=4)))
    with pytest.raises(ConfigError, match="run.yaml.*sed"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_run_config(tmp_path / "missing.yaml")
    path.write_text("seed: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(path)
