"""The tuning stage (persafl.tuning): validation split, config checks, selection, edge flags, and
that the test split is never read while tuning (poisoned test labels change nothing)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from persafl import sweep, tuning
from persafl.partition import partition_dataset
from persafl.rng import generator

REPO = Path(__file__).resolve().parents[1]
TUNING_CONFIG = REPO / "config" / "test_tuning.yaml"
LABELS = generator(0, "test-labels").choice(5, size=1200)
GROUPS = np.repeat(np.arange(6), 200)


def _partition(seed: int = 3):
    return partition_dataset(LABELS, GROUPS, "natural", 6, seed, test_fraction=0.25,
                             num_classes=5)


# ---- the validation split ------------------------------------------------------------------


def test_validation_split_is_disjoint_from_the_rest_of_train_and_from_test():
    part = _partition()
    view = tuning.validation_split(part, LABELS, 0.2, seed=3)
    for train, test, fit, val in zip(part.train, part.test, view.train, view.test, strict=True):
        assert np.array_equal(np.sort(np.concatenate([fit, val])), train)  # carved from train
        assert len(np.intersect1d(fit, val)) == 0
        assert len(np.intersect1d(np.concatenate([fit, val]), test)) == 0  # no test sample
        assert len(val) == round(0.2 * len(train))


def test_validation_split_is_stratified():
    part = _partition()
    view = tuning.validation_split(part, LABELS, 0.2, seed=3)
    for train, val in zip(part.train, view.test, strict=True):
        have = np.bincount(LABELS[train], minlength=5)
        got = np.bincount(LABELS[val], minlength=5)
        assert np.all(np.abs(got - 0.2 * have) <= 1.0)  # each class within one of its share


def test_validation_split_is_seeded():
    part = _partition()
    a = tuning.validation_split(part, LABELS, 0.2, seed=3)
    b = tuning.validation_split(part, LABELS, 0.2, seed=3)
    c = tuning.validation_split(part, LABELS, 0.2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.test, b.test, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.test, c.test, strict=True))
    assert a.params["validation_share"] == 0.2 and a.params["validation_seed"] == 3


def test_validation_share_must_leave_training_data():
    with pytest.raises(ValueError, match="validation_share"):
        tuning.validation_split(_partition(), LABELS, 1.0, seed=0)


# ---- config --------------------------------------------------------------------------------


def _cfg() -> dict:
    return sweep.load_sweep_config([TUNING_CONFIG])


def test_unequal_grids_are_refused():
    raw = yaml.safe_load(TUNING_CONFIG.read_text())
    raw["tuning"]["datasets"]["synthetic"]["grids"]["afl"]["local_lr"] = [0.01, 0.02, 0.05]
    with pytest.raises(sweep.SweepError, match="same number"):
        sweep.validate(raw)


def test_a_method_without_grid_is_refused():
    raw = yaml.safe_load(TUNING_CONFIG.read_text())
    del raw["tuning"]["datasets"]["synthetic"]["grids"]["local"]
    with pytest.raises(sweep.SweepError, match="no grid for"):
        sweep.validate(raw)


def test_tuning_seeds_must_differ_from_final_seeds():
    raw = yaml.safe_load(TUNING_CONFIG.read_text())
    raw["tuning"]["seeds"] = [1, 100]
    with pytest.raises(sweep.SweepError, match="tuning.seeds"):
        sweep.validate(raw)


def test_one_tuning_seed_is_refused_by_the_schema():
    raw = yaml.safe_load(TUNING_CONFIG.read_text())
    raw["tuning"]["seeds"] = [100]
    with pytest.raises(sweep.SweepError, match="tuning.seeds"):
        sweep.validate(raw)


def test_tuning_run_config_uses_the_point_the_seed_and_the_tuning_budget():
    cfg = _cfg()
    keys = tuning.tuning_keys(cfg, "synthetic", "persafl_me")
    assert len(keys) == 2 * 2  # two points, two tuning seeds
    run = tuning.tuning_run_config(cfg, keys[0])
    assert run["seed"] in cfg["tuning"]["seeds"]
    assert run["schedule"]["staleness_bound"] == cfg["tuning"]["staleness_bound"]
    assert run["schedule"]["num_updates"] == 40
    assert run["eval"]["every"] == 40  # the final checkpoint only
    assert run["method"]["hp"]["moreau_lambda"] in (5.0, 20.0)
    local = tuning.tuning_run_config(cfg, tuning.tuning_keys(cfg, "synthetic", "local")[0])
    assert local["schedule"]["staleness_bound"] == 0


def test_point_labels_follow_the_values_only():
    a = tuning.point_label({"local_lr": 0.01, "server_lr": 1.0})
    assert a == tuning.point_label({"server_lr": 1.0, "local_lr": 0.01})
    assert a != tuning.point_label({"local_lr": 0.02, "server_lr": 1.0})


def test_apply_selection_replaces_the_configured_values():
    cfg = _cfg()
    run = sweep.run_config(cfg, "synthetic", "natural", "persafl_me", 4, 0)
    out = tuning.apply_selection(run, {"hp": {"moreau_lambda": 5.0}})
    assert out["method"]["hp"]["moreau_lambda"] == 5.0
    assert run["method"]["hp"]["moreau_lambda"] == 20.0  # not modified in place


# ---- selection -----------------------------------------------------------------------------


GRID = {"local_lr": [0.001, 0.01, 0.1], "server_lr": [0.5, 1.0]}


def _rows(acc_of) -> list[dict]:
    return [{"point": tuning.point_label(p), "seed": s, "val_acc": acc_of(p, s)}
            for p in tuning.grid_points(GRID) for s in (100, 101)]


def test_selection_picks_the_best_mean_over_seeds():
    # best mean at (0.01, 0.5); (0.1, 1.0) has the best single seed but a worse mean
    def acc(p, s):
        table = {(0.01, 0.5): (0.80, 0.78), (0.1, 1.0): (0.90, 0.50)}
        return table.get((p["local_lr"], p["server_lr"]), (0.6, 0.6))[s - 100]

    selection, table = tuning.select(GRID, _rows(acc))
    assert selection["hp"] == {"local_lr": 0.01, "server_lr": 0.5}
    assert math.isclose(selection["val_acc_mean"], 0.79)
    assert sum(r["selected"] for r in table) == 1 and len(table) == 6
    assert selection["edge"] == ["server_lr=0.5 (lowest of grid)"]


def test_inner_best_is_not_flagged_and_edge_best_is():
    grid = {"local_lr": [0.001, 0.01, 0.1]}
    rows = [{"point": tuning.point_label({"local_lr": v}), "seed": 0, "val_acc": a}
            for v, a in ((0.001, 0.5), (0.01, 0.9), (0.1, 0.7))]
    assert tuning.select(grid, rows)[0]["edge"] == []
    rows[2]["val_acc"] = 0.95
    selection = tuning.select(grid, rows)[0]
    assert selection["hp"] == {"local_lr": 0.1}
    assert selection["edge"] == ["local_lr=0.1 (highest of grid)"]


def test_a_diverged_point_is_never_selected():
    def acc(p, s):
        return float("nan") if p["local_lr"] == 0.1 else 0.5 + p["local_lr"]

    selection, table = tuning.select(GRID, _rows(acc))
    assert selection["hp"]["local_lr"] == 0.01
    assert sum(r["n_diverged"] for r in table) == 4


def test_ties_go_to_the_first_point_in_grid_order():
    selection, _ = tuning.select(GRID, _rows(lambda p, s: 0.7))
    assert selection["hp"] == tuning.grid_points(GRID)[0]


def test_selection_cli_reads_the_final_checkpoint(tmp_path):
    """The CLI reads clients.csv (final evaluation), client-averaged, not metrics.csv."""
    from persafl.tuning_cli import main

    grid = {"local_lr": [0.01, 0.05]}
    dirs = []
    for value, accs in ((0.01, [0.9, 0.5]), (0.05, [0.7, 0.68])):  # client means 0.7 / 0.69
        for seed in (100, 101):
            d = tmp_path / f"point~{tuning.point_label({'local_lr': value})}" / f"seed~{seed}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps({"status": "completed"}))
            # n_test differs: the sample-weighted mean would prefer the other point
            pd.DataFrame({"client": [0, 1], "n_test": [1, 100], "global_acc": accs,
                          "personal_acc": accs}).to_csv(d / "clients.csv", index=False)
            dirs.append(str(d))
    out = tmp_path / "afl.yaml"
    table = tmp_path / "afl.csv"
    assert main(["select", "--dataset", "synthetic", "--method", "afl", "--grid",
                 json.dumps(grid), "--meta", "{}", "--out", str(out), "--table", str(table),
                 *dirs]) == 0
    selection = yaml.safe_load(out.read_text())
    assert selection["hp"] == {"local_lr": 0.01}
    assert selection["edge"] == ["local_lr=0.01 (lowest of grid)"]


# ---- the test split is never read ----------------------------------------------------------


def _tune_tiny(tmp_path: Path, poison: bool, monkeypatch) -> dict:
    """Train the tuning runs of ME in config/test_tuning.yaml in-process, with the
    data's TEST labels replaced by noise when ``poison``; return the selections."""
    import persafl.data as data_module
    from persafl.config import resolve_run_config
    from persafl.data import load_dataset
    from persafl.partition import build_partition
    from persafl.partition_io import save_partition
    from persafl.train import train_group
    from persafl.tuning_cli import run_row

    cfg = _cfg()
    cfg = copy.deepcopy(cfg)
    test_indices: list[np.ndarray] = []

    def poisoned(name, root, **params):
        data = load_dataset(name, root, **params)
        if not poison:
            return data
        idx = np.unique(np.concatenate(test_indices))
        shift = generator(0, "poison").integers(1, data.num_classes, size=len(idx))
        y = data.y.clone()
        y[idx] = (y[idx] + torch.as_tensor(shift)) % data.num_classes  # every test label wrong
        assert bool((y[idx] != data.y[idx]).all())
        return dataclasses.replace(data, y=y)

    selections = {}
    for method in ("persafl_me",):  # personalized evaluation: the path that adapts
        keys = tuning.tuning_keys(cfg, "synthetic", method)
        runs = []
        for key in keys:
            run = resolve_run_config(tuning.tuning_run_config(cfg, key))
            data = load_dataset("synthetic", cfg["data_root"], **run["dataset"]["params"])
            # the partition of the first final seed, as the workflow's tuning view
            base = sweep.partition_run_config(cfg, "synthetic", key.partition, cfg["seeds"][0])
            part = build_partition(base, data)
            test_indices.append(np.concatenate(part.test))
            view = tuning.validation_split(part, data.y.numpy(), 0.2, key.seed)
            path = tmp_path / f"{poison}_{key.point}_{key.seed}.npz"
            save_partition(view, path)
            out = tmp_path / str(poison) / tuning.tuning_run_dir(key)
            runs.append((run, out, path))
        monkeypatch.setattr(data_module, "load_dataset", poisoned)
        train_group(runs)
        monkeypatch.setattr(data_module, "load_dataset", load_dataset)
        rows = [run_row(out, method) for _, out, _ in runs]
        grid = cfg["tuning"]["datasets"]["synthetic"]["grids"][method]
        selections[method] = (tuning.select(grid, rows)[0], rows)
    return selections


def test_poisoned_test_labels_change_no_selection(tmp_path, monkeypatch):
    clean = _tune_tiny(tmp_path, False, monkeypatch)
    poisoned = _tune_tiny(tmp_path, True, monkeypatch)
    for method in clean:
        assert clean[method][0] == poisoned[method][0]
        assert clean[method][1] == poisoned[method][1]  # every validation accuracy, exactly


def test_a_selected_hp_cell_parses_back_to_the_values_it_describes():
    from persafl.tuning_cli import describe, parse_described

    row = pd.Series({"local_lr": 0.005, "moreau_lambda": 15.0, "personal_lr": 0.03})
    text = describe(row, ["local_lr", "moreau_lambda", "personal_lr"])
    assert text == "local_lr=0.005, moreau_lambda=15, personal_lr=0.03"
    assert parse_described(text) == {"local_lr": 0.005, "moreau_lambda": 15.0, "personal_lr": 0.03}
    with pytest.raises(ValueError, match="name=value"):
        parse_described("local_lr=0.005, personal_lr")
