"""Render the paper's figures from the aggregated tables (the CLI the figure rules call).

Usage::

    python -m persafl.figures accuracy --curves results/tables/curves.csv \
        --dataset D --tau T [--partition P] --out paper_figures/fig_accuracy_D.pdf
    python -m persafl.figures staleness --final results/tables/final.csv \
        --dataset D [--partition P] --out paper_figures/fig_staleness_D.pdf
    python -m persafl.figures partition --counts results/tables/partition_D.csv \
        [--title TEXT] --out paper_figures/fig_partition_D.pdf
    python -m persafl.figures tuning --table results/tables/tuning_D.csv --dataset D \
        --out paper_figures/fig_tuning_D.pdf
    python -m persafl.figures regime --summary results/tables/regime/dataset~D/summary.csv \
        --dataset D --out paper_figures/fig_regime_D.pdf
    python -m persafl.figures table --table results/tables/table_final.csv \
        --out results/report/table_final.html
    python -m persafl.figures axes --curves results/tables/staleness/curves.csv \
        --dataset D --setting S --out paper_figures/fig_axes_D.pdf      # staleness study
    python -m persafl.figures time --curves results/tables/staleness/curves.csv \
        --dataset D --out paper_figures/fig_time_D.pdf
    python -m persafl.figures bounds --table results/tables/staleness/table_bounds.csv \
        --dataset D --out paper_figures/fig_bounds_D.pdf

Each command writes the PDF named by ``--out`` and a PNG (200 dpi) beside it. ``--partition``
may be left out when the dataset has a single partition in the table. Output is a pure
function of the table: regenerating gives byte-identical files (no timestamps or producer
strings in the metadata, fonts shipped with matplotlib, fixed hash salt).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from persafl.aggregate import (  # noqa: E402
    IDENTITY_KEYS,
    AggregationError,
    validate_partition_counts,
)
from persafl.io import atomic_write_text  # noqa: E402
from persafl.plotting import (  # noqa: E402
    FigureDataError,
    accuracy_figure,
    partition_figure,
    staleness_figure,
)
from persafl.style import PNG_DPI, RC_PARAMS, format_html  # noqa: E402

PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": None}
_TEXT_COLUMNS = {"dataset": str, "partition": str, "method": str, "status": str}
CURVES_COLUMNS = (*IDENTITY_KEYS, "update", "headline_acc", "majority_acc_ca")
FINAL_COLUMNS = (*IDENTITY_KEYS, "status", "headline_acc", "global_acc_ca", "majority_acc_ca")


def read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read an aggregated CSV; a missing file or column is an error naming it."""
    if not path.is_file():
        raise AggregationError(f"{path}: no such file (run persafl.aggregate first)")
    table = pd.read_csv(path, dtype=_TEXT_COLUMNS)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise AggregationError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def save_figure(fig: Figure, pdf_path: Path) -> tuple[Path, Path]:
    """Write ``pdf_path`` and the PNG beside it, reproducibly and atomically."""
    if pdf_path.suffix != ".pdf":
        raise ValueError(f"--out {pdf_path}: expected a .pdf path (the .png is written beside)")
    png_path = pdf_path.with_suffix(".png")
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC_PARAMS):
        outputs = ((pdf_path, "pdf", PDF_METADATA), (png_path, "png", PNG_METADATA))
        for path, fmt, metadata in outputs:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=metadata)
            os.replace(tmp, path)
    return pdf_path, png_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m persafl.figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="figure", required=True)
    acc = sub.add_parser("accuracy", help="test accuracy vs server updates at one tau")
    acc.add_argument("--curves", type=Path, required=True)
    acc.add_argument("--dataset", required=True)
    acc.add_argument("--tau", type=int, required=True)
    acc.add_argument("--partition")
    stale = sub.add_parser("staleness", help="final accuracy vs staleness bound")
    stale.add_argument("--final", type=Path, required=True)
    stale.add_argument("--dataset", required=True)
    stale.add_argument("--partition")
    table = sub.add_parser("table", help="table_final.csv as an HTML table (for the report)")
    table.add_argument("--table", type=Path, required=True)
    table.add_argument("--out", type=Path, required=True, help="HTML path")
    part = sub.add_parser("partition", help="clients x classes heat map")
    part.add_argument("--counts", type=Path, required=True)
    part.add_argument("--title")
    regime = sub.add_parser("regime", help="accuracy and win rate vs samples per client")
    regime.add_argument("--summary", type=Path, required=True)
    regime.add_argument("--dataset", required=True)
    tune = sub.add_parser("tuning", help="validation accuracy over the tuning grids")
    tune.add_argument("--table", type=Path, required=True, help="results/tables/tuning_D.csv")
    tune.add_argument("--dataset", required=True)
    # the staleness and time study (persafl.timefigures; tables of persafl.timetables)
    axes = sub.add_parser("axes", help="study: one setting's bounds on three x-axes")
    axes.add_argument("--curves", type=Path, required=True)
    axes.add_argument("--dataset", required=True)
    axes.add_argument("--setting", required=True)
    timed = sub.add_parser("time", help="study: sync vs async accuracy vs virtual time")
    timed.add_argument("--curves", type=Path, required=True)
    timed.add_argument("--dataset", required=True)
    bounds = sub.add_parser("bounds", help="study: staleness, drops and accuracy vs bound")
    bounds.add_argument("--table", type=Path, required=True)
    bounds.add_argument("--dataset", required=True)
    for p in (axes, timed, bounds):
        p.add_argument("--out", type=Path, required=True, help="PDF path; PNG written beside")
    for p in (acc, stale, part, tune, regime):
        p.add_argument("--out", type=Path, required=True, help="PDF path; PNG written beside")
        p.add_argument(
            "--expect",
            type=json.loads,
            help='what the table must hold for this config (JSON): {"runs": [[partition, '
            'method, tau, seed], ...]} or {"clients": N}; the workflow passes it',
        )
    return parser


def build_figure(args: argparse.Namespace) -> Figure:
    """Read the table a subcommand names and build its figure."""
    if args.figure in ("axes", "time", "bounds"):
        from persafl import timefigures

        if args.figure == "bounds":
            table = read_table(args.table, ("dataset", "setting", "method", "tau"))
            return timefigures.bounds_figure(table, args.dataset)
        curves = read_table(args.curves, ("dataset", "setting", "method", "tau", "seed"))
        if args.figure == "axes":
            return timefigures.axes_figure(curves, args.dataset, args.setting)
        return timefigures.time_figure(curves, args.dataset)
    expect = args.expect or {}
    if args.figure == "accuracy":
        curves = read_table(args.curves, CURVES_COLUMNS)
        check_runs(curves, args.dataset, expect.get("runs"), args.curves)
        return accuracy_figure(curves, args.dataset, args.tau, args.partition)
    if args.figure == "staleness":
        final = read_table(args.final, FINAL_COLUMNS)
        check_runs(final, args.dataset, expect.get("runs"), args.final)
        return staleness_figure(final, args.dataset, args.partition)
    if args.figure == "tuning":  # persafl.tuning's grids
        from persafl.tuning_cli import tuning_figure

        return tuning_figure(read_table(args.table, ("dataset", "method", "val_acc_mean")),
                             args.dataset)
    if args.figure == "regime":  # issue 14's study (persafl.regime, persafl.plot_regime)
        from persafl.plot_regime import SUMMARY_COLUMNS, regime_figure

        return regime_figure(read_table(args.summary, SUMMARY_COLUMNS), args.dataset)
    counts = validate_partition_counts(read_table(args.counts, ("client",)), args.counts)
    clients = expect.get("clients")
    if clients is not None and len(counts) != clients:
        raise AggregationError(
            f"{args.counts} has {len(counts)} clients, this config's partition {clients}: the "
            f"table comes from another config; remake it with --forcerun partition_table"
        )
    return partition_figure(counts, args.title)


def check_runs(table: pd.DataFrame, dataset: str, expected: list | None, path: Path) -> None:
    """Refuse a table whose runs of ``dataset`` are not exactly this config's ``expected`` runs
    (``[partition, method, tau, seed]`` each): a figure is never drawn from another config."""
    if expected is None:
        return
    rows = table[table["dataset"] == dataset]
    found = {
        (str(p), str(m), int(t), int(s))
        for p, m, t, s in rows[["partition", "method", "tau", "seed"]].drop_duplicates().values
    }
    wanted = {(str(p), str(m), int(t), int(s)) for p, m, t, s in expected}
    if found != wanted:
        extra, missing = sorted(found - wanted), sorted(wanted - found)
        example = (
            f"it holds {_run_name(extra[0])}, which this config does not have"
            if extra
            else f"it lacks {_run_name(missing[0])}"
        )
        raise AggregationError(
            f"{path} comes from another config ({example}); remake it: snakemake "
            f"--forcerun {'aggregate_accuracy' if 'tau~' in str(path) else 'aggregate_dataset'}"
        )


def _run_name(key: tuple) -> str:
    return "partition~{}/method~{}/tau~{}/seed~{}".format(*key)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    args = _parser().parse_args(argv)
    if args.figure == "table":
        try:
            table = read_table(args.table, ("dataset", "method", "n_seeds", "n_diverged"))
        except AggregationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        atomic_write_text(args.out, format_html(table))
        print(f"wrote {args.out}")
        return 0
    try:
        fig = build_figure(args)
        pdf_path, png_path = save_figure(fig, args.out)
    except (AggregationError, FigureDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {pdf_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
