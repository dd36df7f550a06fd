"""Aggregate finished training runs into tidy tables and the paper's final-accuracy table.

Usage (the CLI, in :mod:`persafl.aggregate_cli` with the reading of run directories, is what
the Snakemake aggregate rules call)::

    python -m persafl.aggregate --runs RUN [RUN ...] [--runs-file LIST] \
        [--partitions NAME=PARTITION_COUNTS_CSV ...] --out-dir results/tables

``RUN`` is a run directory ``.../dataset~D/partition~P/method~M/tau~T/seed~S/`` or a file
inside it (e.g. its ``summary.json``, so a rule can pass its inputs as they are). ``LIST`` is a
text file with one such path per line (blank lines and ``#`` comments ignored). Every run must
be complete: a directory without ``summary.json`` is an error naming it. Runs whose status is
``completed`` or ``diverged`` count; any other status is skipped with a warning.

Written into ``--out-dir``:

- ``curves.csv``: one row per (run, evaluation): identity (dataset, partition, method, tau,
  seed), ``update, time, grad_evals``, every metrics.csv column, ``status`` (of the run) and
  ``headline_acc``.
- ``final.csv``: one row per run: identity, ``status``, the last evaluation's metrics
  (including cumulative ``dropped`` and ``staleness_*``), ``headline_acc``, ``wait_time`` and
  ``wall_seconds`` from summary.json, ``best_headline_acc`` / ``best_update`` (the maximum of
  the headline accuracy over the run's evaluations and where it was reached: pFedMe's reported
  statistic, which selects on the test set; ``headline_acc`` is the final one) and ``adapt_on``
  (the personalized evaluation's adaptation data: ``test`` marks pFedMe's leaky protocol) and
  ``hp`` (``local_lr=0.01, server_lr=1``: the run's step sizes and ME/MAML settings, tuned or
  the config's; describe_hp) and ``git_commit`` (the code that trained it, from summary.json;
  ``+dirty`` marks a modified tree: persafl.provenance).
- ``table_final.{csv,md,tex}``: one row per (dataset, partition, method, tau) for every
  method except ``local``: mean and std over seeds (sample std, ddof=1; empty for one seed)
  of the headline accuracy, of the global accuracy, and beside them the local baseline and the
  majority-class baseline; ``n_seeds`` and ``n_diverged``; ``best_acc_mean/std`` (best over
  evaluations, labelled "Best" beside the final "Accuracy"). A row whose runs adapted on TEST
  data has ``adapt_on`` ``test`` and "[adapt on TEST: leaky]" in its ``method_label``.
  ``hp``: its runs' hyperparameters (empty for tables aggregated before the column existed).
  The .md/.tex show percent; the .md lists each row's hyperparameters under the table.
- With ``--tables DIR ...`` instead of runs: the ``curves.csv`` and ``final.csv`` of each
  DIR (written by an earlier aggregation of disjoint runs, e.g. one per (dataset, partition,
  method, tau)) are merged, and everything above is written as if from their runs (the
  workflow aggregates per such cell, so no job lists every run). ``--runs-tables-only``
  writes only ``curves.csv`` and ``final.csv``.
- ``partition_NAME.csv`` for each ``--partitions NAME=PATH``: the class counts (columns
  ``client, class_0, ..., class_{C-1}``) checked and copied, for the heat-map figure. Given
  ``--partitions`` and no runs, only these are written (the heat map need not wait for
  training).

Definitions. Headline accuracy: ``personal_acc_ca`` (client-averaged personalized test accuracy)
for every method except ``afl``, whose headline is ``global_acc_ca``. Local baseline: the
headline accuracy of method ``local`` on the same dataset and partition, from its runs at the
same tau when there are any, else from all its runs (per seed averaged over tau). Majority
baseline: ``majority_acc_ca`` of the row's own runs. Diverged runs are left out of the
accuracy means and stds (their last finite values are no result; ``n_diverged`` says how many
of ``n_seeds`` diverged), and so are non-finite values.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persafl.style import method_label, method_sort_key

# Appended to the method label of every table row whose runs adapted on TEST data.
LEAKY_LABEL = " [adapt on TEST: leaky]"
IDENTITY_KEYS: tuple[str, ...] = ("dataset", "partition", "method", "tau", "seed")
INTEGER_KEYS: frozenset[str] = frozenset({"tau", "seed"})
METRIC_COLUMNS: tuple[str, ...] = (
    "update", "time", "grad_evals", "staleness_mean", "staleness_max", "dropped",
    "global_acc_ca", "global_acc_sw", "global_loss_ca", "personal_acc_ca", "personal_acc_sw",
    "majority_acc_ca", "majority_acc_sw",
)  # fmt: skip
COUNTED_STATUSES: frozenset[str] = frozenset({"completed", "diverged"})
GROUP_KEYS: list[str] = ["dataset", "partition", "method", "tau"]


class AggregationError(Exception):
    """A run or partition file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class RunResult:
    """One finished run: identity from its path, its metrics rows and its summary.json."""

    run_dir: Path
    identity: dict[str, Any]
    metrics: pd.DataFrame
    summary: dict[str, Any]


# ----------------------------------------------------------------------------- pure functions


def parse_identity(run_dir: Path) -> dict[str, Any]:
    """Run identity from the ``key~value`` parts of a run directory path (tau, seed as int)."""
    found = dict(part.split("~", 1) for part in Path(run_dir).parts if "~" in part)
    missing = [k for k in IDENTITY_KEYS if k not in found]
    if missing:
        raise AggregationError(
            f"run directory {run_dir}: path lacks {', '.join(k + '~...' for k in missing)} "
            f"(expected .../dataset~D/partition~P/method~M/tau~T/seed~S)"
        )
    identity: dict[str, Any] = {}
    for key in IDENTITY_KEYS:
        value = found[key]
        if key in INTEGER_KEYS:
            if not re.fullmatch(r"\d+", value):
                raise AggregationError(f"run directory {run_dir}: {key}~{value} is not an integer")
            identity[key] = int(value)
        else:
            identity[key] = value
    return identity


def validate_metrics(df: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """Check a metrics table has every pinned column, numeric, and at least one row."""
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise AggregationError(f"{source}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise AggregationError(f"{source}: no evaluation rows")
    out = df.copy()
    for column in METRIC_COLUMNS:
        try:
            out[column] = pd.to_numeric(out[column])
        except (ValueError, TypeError) as err:
            raise AggregationError(f"{source}: column {column} is not numeric ({err})") from err
    return out


def headline_column(method: str) -> str:
    """The accuracy column a method is judged by: global for afl, personalized otherwise."""
    return "global_acc_ca" if method == "afl" else "personal_acc_ca"


def _with_headline(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    uses_global = out["method"].map(headline_column) == "global_acc_ca"
    out["headline_acc"] = np.where(uses_global, out["global_acc_ca"], out["personal_acc_ca"])
    return out


def _sort_runs(df: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    order = df["method"].map(method_sort_key)
    keyed = df.assign(_method_order=order.map(lambda k: k[0]))
    by = ["dataset", "partition", "_method_order", "method", "tau", "seed", *extra]
    return keyed.sort_values(by, kind="mergesort").drop(columns="_method_order")


def curves_table(runs: Sequence[RunResult]) -> pd.DataFrame:
    """Tidy table of every evaluation of every run (identity columns first)."""
    frames = []
    for run in runs:
        metrics = run.metrics.reset_index(drop=True)
        identity = pd.DataFrame({k: [v] * len(metrics) for k, v in run.identity.items()})
        status = pd.DataFrame({"status": [run.summary["status"]] * len(metrics)})
        frames.append(pd.concat([identity, metrics, status], axis=1))
    if not frames:
        raise AggregationError("no counted runs to aggregate (all missing or skipped)")
    curves = _with_headline(pd.concat(frames, ignore_index=True))
    return _sort_runs(curves, extra=["update"]).reset_index(drop=True)


# The hyperparameters a table row states (those the tuning stage may set), in this order.
HP_SHOWN = (
    "local_lr", "server_lr", "personal_lr", "moreau_lambda", "inner_steps", "eval_adapt_steps",
)  # fmt: skip


def describe_hp(hp: Mapping[str, Any]) -> str:
    """``local_lr=0.01, server_lr=1``: the run's values of HP_SHOWN that its config sets."""
    return ", ".join(f"{k}={hp[k]:g}" for k in HP_SHOWN if isinstance(hp.get(k), (int, float)))


def _text(value: Any) -> str:
    """A CSV cell as text: an empty cell (read back as NaN) is ''."""
    return value if isinstance(value, str) else ""


def final_table(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: identity, status, metrics of the last evaluation, headline accuracy."""
    frames = []
    for run in runs:
        last = run.metrics.sort_values("update", kind="mergesort").iloc[[-1]]
        trace = run.summary.get("trace") or {}
        head = {**run.identity, "status": run.summary["status"]}
        curve = run.metrics[headline_column(str(run.identity["method"]))].astype(float)
        finite = curve[np.isfinite(curve)]
        hp = ((run.summary.get("config") or {}).get("method") or {}).get("hp") or {}
        tail = {
            "wait_time": float(trace.get("wait_time", math.nan)),
            "wall_seconds": float(run.summary.get("wall_seconds", math.nan)),
            "best_headline_acc": float(finite.max()) if len(finite) else math.nan,
            "best_update": int(run.metrics["update"][finite.idxmax()]) if len(finite) else -1,
            "adapt_on": str(hp.get("adapt_on", "train")),
            "hp": describe_hp(hp),
            "git_commit": str(run.summary.get("git_commit") or "unknown"),
        }
        frames.append(
            pd.concat(
                [pd.DataFrame([head]), last.reset_index(drop=True), pd.DataFrame([tail])], axis=1
            )
        )
    if not frames:
        raise AggregationError("no counted runs to aggregate (all missing or skipped)")
    final = _with_headline(pd.concat(frames, ignore_index=True))
    return _sort_runs(final).reset_index(drop=True)


def diverged_runs(final: pd.DataFrame) -> list[str]:
    """``dataset~D/partition~P/method~M/tau~T/seed~S`` of every diverged run in ``final``."""
    rows = final[final["status"] == "diverged"]
    return ["/".join(f"{k}~{row[k]}" for k in IDENTITY_KEYS) for _, row in rows.iterrows()]


def mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for one value) of the finite values; NaN if none."""
    finite = values[np.isfinite(values.astype(float))]
    if finite.empty:
        return math.nan, math.nan
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return float(finite.mean()), std


def local_baseline(
    final: pd.DataFrame, dataset: str, partition: str, tau: int | None = None
) -> pd.Series:
    """Headline accuracies of method ``local`` for one dataset/partition, one value per run.

    Its runs at ``tau`` when there are any; otherwise (or with ``tau=None``) all its runs,
    averaged per seed over tau. Empty when there is no local run.
    """
    local = final[final["method"] == "local"]
    same = local[(local["dataset"] == dataset) & (local["partition"] == partition)]
    at_tau = same[same["tau"] == tau] if tau is not None else same.iloc[:0]
    if not at_tau.empty:
        return at_tau["headline_acc"]
    return same.groupby("seed")["headline_acc"].mean()


def merge_tables(frames: Sequence[pd.DataFrame], kind: str) -> pd.DataFrame:
    """Concatenate partial ``curves`` or ``final`` tables (of disjoint sets of runs) into the
    table :func:`curves_table` / :func:`final_table` would give for all their runs at once."""
    if not frames:
        raise AggregationError(f"no {kind} tables to merge")
    merged = pd.concat(frames, ignore_index=True)
    extra = ["update"] if kind == "curves" else []
    if merged.duplicated([*IDENTITY_KEYS, *extra]).any():
        raise AggregationError(f"the {kind} tables to merge hold one run twice")
    return _sort_runs(merged, extra=extra).reset_index(drop=True)


def summary_table(final: pd.DataFrame) -> pd.DataFrame:
    """The table_final rows: per (dataset, partition, method, tau) mean/std over seeds.

    Accuracies stay fractions in [0, 1]; see the module docstring for the definitions.
    """
    rows = []
    finished = final[final["status"] != "diverged"]
    for (dataset, partition, method, tau), group in final[final["method"] != "local"].groupby(
        GROUP_KEYS, sort=False
    ):
        kept = group[group["status"] != "diverged"]  # a diverged run's last values are no result
        acc = mean_std(kept["headline_acc"])
        glob = mean_std(kept["global_acc_ca"])
        base = local_baseline(finished, dataset, partition, int(tau))
        loc = mean_std(base)
        maj = mean_std(group["majority_acc_ca"])
        best = (
            mean_std(kept["best_headline_acc"])
            if "best_headline_acc" in kept
            else (math.nan, math.nan)
        )
        leaky = "adapt_on" in group and bool((group["adapt_on"] == "test").any())
        label = method_label(method) + (LEAKY_LABEL if leaky else "")
        rows.append(
            {
                "dataset": dataset,
                "partition": partition,
                "method": method,
                "method_label": label,
                "tau": int(tau),
                "n_seeds": len(group),
                "n_diverged": int((group["status"] == "diverged").sum()),
                "acc_mean": acc[0],
                "acc_std": acc[1],
                "global_acc_mean": glob[0],
                "global_acc_std": glob[1],
                "local_acc_mean": loc[0],
                "local_acc_std": loc[1],
                "local_n_seeds": len(base),
                "majority_acc_mean": maj[0],
                "majority_acc_std": maj[1],
                "best_acc_mean": best[0],
                "best_acc_std": best[1],
                "adapt_on": "test" if leaky else "train",
                # the runs' hyperparameters (tuned or the config's: the manifest says which);
                # seeds of one row share them, so more than one value is shown joined by " | "
                "hp": " | ".join(dict.fromkeys(group["hp"].map(_text)))
                if "hp" in group
                else "",
            }
        )
    columns = [
        "dataset", "partition", "method", "method_label", "tau", "n_seeds", "n_diverged",
        "acc_mean", "acc_std", "global_acc_mean", "global_acc_std", "local_acc_mean",
        "local_acc_std", "local_n_seeds", "majority_acc_mean", "majority_acc_std",
        "best_acc_mean", "best_acc_std", "adapt_on", "hp",
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table
    return _sort_runs(table.assign(seed=0)).drop(columns="seed").reset_index(drop=True)


def validate_partition_counts(df: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """Check a clients x classes count table (``client, class_0, ...``); rows sorted by client."""
    if "client" not in df.columns:
        raise AggregationError(f"{source}: missing column client")
    class_columns = [c for c in df.columns if c != "client"]
    expected = [f"class_{k}" for k in range(len(class_columns))]
    if not class_columns or sorted(class_columns) != sorted(expected):
        raise AggregationError(
            f"{source}: class columns must be class_0..class_{{C-1}}, got {class_columns}"
        )
    counts = df[["client", *expected]]
    values = counts.to_numpy()
    if not np.issubdtype(values.dtype, np.integer) or (values < 0).any():
        raise AggregationError(f"{source}: counts must be non-negative integers")
    return counts.sort_values("client", kind="mergesort").reset_index(drop=True)


if __name__ == "__main__":  # `python -m persafl.aggregate ...`: the CLI is persafl.aggregate_cli
    from persafl.aggregate_cli import main

    sys.exit(main())
