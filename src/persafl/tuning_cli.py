"""CLI of the tuning stage (``python -m persafl.tuning_cli``), called by workflow/rules/tuning.smk.

::

    split  --config partition/config.yaml --partition partition.npz --share 0.2 --seed 100 \
           --out view.npz
    select --dataset D --method M --grid JSON --meta JSON --out M.yaml --table M.csv RUN_DIR...
    merge  --out results/tables/tuning_D.csv M1.csv M2.csv ...   # one data set's grids
    table  --out-dir results/tables tuning_D.csv ...             # table_tuning.{csv,md}

The figure of a data set's grids: ``python -m persafl.figures tuning`` (:func:`tuning_figure`).

``split`` writes the tuning view of a partition (persafl.tuning.validation_split) with its stats
JSON beside it. ``select`` reads each tuning run's ``summary.json`` and ``clients.csv`` (final
checkpoint, validation accuracy per client) and writes the selection and the per-point table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from persafl import tuning
from persafl.io import atomic_write_text


def _split(args: argparse.Namespace) -> int:
    from persafl.config import load_run_config
    from persafl.data import load_dataset
    from persafl.partition_io import load_partition, save_partition

    config = load_run_config(args.config)
    data_cfg = config["dataset"]
    labels = load_dataset(data_cfg["name"], data_cfg["root"], **data_cfg["params"]).y.numpy()
    view = tuning.validation_split(load_partition(args.partition), labels, args.share,
                                   args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_partition(view, args.out, labels=labels)
    sizes = sum(len(v) for v in view.test), sum(len(t) for t in view.train)
    print(f"validation: {sizes[0]} samples, fitting: {sizes[1]} -> {args.out}")
    return 0


def run_row(run_dir: Path, method: str) -> dict:
    """One tuning run: its point, seed and client-averaged final validation accuracy."""
    parts = dict(p.split("~", 1) for p in run_dir.parts if "~" in p)
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = float("nan")
    if summary.get("status") == "completed":
        clients = pd.read_csv(run_dir / "clients.csv")
        acc = float(clients[tuning.headline(method)].mean())  # client-averaged
    return {"point": parts["point"], "seed": int(parts["seed"]), "val_acc": acc}


def _select(args: argparse.Namespace) -> int:
    grid = json.loads(args.grid)
    rows = [run_row(Path(d), args.method) for d in args.runs]
    selection, table = tuning.select(grid, rows)
    meta = json.loads(args.meta)
    out = {"dataset": args.dataset, "method": args.method, **selection, **meta,
           "runs": [str(d) for d in args.runs]}
    if not math.isfinite(out["val_acc_mean"]):
        out["val_acc_mean"] = None
    text = "# written by persafl.tuning_cli select: the final runs read `hp`\n"
    atomic_write_text(args.out, text + yaml.safe_dump(out, sort_keys=False))
    frame = pd.DataFrame(table)
    frame.insert(0, "method", args.method)
    frame.insert(0, "dataset", args.dataset)
    frame["edge"] = "; ".join(selection["edge"])
    atomic_write_text(args.table, frame.to_csv(index=False, float_format="%.6g"))
    flag = f"  EDGE OF GRID: {selection['edge']}" if selection["edge"] else ""
    print(f"{args.dataset}/{args.method}: {selection['hp']} "
          f"(validation accuracy {selection['val_acc_mean']:.4f}){flag}")
    return 0


def _value_columns(frame: pd.DataFrame) -> list[str]:
    fixed = {"dataset", "method", "point", "val_acc_mean", "val_acc_std", "n_seeds",
             "n_diverged", "selected", "edge"}
    return [c for c in frame.columns if c not in fixed]


def describe(row: pd.Series, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={row[n]:g}" for n in names if pd.notna(row.get(n)))


def parse_described(text: str) -> dict[str, float]:
    """The inverse of :func:`describe`: ``"local_lr=0.005, personal_lr=0.01"`` (a
    table_tuning ``selected_hp`` cell) -> ``{"local_lr": 0.005, "personal_lr": 0.01}``."""
    pairs = [item.split("=") for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"not a list of name=value: {text!r}")
    return {name.strip(): float(value) for name, value in pairs}


def _merge(args: argparse.Namespace) -> int:
    """One data set's per-method tables into one (the figure's table)."""
    merged = pd.concat([pd.read_csv(p) for p in args.tables], ignore_index=True)
    atomic_write_text(args.out, merged.to_csv(index=False, float_format="%.6g"))
    print(f"wrote {len(merged)} grid points to {args.out}")
    return 0


def _table(args: argparse.Namespace) -> int:
    """The selected point of every tuned (data set, method): table_tuning.{csv,md}."""
    merged = pd.concat([pd.read_csv(p) for p in args.tables], ignore_index=True)
    out_dir = Path(args.out_dir)
    names = _value_columns(merged)
    chosen = merged[merged["selected"].astype(bool)].copy()
    chosen["selected_hp"] = [describe(r, names) for _, r in chosen.iterrows()]
    chosen["grid_points"] = [int(((merged.dataset == r.dataset) & (merged.method == r.method))
                                 .sum()) for r in chosen.itertuples()]
    chosen["edge"] = chosen["edge"].fillna("")
    columns = ["dataset", "method", "selected_hp", "val_acc_mean", "val_acc_std",
               "grid_points", "edge"]
    table = chosen[columns]
    atomic_write_text(out_dir / "table_tuning.csv", table.to_csv(index=False,
                                                                  float_format="%.6g"))
    lines = ["Tuned hyperparameters: selected on a validation split of the clients' training "
             "data (client-averaged accuracy at the final checkpoint, mean +- std over the "
             "tuning seeds). A config with this tuning section trains its final runs with "
             "these values instead of its hp / method_hp (the base papers' settings); a table "
             "of final runs is tuned only if its config tunes (paper_figures/manifest.json "
             "names it).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        acc = f"{100 * r.val_acc_mean:.1f} +- {100 * r.val_acc_std:.1f}"
        edge = f"**edge:** {r.edge}" if r.edge else ""
        lines.append(f"| {r.dataset} | {r.method} | {r.selected_hp} | {acc} | "
                     f"{r.grid_points} | {edge} |")
    atomic_write_text(out_dir / "table_tuning.md", "\n".join(lines) + "\n")
    print(f"wrote {len(table)} selections to {out_dir}")
    return 0


def tuning_figure(frame: pd.DataFrame, dataset: str):
    """Validation accuracy over each method's grid (grid order), the selected point starred.

    One panel per method (two rows of three); each tick lists the point's values top to bottom
    in the order the x-axis label names them; a method whose selection lies on the edge of its
    grid says so in its title.
    """
    import matplotlib
    from matplotlib.figure import Figure

    from persafl.style import (
        DOUBLE_COLUMN_WIDTH,
        RC_PARAMS,
        dataset_label,
        method_color,
        method_label,
        sort_methods,
    )

    rows = frame[frame["dataset"] == dataset]
    methods = sort_methods(list(dict.fromkeys(rows["method"])))
    columns = min(3, len(methods))
    lines = -(-len(methods) // columns)
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(DOUBLE_COLUMN_WIDTH, 2.5 * lines + 0.4), layout="constrained")
        axes = fig.subplots(lines, columns, sharey=True, squeeze=False).ravel()
        for ax, method in zip(axes, methods, strict=False):
            part = rows[rows["method"] == method].reset_index(drop=True)
            names = [n for n in _value_columns(part) if part[n].notna().any()]
            x = list(range(len(part)))
            ax.errorbar(x, 100 * part["val_acc_mean"], yerr=100 * part["val_acc_std"],
                        fmt="o", color=method_color(method), elinewidth=0.8, capsize=1.5)
            best = part.index[part["selected"].astype(bool)][0]
            ax.plot([best], [100 * part["val_acc_mean"][best]], marker="*", ms=10,
                    color="black", ls="none", zorder=3)
            edge = part["edge"][0] if isinstance(part["edge"][0], str) else ""
            edged = sorted({item.split("=")[0].strip() for item in edge.split(";") if item})
            title = method_label(method)
            note = "edge: " + ", ".join(edged) if edged else "interior"
            ax.set_title(f"{title}\n({note})", fontsize=8 if len(note) < 34 else 6.5)
            ax.set_xticks(x, ["\n".join(f"{r[n]:g}" for n in names) for _, r in part.iterrows()],
                          fontsize=6)
            ax.set_xlabel(" / ".join(names), fontsize=7)
            ax.grid(axis="y")
        for ax in axes[len(methods):]:
            ax.set_visible(False)
        for ax in axes[::columns]:
            ax.set_ylabel("validation accuracy (%)")
        fig.suptitle(
            f"{dataset_label(dataset)}: tuning grids (mean and std over tuning seeds; "
            "star: selected)"
        )
    return fig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m persafl.tuning_cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="the tuning view of a partition")
    split.add_argument("--config", required=True, help="the partition's run config")
    split.add_argument("--partition", required=True)
    split.add_argument("--share", type=float, required=True)
    split.add_argument("--seed", type=int, required=True, help="the tuning seed")
    split.add_argument("--out", required=True)
    sel = sub.add_parser("select", help="pick a method's grid point")
    for name in ("--dataset", "--method", "--grid", "--meta", "--out", "--table"):
        sel.add_argument(name, required=True)
    sel.add_argument("runs", nargs="+", help="tuning run directories")
    merge = sub.add_parser("merge", help="one data set's per-method tables into one")
    merge.add_argument("--out", required=True)
    merge.add_argument("tables", nargs="+")
    table = sub.add_parser("table", help="the selections of every data set: table_tuning.*")
    table.add_argument("--out-dir", required=True)
    table.add_argument("tables", nargs="+")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = {"split": _split, "select": _select, "merge": _merge, "table": _table}
    try:
        return command[args.command](args)
    except (OSError, ValueError, KeyError) as err:
        print(f"persafl.tuning_cli {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
