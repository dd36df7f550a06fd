"""persafl.sweep: the sweep grid, run configs and schema validation (fast, no training)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from persafl import sweep, sweep_cli
from persafl.config import resolve_run_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("config", "synthetic", "test", "base_papers", "test_tuning")
CONFIGS = {name: REPO / "config" / f"{name}.yaml" for name in SHIPPED}


def load(name: str, overrides: dict | None = None) -> dict:
    return sweep.load_sweep_config([CONFIGS[name]], overrides)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_configs_validate_and_resolve(name):
    cfg = load(name)
    keys = sweep.run_keys(cfg)
    assert keys
    for key in keys[:: max(1, len(keys) // 10)]:
        run = resolve_run_config(sweep.run_config(cfg, *key))  # the train CLI's own checks
        assert run["schedule"]["staleness_bound"] == key.tau
        assert run["method"]["name"] == key.method
        assert run["seed"] == key.seed


def test_paper_grid_is_the_full_product_with_local_at_tau_0_only():
    cfg = load("config")
    keys = sweep.run_keys(cfg)
    assert "cifar10" not in sweep.datasets(cfg)  # configured but disabled
    n_data, n_taus, n_seeds = 3, len(cfg["staleness_bounds"]), len(cfg["seeds"])
    assert len(keys) == n_data * ((len(cfg["methods"]) - 1) * n_taus + 1) * n_seeds
    assert {k.tau for k in keys if k.method == "local"} == {0}
    assert len(set(keys)) == len(keys)
    assert len(sweep.partition_keys(cfg)) == n_data * n_seeds


def test_selection_by_dataset_and_tau_keeps_local():
    cfg = load("test")
    keys = sweep.run_keys(cfg, dataset="synthetic", tau=4)
    assert {k.method for k in keys} == set(cfg["methods"])
    assert {k.tau for k in keys if k.method != "local"} == {4}


def test_method_hp_overrides_dataset_hp():
    cfg = load("config")
    me = sweep.run_config(cfg, "synthetic", "natural", "persafl_me", 4, 0)["method"]["hp"]
    afl = sweep.run_config(cfg, "synthetic", "natural", "afl", 4, 0)["method"]["hp"]
    assert me["moreau_lambda"] == 20.0 and me["local_lr"] == 0.005
    assert "moreau_lambda" not in afl
    # schema defaults never invent hyperparameters: unset names keep the method's default
    assert resolve_run_config(sweep.run_config(cfg, "synthetic", "natural", "afl", 0, 0))


def test_partition_config_ignores_method_and_schedule():
    cfg = load("test")
    changed = copy.deepcopy(cfg)
    changed["methods"] = ["afl"]
    changed["datasets"]["synthetic"]["hp"]["local_lr"] = 0.5
    a = sweep.partition_run_config(cfg, "synthetic", "natural", 1)
    assert a == sweep.partition_run_config(changed, "synthetic", "natural", 1)
    resolve_run_config(a)


def test_paths_carry_the_identity():
    key = sweep.RunKey("mnist", "pathological", "persafl_me", 16, 3)
    assert sweep.run_dir(key) == (
        "results/runs/dataset~mnist/partition~pathological/method~persafl_me/tau~16/seed~3"
    )
    assert sweep.partition_dir("mnist", "pathological", 3) == (
        "results/partitions/dataset~mnist/partition~pathological/seed~3"
    )


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"staleness_bound": [1]}, "staleness_bound"),
        ({"methods": ["fedavg"]}, "fedavg"),
        ({"datasets": {"synthetic": {"num_updates": 0}}}, "datasets.synthetic.num_updates"),
        ({"datasets": {"synthetic": {"hp": {"lr": 0.1}}}}, "lr"),
        ({"figures": {"accuracy_tau": 3}}, "figures.accuracy_tau"),
        ({"datasets": {"synthetic": {"enabled": False}}}, "enabled"),
    ],
)
def test_bad_sweep_configs_are_named(override, named):
    with pytest.raises(sweep.SweepError, match=named.replace(".", r"\.")):
        load("test", override)


def test_merge_order_later_wins(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"seeds": [7]}))
    cfg = sweep.load_sweep_config([CONFIGS["test"], extra])
    assert cfg["seeds"] == [7]
    assert cfg["staleness_bounds"] == [0, 4]


def test_cli_writes_the_same_run_config(tmp_path):
    out = tmp_path / "run.yaml"
    args = ["--config", str(CONFIGS["test"]), "--override", '{"seeds": [0, 9]}']
    rc = sweep_cli.main(
        [
            "run-config",
            *args,
            "--dataset",
            "synthetic",
            "--partition",
            "natural",
            "--method",
            "persafl_me",
            "--tau",
            "4",
            "--seed",
            "9",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cfg = load("test", {"seeds": [0, 9]})
    assert yaml.safe_load(out.read_text()) == sweep.run_config(
        cfg, "synthetic", "natural", "persafl_me", 4, 9
    )


def test_cli_reports_an_unknown_run_for_people(tmp_path, capsys):
    rc = sweep_cli.main(
        [
            "run-config",
            "--config",
            str(CONFIGS["test"]),
            "--dataset",
            "mnist",
            "--partition",
            "x",
            "--method",
            "afl",
            "--tau",
            "0",
            "--seed",
            "0",
            "--out",
            str(tmp_path / "r.yaml"),
        ]
    )
    assert rc == 2
    assert "mnist" in capsys.readouterr().err
    assert not (tmp_path / "r.yaml").exists()


def test_config_hash_is_stable_and_sensitive():
    a, b = load("test"), load("test")
    assert sweep.config_hash(a) == sweep.config_hash(b)
    b["seeds"] = [0]
    assert sweep.config_hash(a) != sweep.config_hash(b)


def test_write_turns_a_resolved_json_config_into_the_same_yaml(tmp_path):
    cfg = sweep.load_sweep_config([REPO / "config" / "test.yaml"])
    key = sweep.run_keys(cfg)[0]
    resolved = sweep.run_config(cfg, key.dataset, key.partition, key.method, key.tau, key.seed)
    out = tmp_path / "run.yaml"
    assert sweep_cli.main(["write", "--json", json.dumps(resolved), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == resolved
    assert sweep_cli.main(["write", "--json", "[1, 2]", "--out", str(out)]) == 2
    assert sweep_cli.main(["write", "--json", "{not json", "--out", str(out)]) == 2
