"""The sweep config (config/*.yaml) and its expansion into per-run configs.

A sweep is data sets x partitions x methods x staleness bounds x seeds; ``local`` ignores
staleness and runs at bound 0 only. The functions here are pure (dict in, dict/list out) so that
the workflow (workflow/rules/common.smk) and the tests call the same code. The CLI (in
:mod:`persafl.sweep_cli`, run as ``python -m persafl.sweep``) writes one run config for the
workflow's light ``run_config`` rule::

    python -m persafl.sweep run-config --config config/test.yaml --dataset synthetic \
        --partition natural --method afl --tau 4 --seed 0 --out run.yaml
    python -m persafl.sweep partition-config --config config/test.yaml --dataset synthetic \
        --partition natural --seed 0 --out partition.yaml
    python -m persafl.sweep list --config config/test.yaml          # one run directory a line

The sweep config is validated against workflow/schemas/config.schema.yaml, filling in the
schema's defaults exactly as ``snakemake.utils.validate`` does, so the CLI and the workflow see
the same resolved config.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

__all__ = [
    "GroupKey",
    "RunKey",
    "SweepError",
    "check_sweep",
    "config_hash",
    "datasets",
    "group_dir",
    "group_keys",
    "group_rule_name",
    "group_runs",
    "load_sweep_config",
    "partition_dir",
    "partition_keys",
    "partition_run_config",
    "run_config",
    "run_dir",
    "run_files",
    "run_keys",
]

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
RUN_FILES = ("metrics.csv", "clients.csv", "summary.json")  # persafl.run_files writes them
LOCAL = "local"  # the method that ignores staleness: run at bound 0 only
# Datasets fetched into data_root before training (synthetic is generated in memory).
FETCHED = ("mnist", "fashion_mnist", "cifar10")


class SweepError(ValueError):
    """A sweep config that is valid for the schema but inconsistent; the message says why."""


class RunKey(NamedTuple):
    """Identity of one training run (also its result path)."""

    dataset: str
    partition: str
    method: str
    tau: int
    seed: int


# ---- loading and validation -------------------------------------------------------------


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively with ``update`` (snakemake's config merge); a new dict."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def fill_defaults(cfg: dict[str, Any], schema_path: str | Path, what: str) -> None:
    """Validate ``cfg`` in place against the YAML JSON schema at ``schema_path`` and fill in
    its defaults (as snakemake does); a violation raises ``ValueError`` naming ``what``, the key
    path and the schema's complaint."""
    import jsonschema
    from jsonschema import validators

    schema = yaml.safe_load(Path(schema_path).read_text())
    base = validators.validator_for(schema)
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        for name, prop in properties.items():
            if "default" in prop and isinstance(instance, dict):
                instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    try:
        validators.extend(base, {"properties": set_defaults})(schema).validate(cfg)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"{what} key '{where}': {err.message}") from None


def validate(cfg: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate ``cfg`` in place against the schema and fill in its defaults (as snakemake).

    Raises :class:`SweepError` naming the key path, the value and the schema's complaint.
    """
    try:
        fill_defaults(cfg, schema_path, "sweep config")
    except ValueError as err:
        raise SweepError(str(err)) from None
    check_sweep(cfg)
    return cfg


def load_sweep_config(
    paths: Sequence[str | Path],
    overrides: Mapping[str, Any] | None = None,
    schema_path: str | Path = SCHEMA,
) -> dict[str, Any]:
    """Merge the YAML files in order (later wins), then ``overrides``; validate; return."""
    cfg: dict[str, Any] = {}
    from persafl.config import ConfigError, read_yaml

    for path in paths:
        try:
            loaded = read_yaml(path, "sweep config") or {}
        except ConfigError as err:
            raise SweepError(str(err)) from None
        if not isinstance(loaded, dict):
            raise SweepError(f"{path}: expected a mapping at the top level, got {loaded!r}")
        cfg = deep_merge(cfg, loaded)
    cfg = deep_merge(cfg, overrides or {})
    return validate(cfg, schema_path)


def check_sweep(cfg: Mapping[str, Any]) -> None:
    """Consistency checks the schema cannot express."""
    from persafl.config import ConfigError, reject_non_finite

    try:
        reject_non_finite(cfg, "sweep config")
    except ConfigError as err:
        raise SweepError(str(err)) from None
    if not datasets(cfg):
        raise SweepError(
            "sweep config: no data set is enabled; set datasets.<name>.enabled: true for one"
        )
    tau = cfg["figures"]["accuracy_tau"]
    if tau not in cfg["staleness_bounds"]:
        raise SweepError(
            f"sweep config key 'figures.accuracy_tau': got {tau}, expected one of "
            f"staleness_bounds {cfg['staleness_bounds']}"
        )
    from persafl.feasibility import check_partition

    for name in datasets(cfg):
        ds = cfg["datasets"][name]
        for pname, part in ds["partitions"].items():
            if "~" in pname or "/" in pname:
                raise SweepError(
                    f"sweep config key 'datasets.{name}.partitions.{pname}': "
                    "partition names may not contain '~' or '/'"
                )
            try:
                check_partition(name, ds.get("params") or {}, pname, part)
            except ValueError as err:
                raise SweepError(f"sweep config: {err}") from None
    from persafl.tuning import check_tuning  # the tuning section (persafl.tuning)

    try:
        check_tuning(cfg)
    except ValueError as err:
        raise SweepError(str(err)) from None


# ---- the grid ------------------------------------------------------------------------------


def datasets(cfg: Mapping[str, Any]) -> list[str]:
    """Enabled data sets, in config order."""
    return [name for name, ds in cfg.get("datasets", {}).items() if ds.get("enabled", True)]


def taus_of(cfg: Mapping[str, Any], method: str) -> list[int]:
    """Staleness bounds a method runs at: all of them, or [0] for ``local``."""
    return [0] if method == LOCAL else list(cfg["staleness_bounds"])


def run_keys(
    cfg: Mapping[str, Any], dataset: str | None = None, tau: int | None = None
) -> list[RunKey]:
    """Every training run of the sweep (optionally of one data set / one staleness bound;
    ``local`` is part of every bound's selection since it has no staleness)."""
    keys = []
    for name in datasets(cfg):
        if dataset is not None and name != dataset:
            continue
        for partition in cfg["datasets"][name]["partitions"]:
            for method in cfg["methods"]:
                for t in taus_of(cfg, method):
                    if tau is not None and method != LOCAL and t != tau:
                        continue
                    for seed in cfg["seeds"]:
                        keys.append(RunKey(name, partition, method, t, seed))
    return keys


class GroupKey(NamedTuple):
    """A training group: the runs of one method on one data set and partition (every bound
    and seed), trained in one process with their client jobs stacked together."""

    dataset: str
    partition: str
    method: str


def group_keys(cfg: Mapping[str, Any]) -> list[GroupKey]:
    """Every training group of the sweep, in run order."""
    seen: dict[GroupKey, None] = {}
    for key in run_keys(cfg):
        seen.setdefault(GroupKey(key.dataset, key.partition, key.method), None)
    return list(seen)


def group_runs(cfg: Mapping[str, Any], group: GroupKey) -> list[RunKey]:
    """The runs of ``group`` (bounds, then seeds)."""
    return [
        k
        for k in run_keys(cfg, group.dataset)
        if (k.partition, k.method) == (group.partition, group.method)
    ]


def group_dir(group: GroupKey) -> str:
    """``dataset~D/partition~P/method~M``: the group's log and benchmark path."""
    return f"dataset~{group.dataset}/partition~{group.partition}/method~{group.method}"


def group_rule_name(group: GroupKey) -> str:
    """``train_<dataset>_<partition>_<method>`` as an identifier (the group's rule name)."""
    raw = f"train_{group.dataset}_{group.partition}_{group.method}"
    return "".join(c if c.isalnum() or c == "_" else "_" for c in raw)


def partition_keys(
    cfg: Mapping[str, Any], dataset: str | None = None
) -> list[tuple[str, str, int]]:
    """(dataset, partition, seed) of every partition the sweep trains on."""
    return sorted(
        {(k.dataset, k.partition, k.seed) for k in run_keys(cfg, dataset)},
        key=lambda k: (datasets(cfg).index(k[0]), k[1], k[2]),
    )


def run_dir(key: RunKey, root: str = "results/runs") -> str:
    """``results/runs/dataset~D/partition~P/method~M/tau~T/seed~S``."""
    return (
        f"{root}/dataset~{key.dataset}/partition~{key.partition}/method~{key.method}"
        f"/tau~{key.tau}/seed~{key.seed}"
    )


def run_files(key: RunKey, root: str = "results/runs") -> list[str]:
    """The files a finished run leaves (summary.json last): what aggregation reads."""
    return [f"{run_dir(key, root)}/{name}" for name in RUN_FILES]


def partition_dir(dataset: str, partition: str, seed: int, root: str = "results/partitions") -> str:
    """``results/partitions/dataset~D/partition~P/seed~S``."""
    return f"{root}/dataset~{dataset}/partition~{partition}/seed~{seed}"


# ---- run configs ---------------------------------------------------------------------------


def _dataset_section(cfg: Mapping[str, Any], dataset: str, partition: str) -> dict[str, Any]:
    if dataset not in datasets(cfg):
        raise SweepError(
            f"data set {dataset!r} is not enabled in the sweep; enabled: {datasets(cfg)}"
        )
    ds = cfg["datasets"][dataset]
    if partition not in ds["partitions"]:
        raise SweepError(
            f"partition {partition!r} is not configured for {dataset!r}; "
            f"configured: {sorted(ds['partitions'])}"
        )
    return ds


def partition_run_config(cfg: Mapping[str, Any], dataset: str, partition: str, seed: int) -> dict:
    """A run config holding only what the partition depends on (data set, partition, seed).

    Method and schedule keep their run-config defaults, so a change of hyperparameters or of
    the method list does not rewrite it (and does not re-partition or retrain everything).
    """
    ds = _dataset_section(cfg, dataset, partition)
    part = ds["partitions"][partition]
    return {
        "seed": int(seed),
        "dataset": {"name": dataset, "root": cfg["data_root"], "params": dict(ds["params"])},
        "partition": {
            "scheme": part["scheme"],
            "num_clients": part["num_clients"],
            "test_fraction": part["test_fraction"],
            "params": dict(part["params"]),
            # only when set: configs without a cap keep their resolved JSON (no rerun)
            **(
                {"max_train_samples": part["max_train_samples"]}
                if part.get("max_train_samples") is not None
                else {}
            ),
        },
        # constant: a valid run config needs a schedule; the partition does not read it
        "schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 1},
    }


def run_config(
    cfg: Mapping[str, Any], dataset: str, partition: str, method: str, tau: int, seed: int
) -> dict:
    """The run config (docs/design.md "Run config") of one run of the sweep.

    ``method.hp`` is the data set's ``hp`` updated with its ``method_hp[method]``; unset names
    take the method's defaults in persafl.config.
    """
    if method not in cfg["methods"]:
        raise SweepError(f"method {method!r} is not in the sweep; methods: {cfg['methods']}")
    if tau not in taus_of(cfg, method):
        raise SweepError(
            f"staleness bound {tau} is not in the sweep for {method!r}; "
            f"bounds: {taus_of(cfg, method)}"
        )
    ds = _dataset_section(cfg, dataset, partition)
    base = partition_run_config(cfg, dataset, partition, seed)
    hp = {**ds["hp"], **ds["method_hp"].get(method, {})}
    schedule = copy.deepcopy(dict(cfg["schedule"]))
    schedule.update({"staleness_bound": int(tau), "num_updates": ds["num_updates"]})
    return {
        **base,
        "model": copy.deepcopy(dict(ds["model"])),
        "method": {"name": method, "hp": hp},
        "schedule": schedule,
        "eval": {"every": ds["eval_every"]},
        "backend": cfg["backend"],
        "device": cfg["device"],
        # the last bits of a result depend on the thread count: it is part of the run's identity
        "threads": int((ds.get("resources") or {}).get("threads", 1)),
    }


def config_hash(cfg: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the resolved sweep config (canonical JSON)."""
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


if __name__ == "__main__":  # `python -m persafl.sweep ...`: the CLI lives in persafl.sweep_cli
    from persafl.sweep_cli import main

    sys.exit(main())
