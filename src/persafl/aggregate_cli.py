"""Reading finished run directories and the CLI of :mod:`persafl.aggregate`.

Run as ``python -m persafl.aggregate`` (usage, outputs and definitions in that module's
docstring); the tables themselves are the pure functions of :mod:`persafl.aggregate`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from persafl import aggregate
from persafl.aggregate import (
    COUNTED_STATUSES,
    IDENTITY_KEYS,
    AggregationError,
    RunResult,
    curves_table,
    final_table,
    parse_identity,
    summary_table,
    validate_metrics,
    validate_partition_counts,
)
from persafl.io import atomic_write_text
from persafl.run_files import RunFilesError, verify_run_files
from persafl.style import format_latex, format_markdown

log = logging.getLogger("persafl.aggregate")


def resolve_run_dir(path: str | Path) -> Path:
    """A run directory from itself or from a file inside it (summary.json, metrics.csv)."""
    p = Path(path)
    return p.parent if p.suffix in {".json", ".csv"} else p


def load_run(run_dir: Path) -> RunResult | None:
    """Read one run; ``None`` (with a warning) when its status does not count."""
    identity = parse_identity(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise AggregationError(f"run directory {run_dir}: no summary.json (incomplete run)")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as err:
        raise AggregationError(f"{summary_path}: not valid JSON ({err})") from err
    if not isinstance(summary, dict) or "status" not in summary:
        raise AggregationError(f"{summary_path}: no 'status' field")
    if summary["status"] not in COUNTED_STATUSES:
        log.warning("skipping %s: status %r", run_dir, summary["status"])
        return None
    metrics_path = run_dir / "metrics.csv"
    if not metrics_path.is_file():
        raise AggregationError(f"run directory {run_dir}: no metrics.csv")
    try:
        raw = pd.read_csv(metrics_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise AggregationError(f"{metrics_path}: unreadable CSV ({err})") from err
    metrics = validate_metrics(raw, metrics_path)
    try:  # after the format checks, which name the column; this names any other change
        verify_run_files(run_dir, summary)
    except RunFilesError as err:
        raise AggregationError(str(err)) from None
    return RunResult(run_dir, identity, metrics, summary)


def load_runs(paths: Iterable[str | Path]) -> list[RunResult]:
    """Read every counted run; two directories with the same identity are an error."""
    runs: dict[tuple[Any, ...], RunResult] = {}
    for run_dir in dict.fromkeys(resolve_run_dir(p) for p in paths):
        run = load_run(run_dir)
        if run is None:
            continue
        key = tuple(run.identity[k] for k in IDENTITY_KEYS)
        if key in runs:
            raise AggregationError(f"runs {runs[key].run_dir} and {run_dir} have one identity")
        runs[key] = run
    return list(runs.values())


def divergence_summary(summaries: Iterable[str | Path]) -> str | None:
    """The workflow's closing warning: which of the existing ``summaries`` diverged, or None."""
    paths = [Path(p) for p in summaries if Path(p).is_file()]
    diverged = []
    for path in paths:
        try:
            status = json.loads(path.read_text()).get("status")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if status == "diverged":
            diverged.append(str(path.parent))
    if not diverged:
        return None
    lines = [
        f"persafl: WARNING: {len(diverged)} of {len(paths)} run(s) diverged; figures and "
        "means leave them out and say how many (set fail_on_divergence: true to fail instead):",
        *(f"  {d}  (why: its summary.json 'message')" for d in diverged),
    ]
    return "\n".join(lines)


TEXT_COLUMNS = {"dataset": str, "partition": str, "method": str, "status": str}


def load_tables(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merged (curves, final) of the table folders ``paths`` (or files inside them)."""
    curves, finals = [], []
    for folder in dict.fromkeys(resolve_run_dir(p) for p in paths):
        for name, frames in (("curves.csv", curves), ("final.csv", finals)):
            path = folder / name
            try:  # pandas reads back the floats it wrote exactly (tested: same bytes)
                frames.append(pd.read_csv(path, dtype=TEXT_COLUMNS))
            except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
                raise AggregationError(f"{path}: unreadable table ({err})") from None
    return aggregate.merge_tables(curves, "curves"), aggregate.merge_tables(finals, "final")


def _read_runs_file(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m persafl.aggregate",
        description=aggregate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", nargs="*", default=[], help="run directories (or files in them)")
    parser.add_argument("--runs-file", type=Path, help="text file: one run path per line")
    parser.add_argument(
        "--partitions",
        nargs="*",
        default=[],
        metavar="NAME=CSV",
        help="partition_counts.csv to copy as partition_NAME.csv",
    )
    parser.add_argument(
        "--tables",
        nargs="*",
        default=[],
        help="folders of curves.csv + final.csv of disjoint runs to merge (instead of --runs)",
    )
    parser.add_argument(
        "--runs-tables-only",
        action="store_true",
        help="write only curves.csv and final.csv (a partial table for a later --tables)",
    )
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument(
        "--fail-on-divergence",
        action="store_true",
        help="exit 1 (writing nothing) when a run diverged (config key fail_on_divergence)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    paths = list(args.runs) + (_read_runs_file(args.runs_file) if args.runs_file else [])
    try:
        partitions = {}
        for spec in args.partitions:
            name, sep, csv_path = spec.partition("=")
            if not sep or not name or not csv_path:
                raise AggregationError(f"--partitions {spec!r}: expected NAME=PATH")
            partitions[name] = validate_partition_counts(pd.read_csv(csv_path), csv_path)
        outputs: dict[str, str] = {}
        if args.tables:
            curves, final = load_tables(args.tables)
        elif paths or not partitions:  # --partitions alone copies the counts, nothing else
            runs = load_runs(paths)
            curves, final = curves_table(runs), final_table(runs)
        if args.tables or paths or not partitions:
            diverged = aggregate.diverged_runs(final)
            if diverged:
                log.warning("%d run(s) diverged: %s", len(diverged), ", ".join(diverged))
            if diverged and args.fail_on_divergence:
                raise AggregationError(
                    f"{len(diverged)} run(s) diverged ({diverged[0]}"
                    f"{', ...' if len(diverged) > 1 else ''}; its summary.json says why) and "
                    "fail_on_divergence is set: lower local_lr, or unset fail_on_divergence"
                )
            outputs = {
                "curves.csv": curves.to_csv(index=False),
                "final.csv": final.to_csv(index=False),
            }
            if not args.runs_tables_only:
                table = summary_table(final)
                outputs["table_final.csv"] = table.to_csv(index=False)
                outputs["table_final.md"] = format_markdown(table)
                outputs["table_final.tex"] = format_latex(table)
            log.info("aggregated %d runs", len(final))
    except (AggregationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, counts in partitions.items():
        outputs[f"partition_{name}.csv"] = counts.to_csv(index=False)
    for name, text in outputs.items():
        atomic_write_text(args.out_dir / name, text)
    log.info("wrote %s into %s", ", ".join(outputs), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
