"""The staleness and time study's tables, from its runs (:mod:`persafl.timestudy`).

Written into ``--out-dir`` (``results/tables/staleness/``, committed):

- ``curves.csv``: one row per (run, evaluation): ``setting``, the run identity, the setting's
  schedule (``model, policy, speed, sync``), ``server_lr``, the three x-axes (``update, time,
  grad_evals_total``) with ``grad_evals``, ``grad_evals_dropped``, ``dropped``,
  ``staleness_mean/p95/max`` and the accuracies (``headline_acc``: personalized, A-FL global).
- ``final.csv``: one row per run: the last evaluation, ``applied_jobs``, ``wait_time``,
  ``staleness_p95`` of the whole run, ``wall_seconds`` and ``git_commit`` (the code behind the
  run).
- ``table_bounds.{csv,md}``: per (data set, setting, method, bound), over seeds: achieved
  staleness (mean, p95, max), drops and the share of finished jobs dropped, the idle share of
  client time, and the headline accuracy at three equal budgets: the same number of updates
  (the last), the same virtual time and the same client computation. The equal time of a (data
  set, setting) is the smallest final virtual time over its runs, the equal computation of a
  (data set, setting, method) the smallest final ``grad_evals_total`` over its runs, so every
  run is read inside its own range.
- ``table_time.{csv,md}``: time to a target accuracy, each synchronous setting against every
  asynchronous setting of the same speed distribution and bound, per data set and method. The
  target is ``target_fraction`` x the best seed-mean accuracy of the synchronous setting (its seed-
  mean curve on a grid of ``grid_points`` virtual times); a curve's time to it is the first
  virtual time its seed-mean curve reaches it (linear between grid points,
  :func:`persafl.timeaxis.crossing`); ``ratio`` = async time / sync time (< 1: async faster).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persafl.aggregate import curves_table, final_table, mean_std
from persafl.aggregate_cli import load_runs
from persafl.io import atomic_write_text
from persafl.style import dataset_label, method_label
from persafl.timeaxis import common_grid, crossing, mean_curve, value_at
from persafl.timestudy import StudyGroup, group_runs, groups, run_dir

SETTING_COLUMNS = (
    "setting", "label", "model", "policy", "speed", "sync", "clients_per_round", "server_lr",
)
CURVE_COLUMNS = (
    "update", "time", "grad_evals", "grad_evals_dropped", "grad_evals_total", "dropped",
    "staleness_mean", "staleness_p95", "staleness_max", "headline_acc", "global_acc_ca",
    "personal_acc_ca", "majority_acc_ca", "status",
)  # fmt: skip
IDENTITY = ("dataset", "partition", "method", "tau", "seed")


def _setting_columns(cfg: Mapping[str, Any], name: str, summary: Mapping[str, Any]) -> dict:
    setting = cfg["settings"][name]
    schedule = summary["config"]["schedule"]
    return {
        "setting": name,
        "label": setting["label"],
        "model": schedule["model"],
        "policy": schedule["policy"] if schedule["model"] == "clock" else "",
        "speed": schedule["speed"]["distribution"] if schedule["model"] != "delay" else "",
        "sync": schedule["model"] == "barrier",
        "clients_per_round": int(schedule.get("clients_per_round") or 1),
        "server_lr": float(summary["config"]["method"]["hp"]["server_lr"]),
    }


def study_tables(cfg: Mapping[str, Any], root: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, final) of every run of the study (settings in config order)."""
    curves, finals = [], []
    for group in groups(cfg):
        runs = load_runs([run_dir(r, root) for r in group_runs(cfg, group)])
        c, f = curves_table(runs), final_table(runs)
        extra = {tuple(r.identity[k] for k in IDENTITY): r for r in runs}
        by_run = {key: _setting_columns(cfg, group.setting, run.summary)
                  for key, run in extra.items()}  # server_lr may depend on the bound
        head = pd.DataFrame([by_run[tuple(k)] for k in c[list(IDENTITY)].itertuples(index=False)])
        curves.append(pd.concat([head, c[list(IDENTITY) + list(CURVE_COLUMNS)]], axis=1))
        rows = []
        for key in f[list(IDENTITY)].itertuples(index=False):
            summary = extra[tuple(key)].summary
            trace = summary["trace"]
            rows.append({
                "applied_jobs": int(trace["jobs_applied"]),
                "num_clients": int(summary["config"]["partition"]["num_clients"]),
                "staleness_p95_run": float(trace["staleness_p95"]),
                "jobs_started": int(trace["jobs_started"]),
            })
        head = pd.DataFrame([by_run[tuple(k)] for k in f[list(IDENTITY)].itertuples(index=False)])
        keep = [*IDENTITY, *CURVE_COLUMNS, "wait_time", "wall_seconds", "best_headline_acc",
                "git_commit"]  # the code behind each run (persafl.provenance)
        finals.append(pd.concat([head, f[keep], pd.DataFrame(rows)], axis=1))
    return pd.concat(curves, ignore_index=True), pd.concat(finals, ignore_index=True)


def bounds_table(curves: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """table_bounds: see the module docstring."""
    rows = []
    ok = final[final["status"] != "diverged"]
    for (dataset, setting), runs in ok.groupby(["dataset", "setting"], sort=False):
        cur = curves[(curves["dataset"] == dataset) & (curves["setting"] == setting)]
        cur = cur[cur["status"] != "diverged"]
        equal_time = float(runs["time"].min())  # the traces do not depend on the method
        for (method, tau), cell in runs.groupby(["method", "tau"], sort=True):
            # a method's job costs its own number of gradients: equal computation per method
            equal_compute = float(runs[runs["method"] == method]["grad_evals_total"].min())
            c = cur[(cur["method"] == method) & (cur["tau"] == tau)]
            clients = cell["applied_jobs"] + cell["dropped"]
            first = cell.iloc[0]
            rows.append({
                "dataset": dataset, "setting": setting, "label": first["label"],
                "model": first["model"], "policy": first["policy"],
                "method": method, "tau": int(tau), "server_lr": first["server_lr"],
                "n_seeds": len(cell),
                "staleness_mean": cell["staleness_mean"].mean(),
                "staleness_p95": cell["staleness_p95"].mean(),
                "staleness_max": int(cell["staleness_max"].max()),
                "dropped": cell["dropped"].mean(),
                "dropped_share": (cell["dropped"] / clients).mean(),
                "final_time": cell["time"].mean(),
                "acc_updates_mean": mean_std(cell["headline_acc"])[0],
                "acc_updates_std": mean_std(cell["headline_acc"])[1],
                "equal_time": equal_time,
                "acc_time_mean": mean_std(value_at(c, "time", "headline_acc", equal_time))[0],
                "acc_time_std": mean_std(value_at(c, "time", "headline_acc", equal_time))[1],
                "equal_compute": equal_compute,
                "acc_compute_mean": mean_std(
                    value_at(c, "grad_evals_total", "headline_acc", equal_compute))[0],
                "acc_compute_std": mean_std(
                    value_at(c, "grad_evals_total", "headline_acc", equal_compute))[1],
                "idle_share": (cell["wait_time"] / (cell["time"] * cell["num_clients"])).mean(),
            })
    return pd.DataFrame(rows)


def time_table(curves: pd.DataFrame, target_fraction: float, points: int) -> pd.DataFrame:
    """table_time: see the module docstring."""
    rows = []
    for (dataset, method), cur in curves.groupby(["dataset", "method"], sort=False):
        cur = cur[cur["status"] != "diverged"]
        synchronous = cur[cur["sync"].astype(bool)]
        for sync_setting, sync in synchronous.groupby("setting", sort=False):
            speed = sync["speed"].iloc[0]
            grid = common_grid(sync, "time", points)
            sync_mean = mean_curve(sync, "time", "headline_acc", grid)
            target = target_fraction * float(sync_mean["mean"].max())
            t_sync = crossing(sync_mean["x"], sync_mean["mean"], target)
            asynchronous = cur[(~cur["sync"].astype(bool)) & (cur["speed"] == speed)]
            for (setting, tau), runs in asynchronous.groupby(["setting", "tau"], sort=False):
                grid = common_grid(runs, "time", points)
                m = mean_curve(runs, "time", "headline_acc", grid)
                t_async = crossing(m["x"], m["mean"], target)
                rows.append({
                    "dataset": dataset, "method": method, "speed": speed,
                    "sync_setting": sync_setting, "sync_label": sync["label"].iloc[0],
                    "setting": setting, "label": runs.iloc[0]["label"], "tau": int(tau),
                    "target_acc": target, "sync_time": t_sync, "async_time": t_async,
                    "ratio": t_async / t_sync if np.isfinite(t_async) else np.nan,
                    "sync_best": float(sync_mean["mean"].max()),
                    "async_best": float(m["mean"].max()),
                    "async_end_time": float(grid[-1]),
                })
    return pd.DataFrame(rows)


def _fmt(value: float, digits: int = 1, scale: float = 1.0) -> str:
    return f"{scale * value:.{digits}f}" if np.isfinite(value) else "–"


def bounds_markdown(table: pd.DataFrame) -> str:
    head = ["Data set", "Setting", "Method", "τ_max", "server_lr", "Staleness mean / p95 / max",
            "Dropped (share)", "Idle share", "Acc. at equal updates (%)",
            "at equal time (%)", "at equal compute (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 8) + "|"]
    for r in table.itertuples(index=False):
        lines.append("| " + " | ".join([
            dataset_label(r.dataset), r.label, method_label(r.method), str(r.tau),
            f"{r.server_lr:.3g}",
            f"{r.staleness_mean:.1f} / {r.staleness_p95:.1f} / {r.staleness_max}",
            f"{r.dropped:.0f} ({100 * r.dropped_share:.0f} %)", f"{100 * r.idle_share:.0f} %",
            f"{_fmt(r.acc_updates_mean, 1, 100)} ± {_fmt(r.acc_updates_std, 1, 100)}",
            f"{_fmt(r.acc_time_mean, 1, 100)} ± {_fmt(r.acc_time_std, 1, 100)}",
            f"{_fmt(r.acc_compute_mean, 1, 100)} ± {_fmt(r.acc_compute_std, 1, 100)}",
        ]) + " |")
    note = ("\nMean over seeds (± std); staleness max: over seeds. Dropped share: of the jobs "
            "that finished (applied + dropped). Idle share: client idle time over clients x "
            "virtual time. Equal updates: the last evaluation; equal time / compute: the "
            "smallest final virtual time over the setting's runs / client gradient evaluations "
            "(incl. dropped work) over the setting's runs of the method, read off each run's "
            "curve (linear between evaluations). "
            "Accuracy: personalized, client-averaged; A-FL: global.\n")
    return "\n".join(lines) + "\n" + note


def time_markdown(table: pd.DataFrame) -> str:
    head = ["Data set", "Method", "Sync protocol", "Async setting", "τ_max", "Target (%)",
            "Sync time", "Async time", "Async / sync"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 5) + "|"]
    for r in table.itertuples(index=False):
        async_time = _fmt(r.async_time) if np.isfinite(r.async_time) else (
            f"not reached by {r.async_end_time:.0f}")
        lines.append("| " + " | ".join([
            dataset_label(r.dataset), method_label(r.method), r.sync_label, r.label, str(r.tau),
            _fmt(r.target_acc, 1, 100), _fmt(r.sync_time), async_time, _fmt(r.ratio, 2),
        ]) + " |")
    note = ("\nTarget: the stated fraction (config/staleness.yaml: target_fraction) of the "
            "best seed-mean accuracy of the synchronous protocol (S clients per round, "
            "sample-weighted average, server_lr 1) it is compared with; the asynchronous "
            "settings run on the same speed distribution. Times in virtual time units (mean job "
            "time 1): the first time the "
            "seed-mean curve reaches the target. Async / sync < 1: asynchronous is faster.\n")
    return "\n".join(lines) + "\n" + note


def write_tables(cfg: Mapping[str, Any], root: str, out_dir: str | Path) -> None:
    """Every table of the study into ``out_dir`` (atomically)."""
    curves, final = study_tables(cfg, root)
    bounds = bounds_table(curves, final)
    times = time_table(curves, cfg["target_fraction"], cfg["grid_points"])
    out = Path(out_dir)
    outputs = {
        "curves.csv": curves.to_csv(index=False),
        "final.csv": final.to_csv(index=False),
        "table_bounds.csv": bounds.to_csv(index=False),
        "table_bounds.md": bounds_markdown(bounds),
        "table_time.csv": times.to_csv(index=False),
        "table_time.md": time_markdown(times),
    }
    for name, text in outputs.items():
        atomic_write_text(out / name, text)


__all__ = ["StudyGroup", "bounds_table", "study_tables", "time_table", "write_tables"]
