"""The personalization regime study (issue 14): per-client outcomes across train-set sizes.

A regime config (config/regime.yaml) trains every method on label-skewed partitions whose
clients' TRAIN splits are capped at a few sizes (``max_train_samples``). This module turns its
runs into two tables (workflow/rules/regime.smk):

- ``clients.csv``: one row per (dataset, skew, cap, seed, client): ``n_train``, ``n_test`` and
  the client's final test accuracy under every method and baseline: ``local`` (its own model),
  ``afl`` (A-FL's global model), ``afl_finetune`` (FedAvg + fine-tuning), ``afl_masked`` (the
  label-masked global model), ``majority`` (the client's most common train label), and each
  personalized method's personalized model (``persafl_*``). The baselines' definitions are in
  :mod:`persafl.baselines` and :mod:`persafl.engine.evaluate`.
- ``summary.csv``: per (dataset, skew, cap, method): the client-averaged accuracy, mean and
  std over seeds and a 95 % t-interval over seeds; the **win rate**: per seed, the share of
  clients whose accuracy under the method exceeds max(local, afl) *of that same client*,
  averaged over seeds; and the paired per-client difference ``acc - max(local, afl)``, averaged
  over clients per seed, with its 95 % t-interval over seeds. Both are computed client by
  client, never from the means (a method can beat both means and still lose on most clients).
- ``final.csv``: one row per run (dataset, skew, cap, method, seed, ``status``, ``git_commit``:
  the code that trained it, from its summary.json), so the manifest's ``run_commits``
  (:mod:`persafl.provenance`) names the regime study's code too.

CLI::

    python -m persafl.regime clients --runs RUN/summary.json ... --partitions JSON \
        --out clients.csv [--runs-out final.csv]
    python -m persafl.regime summary --clients clients.csv --out-dir DIR   # summary.csv, winrate.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persafl.io import atomic_write_text

BASELINES = ("local", "afl", "afl_finetune", "afl_masked", "majority")
# the two models every personalized client must beat, per client
REFERENCES = ("local", "afl")
CLIENT_KEYS = ("dataset", "skew", "cap", "seed", "client")
ALL = "all"  # the cap label of an uncapped partition
T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}  # Student t quantiles (0.975) by degrees of freedom


class RegimeError(ValueError):
    """A regime table or config that cannot be used; the message names it."""


# ---- the config ----------------------------------------------------------------------------


def skew_label(part: Mapping[str, Any]) -> str:
    """``pathological-2``, ``dirichlet-0.1``, ...: the label skew of a partition config."""
    params = part.get("params") or {}
    if part["scheme"] == "pathological":
        return f"pathological-{params['classes_per_client']}"
    if part["scheme"] == "dirichlet":
        return f"dirichlet-{params['dirichlet_alpha']:g}"
    return str(part["scheme"])


def skew_order(skew: str) -> tuple[int, float, str]:
    """Pathological first, then Dirichlet by increasing alpha (more skewed first)."""
    scheme, _, value = skew.partition("-")
    rank = {"pathological": 0, "dirichlet": 1}.get(scheme, 2)
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    return rank, number, skew


def cap_label(part: Mapping[str, Any]) -> str:
    cap = part.get("max_train_samples")
    return ALL if cap is None else str(int(cap))


def partition_labels(cfg: Mapping[str, Any], dataset: str) -> dict[str, dict[str, str]]:
    """``{partition name: {"skew": ..., "cap": ...}}`` of one data set of a regime config."""
    parts = cfg["datasets"][dataset]["partitions"]
    return {name: {"skew": skew_label(p), "cap": cap_label(p)} for name, p in parts.items()}


def check_regime(cfg: Mapping[str, Any]) -> None:
    """The study's bound must be swept; two partitions may not share a (skew, cap)."""
    tau = cfg["regime"]["tau"]
    if tau not in cfg["staleness_bounds"]:
        raise RegimeError(
            f"sweep config key 'regime.tau': got {tau}, expected one of staleness_bounds "
            f"{cfg['staleness_bounds']}"
        )
    for dataset, ds in cfg["datasets"].items():
        if not ds.get("enabled", True):
            continue
        seen: dict[tuple[str, str], str] = {}
        for name, labels in partition_labels(cfg, dataset).items():
            key = (labels["skew"], labels["cap"])
            if key in seen:
                raise RegimeError(
                    f"sweep config: datasets.{dataset}.partitions {seen[key]} and {name} are "
                    f"both skew {key[0]} with cap {key[1]}; the regime tables need one of each"
                )
            seen[key] = name


# ---- tables --------------------------------------------------------------------------------


def client_rows(identity: Mapping[str, Any], labels: Mapping[str, str], clients: pd.DataFrame):
    """Long rows (keys, ``column``, ``acc``) of one run's clients.csv for the clients table."""
    method = identity["method"]
    base = {"dataset": identity["dataset"], **labels, "seed": int(identity["seed"])}
    columns = {"personal_acc": method}
    if method == "afl":
        columns = {
            "global_acc": "afl",
            "finetune_acc": "afl_finetune",
            "masked_acc": "afl_masked",
            "majority_acc": "majority",
        }
    for row in clients.itertuples(index=False):
        for source, column in columns.items():
            yield {
                **base,
                "client": int(row.client),
                "n_train": int(row.n_train),
                "n_test": int(row.n_test),
                "column": column,
                "acc": float(getattr(row, source)),
            }


def clients_table(long: pd.DataFrame) -> pd.DataFrame:
    """Wide per-client table (one row per dataset, skew, cap, seed, client)."""
    if long.empty:
        raise RegimeError("no finished runs to tabulate")
    keys = [*CLIENT_KEYS, "n_train", "n_test"]
    indexed = long.set_index([*keys, "column"])["acc"]
    if not indexed.index.is_unique:
        raise RegimeError("two runs give the same client's accuracy: duplicate run directories?")
    wide = indexed.unstack("column").reset_index()
    wide.columns.name = None
    methods = [c for c in wide.columns if c not in keys]
    order = [c for c in BASELINES if c in methods] + sorted(
        c for c in methods if c not in BASELINES
    )
    wide = wide[[*keys, *order]]
    wide["cap_sort"] = wide["cap"].map(_cap_value)
    wide["skew_sort"] = wide["skew"].map(skew_order)
    wide = wide.sort_values(["dataset", "skew_sort", "cap_sort", "seed", "client"])
    wide = wide.drop(columns=["cap_sort", "skew_sort"])
    return wide.reset_index(drop=True)


def _cap_value(cap: str) -> float:
    return math.inf if cap == ALL else float(cap)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % t-interval of the mean of ``values`` (NaN with fewer than two)."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    half = T_975.get(len(values) - 1, 1.96) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def per_seed_outcomes(clients: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per (dataset, skew, cap, seed): mean accuracy, win rate and mean paired difference of
    ``method`` against max(local, afl), each computed client by client first."""
    best = clients[list(REFERENCES)].max(axis=1, skipna=False)
    frame = clients[["dataset", "skew", "cap", "seed", "n_train"]].copy()
    frame["acc"] = clients[method]
    frame["win"] = (
        (clients[method] > best).astype(float).where(clients[method].notna() & best.notna())
    )
    frame["diff"] = clients[method] - best
    return frame.groupby(["dataset", "skew", "cap", "seed"], sort=False).mean().reset_index()


def summary_table(clients: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, skew, cap, method): accuracy over seeds, win rate, paired difference."""
    methods = [c for c in clients.columns if c not in (*CLIENT_KEYS, "n_train", "n_test")]
    rows = []
    for method in methods:
        seeds = per_seed_outcomes(clients, method)
        for (dataset, skew, cap), group in seeds.groupby(["dataset", "skew", "cap"], sort=False):
            acc, diff = group["acc"].to_numpy(), group["diff"].to_numpy()
            reference = method in REFERENCES
            rows.append(
                {
                    "dataset": dataset,
                    "skew": skew,
                    "cap": cap,
                    "n_train_mean": float(group["n_train"].mean()),
                    "method": method,
                    "seeds": int(np.isfinite(acc).sum()),
                    "acc_mean": float(np.nanmean(acc)) if np.isfinite(acc).any() else math.nan,
                    "acc_std": float(np.nanstd(acc, ddof=1))
                    if np.isfinite(acc).sum() > 1
                    else math.nan,
                    "acc_lo": t_interval(acc)[0],
                    "acc_hi": t_interval(acc)[1],
                    "win_rate": math.nan if reference else float(group["win"].mean()),
                    "diff_mean": math.nan if reference else float(np.nanmean(diff)),
                    "diff_lo": math.nan if reference else t_interval(diff)[0],
                    "diff_hi": math.nan if reference else t_interval(diff)[1],
                }
            )
    table = pd.DataFrame(rows)
    table["cap_sort"] = table["cap"].map(_cap_value)
    table["skew_sort"] = table["skew"].map(skew_order)
    rank = {m: i for i, m in enumerate([*BASELINES, *sorted(set(methods) - set(BASELINES))])}
    table["method_sort"] = table["method"].map(rank)
    table = table.sort_values(["dataset", "skew_sort", "cap_sort", "method_sort"])
    return table.drop(columns=["cap_sort", "skew_sort", "method_sort"]).reset_index(drop=True)


def winrate_markdown(summary: pd.DataFrame) -> str:
    """Win rate (%) and paired difference (points, 95 % CI over seeds) per cap and method."""
    from persafl.style import method_label

    labels = {"afl_finetune": "FedAvg + FT", "afl_masked": "Label-masked global"}
    candidates = [m for m in summary["method"].unique() if m not in REFERENCES and m != "majority"]
    lines = []
    for (dataset, skew), block in summary.groupby(["dataset", "skew"], sort=False):
        lines += [
            f"### {dataset}, {skew}",
            "",
            "Win rate: share of clients whose accuracy exceeds max(local, A-FL global) of "
            "the same client (mean over seeds); in brackets the paired per-client "
            "difference to that maximum, points, with its 95 % t-interval over seeds.",
            "",
        ]
        names = [labels.get(m, method_label(m)) for m in candidates]
        lines.append("| cap (train/client) | best of local, A-FL (%) | " + " | ".join(names) + " |")
        lines.append("|---|---:|" + "---:|" * len(names))
        for cap, rows in block.groupby("cap", sort=False):
            by = rows.set_index("method")
            best = max(by.loc[r, "acc_mean"] for r in REFERENCES if r in by.index)
            cells = []
            for m in candidates:
                if m not in by.index or not np.isfinite(by.loc[m, "win_rate"]):
                    cells.append("-")
                    continue
                r = by.loc[m]
                cells.append(
                    f"{100 * r.win_rate:.0f} % ({100 * r.diff_mean:+.1f} "
                    f"[{100 * r.diff_lo:+.1f}, {100 * r.diff_hi:+.1f}])"
                )
            n = f"{cap} ({rows['n_train_mean'].iloc[0]:.0f})"
            lines.append(f"| {n} | {100 * best:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---- CLI -----------------------------------------------------------------------------------


def load_clients(runs: Sequence[str | Path], partitions: Mapping[str, Mapping[str, str]]):
    """The long per-client rows of finished runs (checked as persafl.aggregate checks them)."""
    from persafl.aggregate import parse_identity
    from persafl.aggregate_cli import load_run, resolve_run_dir

    rows = []
    for path in runs:
        run_dir = resolve_run_dir(path)
        identity = parse_identity(run_dir)
        run = load_run(run_dir)  # None: a status that does not count
        if run is None or run.summary.get("status") == "diverged":
            continue  # no result: its clients' accuracies stay NaN (not its last values)
        labels = partitions.get(identity["partition"])
        if labels is None:
            raise RegimeError(f"{run_dir}: partition {identity['partition']!r} not in --partitions")
        rows += list(client_rows(identity, labels, pd.read_csv(run_dir / "clients.csv")))
    return pd.DataFrame(rows)


def runs_table(runs: Sequence[str | Path], partitions: Mapping[str, Mapping[str, str]]):
    """One row per run: its keys, ``status`` (a diverged run is listed, not tabulated) and
    ``git_commit`` (the code that trained it; ``unknown`` when its summary lacks it)."""
    from persafl.aggregate import parse_identity
    from persafl.aggregate_cli import resolve_run_dir

    rows = []
    for path in runs:
        run_dir = resolve_run_dir(path)
        identity = parse_identity(run_dir)
        labels = partitions.get(identity["partition"])
        if labels is None:
            raise RegimeError(f"{run_dir}: partition {identity['partition']!r} not in --partitions")
        summary = json.loads((run_dir / "summary.json").read_text())
        rows.append({"dataset": identity["dataset"], **labels, "method": identity["method"],
                     "seed": int(identity["seed"]), "status": summary.get("status", "unknown"),
                     "git_commit": str(summary.get("git_commit") or "unknown")})
    table = pd.DataFrame(rows, columns=["dataset", "skew", "cap", "method", "seed", "status",
                                        "git_commit"])
    return table.sort_values(["dataset", "skew", "cap", "method", "seed"]).reset_index(drop=True)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m persafl.regime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    clients = sub.add_parser("clients", help="per-client accuracies of a regime study's runs")
    clients.add_argument("--runs", nargs="+", required=True, help="run files or directories")
    clients.add_argument(
        "--partitions",
        type=json.loads,
        required=True,
        help='JSON {partition: {"skew": S, "cap": C}}',
    )
    clients.add_argument("--out", type=Path, required=True)
    clients.add_argument("--runs-out", type=Path, help="also write the per-run table here")
    summary = sub.add_parser("summary", help="accuracy, win rate and paired differences")
    summary.add_argument("--clients", type=Path, required=True)
    summary.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    from persafl.aggregate import AggregationError

    try:
        if args.command == "clients":
            runs = list(
                dict.fromkeys(str(Path(r).parent if Path(r).suffix else r) for r in args.runs)
            )
            table = clients_table(load_clients(runs, args.partitions))
            if args.runs_out is not None:  # first: clients.csv last marks the step complete
                _write_csv(runs_table(runs, args.partitions), args.runs_out)
            _write_csv(table, args.out)
            print(f"wrote {args.out}: {len(table)} client rows")
        else:
            table = summary_table(pd.read_csv(args.clients, dtype={"cap": str}))
            _write_csv(table, args.out_dir / "summary.csv")
            atomic_write_text(args.out_dir / "winrate.md", winrate_markdown(table))
            print(f"wrote {args.out_dir}/summary.csv and winrate.md: {len(table)} rows")
    except (RegimeError, AggregationError, OSError) as err:
        print(f"persafl.regime: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
