"""Leak-free hyperparameter tuning: every method gets the same grid budget on held-out TRAIN data.

The config's ``tuning`` section (workflow/schemas/config.schema.yaml) names, per data set and
method, a grid (lists of values of the hyperparameters that matter); every method of a data set
must have the same number of grid points, so the tuning budget is equal. Tuning runs use their
own seeds (``tuning.seeds``, disjoint from the final ``seeds``), one staleness bound
(``tuning.staleness_bound``; ``local`` runs at 0 as always) and the data set's first partition,
split as for the first final seed (``seeds[0]``).

Validation: each client's TRAIN split (of the partition of ``seeds[0]``) is split again,
stratified by label and seeded by the tuning seed (:func:`validation_split`), into a fitting
part and a validation part (``validation_share``, default 0.2). A tuning run trains on a
*tuning view* of the partition whose ``train`` is the fitting part and whose ``test`` is the
validation part; the real test indices are not in it, so the engine cannot read a test sample
or label while tuning.

Selection (:func:`select`): per grid point, the client-averaged validation accuracy of the
FINAL checkpoint (``clients.csv``; never the best round), averaged over the tuning seeds; the
headline accuracy of the method as in persafl.aggregate (global for ``afl``, personalized for
the others). The highest wins (ties: first in grid order; a diverged run counts as -inf). A
selected value at the smallest or largest value of its grid is flagged (``edge``): the optimum
may lie outside the grid.

The workflow (workflow/rules/tuning.smk) writes the selection to
``results/tuning/<dataset>/<method>.yaml``; the final runs' ``run.yaml`` take its ``hp``
(``python -m persafl.sweep write --tuned``). CLI: :mod:`persafl.tuning_cli`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "TuneKey",
    "apply_selection",
    "check_tuning",
    "edge_flags",
    "grid_points",
    "point_label",
    "select",
    "selection_path",
    "tuned",
    "tuned_datasets",
    "tuning_group_dir",
    "tuning_group_keys",
    "tuning_keys",
    "tuning_partition",
    "tuning_run_config",
    "tuning_run_dir",
    "validation_split",
]

ROOT = "results/tuning"
LOCAL = "local"


class TuneKey(NamedTuple):
    """Identity of one tuning run (also its result path)."""

    dataset: str
    partition: str
    method: str
    point: str  # point_label of the grid point's values
    seed: int


# ---- the validation split ------------------------------------------------------------------


def validation_split(partition: Any, labels: np.ndarray, share: float, seed: int) -> Any:
    """The tuning view of ``partition``: ``train`` = each client's train minus its validation
    part, ``test`` = the validation part (``share`` of its train, stratified by label, drawn
    from the generator (seed, "validation", client)). The real test indices are dropped."""
    from dataclasses import replace

    from persafl.partition import stratified_split
    from persafl.rng import generator

    if not 0.0 < share < 1.0:
        raise ValueError(f"validation_share must be in (0, 1), got {share}")
    labels = np.asarray(labels, dtype=np.int64)
    fit, val = [], []
    for client, train in enumerate(partition.train):
        f, v = stratified_split(train, labels, share, generator(seed, "validation", client))
        if len(f) == 0:
            raise ValueError(
                f"validation_share {share}: client {client} has {len(train)} training samples "
                "and none left to train on; lower validation_share"
            )
        fit.append(f)
        val.append(v)
    params = {**partition.params, "validation_share": share, "validation_seed": seed}
    return replace(partition, train=fit, test=val, params=params)


# ---- config --------------------------------------------------------------------------------


def _section(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return cfg.get("tuning") or {}


def tuned_datasets(cfg: Mapping[str, Any]) -> list[str]:
    """Enabled data sets that are tuned (tuning on, and a grid section for the data set)."""
    from persafl import sweep

    section = _section(cfg)
    if not section.get("enabled", False):
        return []
    return [d for d in sweep.datasets(cfg) if d in (section.get("datasets") or {})]


def tuned(cfg: Mapping[str, Any], dataset: str, method: str) -> bool:
    return dataset in tuned_datasets(cfg) and method in cfg["methods"]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid's value lists (names sorted, values in given order)."""
    names = sorted(grid)
    return [dict(zip(names, values, strict=True)) for values in
            itertools.product(*(grid[n] for n in names))]


def point_label(values: Mapping[str, Any]) -> str:
    """A short, content-derived name of a grid point: changing one value renames only the
    points that hold it, so only their runs are redone."""
    text = json.dumps(dict(values), sort_keys=True)
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:10]


def _grid(cfg: Mapping[str, Any], dataset: str, method: str) -> dict[str, list]:
    return dict(_section(cfg)["datasets"][dataset]["grids"][method])


def check_tuning(cfg: Mapping[str, Any]) -> None:
    """Consistency the schema cannot express; raises ValueError naming the key."""
    section = _section(cfg)
    if not section.get("enabled", False):
        return
    final = set(cfg["seeds"])
    clash = sorted(final & set(section["seeds"]))
    if clash:
        raise ValueError(
            f"sweep config key 'tuning.seeds': {clash} are also final seeds; tuning seeds must "
            f"differ from seeds {sorted(final)}"
        )
    for dataset in tuned_datasets(cfg):
        grids = section["datasets"][dataset]["grids"]
        missing = [m for m in cfg["methods"] if m not in grids]
        if missing:
            raise ValueError(
                f"sweep config key 'tuning.datasets.{dataset}.grids': no grid for {missing}; "
                "every method of the sweep is tuned with the same budget"
            )
        sizes = {m: len(grid_points(grids[m])) for m in cfg["methods"]}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"sweep config key 'tuning.datasets.{dataset}.grids': grid points per method "
                f"{sizes}; every method needs the same number (an equal tuning budget)"
            )


# ---- keys, paths and run configs -----------------------------------------------------------


def _tune_partition(cfg: Mapping[str, Any], dataset: str) -> str:
    return next(iter(cfg["datasets"][dataset]["partitions"]))


def tuning_keys(
    cfg: Mapping[str, Any], dataset: str | None = None, method: str | None = None
) -> list[TuneKey]:
    keys = []
    for name in tuned_datasets(cfg):
        if dataset not in (None, name):
            continue
        partition = _tune_partition(cfg, name)
        for m in cfg["methods"]:
            if method not in (None, m):
                continue
            for values in grid_points(_grid(cfg, name, m)):
                for seed in _section(cfg)["seeds"]:
                    keys.append(TuneKey(name, partition, m, point_label(values), int(seed)))
    return keys


def tuning_group_keys(cfg: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """One training group per (dataset, partition, method, point): its tuning seeds stacked.
    (Grid points cannot share stacked calls: the hyperparameters are part of the stack key.)"""
    return list(dict.fromkeys(k[:4] for k in tuning_keys(cfg)))


def tuning_group_dir(point: Sequence[str]) -> str:
    """``dataset~D/partition~P/method~M/point~X``: a grid point's log and benchmark path."""
    dataset, partition, method, label = point
    return f"dataset~{dataset}/partition~{partition}/method~{method}/point~{label}"


def tuning_run_dir(key: TuneKey, root: str = ROOT) -> str:
    return (
        f"{root}/runs/dataset~{key.dataset}/partition~{key.partition}/method~{key.method}"
        f"/point~{key.point}/seed~{key.seed}"
    )


def tuning_partition(cfg: Mapping[str, Any], dataset: str, partition: str, seed: int) -> str:
    """The tuning view of tuning seed ``seed``, saved beside the partition it is carved from:
    the partition of the FIRST FINAL seed (so the final run of that seed is evaluated on a test
    split no tuning run has touched), its validation part drawn with the tuning seed."""
    from persafl import sweep

    share = _section(cfg)["validation_share"]
    base = sweep.partition_dir(dataset, partition, int(cfg["seeds"][0]))
    return f"{base}/validation~{share}/seed~{seed}/partition.npz"


def selection_path(dataset: str, method: str, root: str = ROOT) -> str:
    return f"{root}/{dataset}/{method}.yaml"


def point_values(cfg: Mapping[str, Any], key: TuneKey) -> dict[str, Any]:
    for values in grid_points(_grid(cfg, key.dataset, key.method)):
        if point_label(values) == key.point:
            return values
    raise KeyError(f"no grid point {key.point} for {key.dataset}/{key.method}")


def tuning_run_config(cfg: Mapping[str, Any], key: TuneKey) -> dict[str, Any]:
    """The run config of one tuning run: the final runs' config of the method, with the grid
    point's values, the tuning seed and bound, and the tuning budget of updates (evaluated at
    the end only: the selection reads the final checkpoint)."""
    from persafl import sweep

    section = _section(cfg)
    tau = 0 if key.method == LOCAL else int(section["staleness_bound"])
    view = {**cfg, "staleness_bounds": [tau], "seeds": list(section["seeds"])}
    run = sweep.run_config(view, key.dataset, key.partition, key.method, tau, key.seed)
    run["method"]["hp"].update(point_values(cfg, key))
    updates = section["datasets"][key.dataset].get("num_updates")
    if updates is not None:
        run["schedule"]["num_updates"] = int(updates)
    run["eval"] = {"every": int(run["schedule"]["num_updates"])}
    return run


def apply_selection(run: Mapping[str, Any], selection: Mapping[str, Any]) -> dict[str, Any]:
    """A final run's config with the selected hyperparameters in place of the config's."""
    out = copy.deepcopy(dict(run))
    out["method"]["hp"].update(selection["hp"])
    return out


# ---- selection -----------------------------------------------------------------------------


def headline(method: str) -> str:
    """The clients.csv column a method is judged by (persafl.aggregate's headline)."""
    return "global_acc" if method == "afl" else "personal_acc"


def edge_flags(grid: Mapping[str, Sequence[Any]], chosen: Mapping[str, Any]) -> list[str]:
    """Parameters whose chosen value is the smallest or largest of a grid of >= 2 values."""
    flags = []
    for name in sorted(grid):
        values = sorted(grid[name])
        if len(values) < 2:
            continue
        if chosen[name] == values[0]:
            flags.append(f"{name}={chosen[name]} (lowest of grid)")
        elif chosen[name] == values[-1]:
            flags.append(f"{name}={chosen[name]} (highest of grid)")
    return flags


def select(
    grid: Mapping[str, Sequence[Any]], rows: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick the grid point of highest mean validation accuracy over seeds.

    ``rows``: one per tuning run: ``point`` (label), ``seed``, ``val_acc`` (client-averaged,
    final checkpoint; NaN for a diverged run). Returns the selection and the per-point table.
    """
    points = grid_points(grid)
    table = []
    for values in points:
        label = point_label(values)
        accs = [float(r["val_acc"]) for r in rows if r["point"] == label]
        if not accs:
            raise ValueError(f"no tuning run of grid point {label} {values}")
        finite = [a for a in accs if math.isfinite(a)]
        mean = float(np.mean(accs)) if len(finite) == len(accs) else float("nan")
        std = float(np.std(accs)) if len(finite) == len(accs) else float("nan")
        table.append({"point": label, **values, "val_acc_mean": mean, "val_acc_std": std,
                      "n_seeds": len(accs), "n_diverged": len(accs) - len(finite)})
    scores = [r["val_acc_mean"] if math.isfinite(r["val_acc_mean"]) else -math.inf
              for r in table]
    best = int(np.argmax(scores))  # first of equal maxima: grid order
    chosen = points[best]
    for i, row in enumerate(table):
        row["selected"] = i == best
    selection = {
        "hp": dict(chosen),
        "point": table[best]["point"],
        "val_acc_mean": table[best]["val_acc_mean"],
        "edge": edge_flags(grid, chosen),
        "grid": {k: list(v) for k, v in grid.items()},
    }
    return selection, table
