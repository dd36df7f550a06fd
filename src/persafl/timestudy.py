"""The staleness and time study (issue 13): settings x bounds x data sets x methods x seeds.

A study config (``config/staleness.yaml``, schema ``workflow/schemas/staleness.schema.yaml``)
names schedule *settings* (virtual clock with policy drop or wait and a speed distribution,
the theory's delay sampling, synchronous rounds of S clients) and the staleness bounds each is
run at; a setting may override hyperparameters and adapt ``server_lr`` to the bound
(``server_lr_power``). Every run is an ordinary training run (``persafl.train``) written to::

    results/staleness/runs/setting~S/dataset~D/partition~P/method~M/tau~T/seed~N/

so the run files, checks and aggregation are the main sweep's. The CLI (the rules of
``workflow/rules/staleness.smk`` call it)::

    python -m persafl.timestudy list  --study config/staleness.yaml      # groups and runs
    python -m persafl.timestudy train --study config/staleness.yaml --group G
    python -m persafl.timestudy tables --study config/staleness.yaml \
        --out-dir results/tables/staleness

``train`` trains one group (one setting, data set and method: every bound and seed) in one
process; ``tables`` writes the study's aggregated tables (:mod:`persafl.timetables`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from persafl.config import read_yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "staleness.schema.yaml"
RUNS = "results/staleness/runs"


class StudyError(ValueError):
    """A bad study config; the message names the key."""


class StudyRun(NamedTuple):
    setting: str
    dataset: str
    partition: str
    method: str
    tau: int
    seed: int


class StudyGroup(NamedTuple):
    setting: str
    dataset: str
    method: str

    @property
    def name(self) -> str:
        return f"{self.setting}__{self.dataset}__{self.method}"


def validate(cfg: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate against the study schema, filling in its defaults; checks it cannot express."""
    from persafl.sweep import fill_defaults

    try:
        fill_defaults(cfg, schema_path, "study config")
    except ValueError as err:
        raise StudyError(str(err)) from None
    for name, setting in cfg["settings"].items():
        if setting["schedule"]["model"] == "barrier" and setting["bounds"] != [0]:
            raise StudyError(
                f"study config key 'settings.{name}.bounds': got {setting['bounds']}, a barrier "
                "setting has no staleness: expected [0]"
            )
        unknown = sorted(set(setting.get("methods", [])) - set(cfg["methods"]))
        if unknown:
            raise StudyError(
                f"study config key 'settings.{name}.methods': {unknown} not in the study's "
                f"methods {cfg['methods']}"
            )
    chosen = cfg["figures"].get("bounds_setting")
    if chosen is not None and chosen not in cfg["settings"]:
        raise StudyError(
            f"study config key 'figures.bounds_setting': got {chosen!r}, expected one of "
            f"{sorted(cfg['settings'])}"
        )
    return cfg


def load_study(path: str | Path) -> dict[str, Any]:
    """Read and validate a study config."""
    try:
        cfg = read_yaml(path, "study config")
    except ValueError as err:
        raise StudyError(str(err)) from None
    if not isinstance(cfg, dict):
        raise StudyError(f"{path}: expected a mapping at the top level")
    return validate(cfg)


def partition_name(cfg: Mapping[str, Any], dataset: str) -> str:
    return next(iter(cfg["datasets"][dataset]["partitions"]))


def groups(cfg: Mapping[str, Any]) -> list[StudyGroup]:
    """Every training group: (setting, data set, method), in config order."""
    return [
        StudyGroup(setting, dataset, method)
        for setting, spec in cfg["settings"].items()
        for dataset in cfg["datasets"]
        for method in cfg["methods"]
        if method in spec.get("methods", cfg["methods"])
    ]


def group_runs(cfg: Mapping[str, Any], group: StudyGroup) -> list[StudyRun]:
    """The runs of a group: every bound of its setting, then every seed."""
    part = partition_name(cfg, group.dataset)
    return [
        StudyRun(group.setting, group.dataset, part, group.method, int(tau), int(seed))
        for tau in cfg["settings"][group.setting]["bounds"]
        for seed in cfg["seeds"]
    ]


def all_runs(cfg: Mapping[str, Any]) -> list[StudyRun]:
    return [run for group in groups(cfg) for run in group_runs(cfg, group)]


def run_dir(run: StudyRun, root: str = RUNS) -> str:
    return (
        f"{root}/setting~{run.setting}/dataset~{run.dataset}/partition~{run.partition}"
        f"/method~{run.method}/tau~{run.tau}/seed~{run.seed}"
    )


def adapted_server_lr(server_lr: float, tau: int, power: float) -> float:
    """``server_lr * (1 + tau) ** -power`` (six significant digits: it is a config value)."""
    return float(f"{server_lr * (1.0 + tau) ** -power:.6g}")


def run_config(cfg: Mapping[str, Any], run: StudyRun) -> dict[str, Any]:
    """The run config of one study run (docs/design.md "Run config")."""
    ds = cfg["datasets"][run.dataset]
    setting = cfg["settings"][run.setting]
    part = ds["partitions"][run.partition]
    hp = {**ds["hp"], **(ds["method_hp"].get(run.method) or {}), **setting["hp"]}
    if setting["server_lr_power"]:
        hp["server_lr"] = adapted_server_lr(
            float(hp.get("server_lr", 1.0)), run.tau, setting["server_lr_power"]
        )
    updates = max(1, round(ds["num_updates"] * setting["num_updates_factor"]))
    schedule = {**copy.deepcopy(setting["schedule"]), "staleness_bound": run.tau,
                "num_updates": updates}
    return {
        "seed": run.seed,
        "dataset": {"name": run.dataset, "root": cfg["data_root"], "params": dict(ds["params"])},
        "partition": {
            "scheme": part["scheme"],
            "num_clients": part["num_clients"],
            "test_fraction": part.get("test_fraction", 0.25),
            "params": dict(part.get("params") or {}),
        },
        "model": copy.deepcopy(ds["model"]),
        "method": {"name": run.method, "hp": hp},
        "schedule": schedule,
        "eval": {"every": setting.get("eval_every", ds["eval_every"])},
        "backend": cfg["backend"],
        "device": cfg["device"],
        "threads": cfg["threads"],
    }


def find_group(cfg: Mapping[str, Any], name: str) -> StudyGroup:
    for group in groups(cfg):
        if group.name == name:
            return group
    raise StudyError(f"--group {name!r}: no such group; `list` shows them")


def train_group(cfg: Mapping[str, Any], group: StudyGroup, root: str = RUNS) -> int:
    """Write each run's run.yaml and train the group with ``persafl.train`` (one process)."""
    import yaml

    from persafl import train

    argv: list[str] = []
    for run in group_runs(cfg, group):
        out = Path(run_dir(run, root))
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.yaml").write_text(yaml.safe_dump(run_config(cfg, run), sort_keys=True))
        argv += ["--config", str(out / "run.yaml"), "--out", str(out)]
    return train.main([*argv, "--no-progress"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persafl.timestudy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "train", "tables", "run-configs"])
    parser.add_argument("--study", type=Path, default=Path("config/staleness.yaml"))
    parser.add_argument("--group", help="train: the group to train (see list)")
    parser.add_argument("--runs", default=RUNS, help="folder of the study's runs")
    parser.add_argument("--out-dir", type=Path, help="tables: where to write them")
    args = parser.parse_args(argv)
    try:
        cfg = load_study(args.study)
        if args.command == "list":
            for group in groups(cfg):
                print(group.name, len(group_runs(cfg, group)))
            return 0
        if args.command == "run-configs":
            print(json.dumps({run_dir(r, args.runs): run_config(cfg, r) for r in all_runs(cfg)},
                             sort_keys=True, indent=1))
            return 0
        if args.command == "train":
            if not args.group:
                raise StudyError("train: give --group (see `list`)")
            return train_group(cfg, find_group(cfg, args.group), args.runs)
        from persafl.timetables import write_tables

        if args.out_dir is None:
            raise StudyError("tables: give --out-dir")
        write_tables(cfg, args.runs, args.out_dir)
        return 0
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
