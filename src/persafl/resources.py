"""What a training group asks the scheduler for, from measured benchmark files.

``workflow/resources/train_groups.csv`` holds one row per measured training group (written by
``python benchmarks/rule_times.py --resources``, from Snakemake's ``benchmark:`` files of a real
run): ``group`` (``dataset~D/partition~P/method~M``), ``runs``, ``seconds``, ``max_rss_mb``,
``threads``. A group's request is then

- runtime (minutes) = max(10, 2 x measured seconds per run x runs / 60): a cluster node may be
  slower than the 2-core machine it was measured on, and a job past its limit is lost;
- mem_mb = max(1000, 1.5 x measured max RSS x runs / measured runs, rounded up): the group
  holds one copy of its data set plus per-run state.

An unmeasured group falls back to its data set's ``resources`` in the config.

A group's Snakemake ``priority`` is its expected seconds (:func:`group_priority`): measured
seconds scaled to its runs, or, unmeasured, half its fallback runtime request. Snakemake starts
the ready group with the highest priority first, so the longest groups start first and the
last minutes of a run are not one long group on one core while the others idle.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MEASURED = Path(__file__).resolve().parents[2] / "workflow" / "resources" / "train_groups.csv"
COLUMNS = ("group", "runs", "seconds", "max_rss_mb", "threads")
TIME_FACTOR, MEMORY_FACTOR = 2.0, 1.5
MIN_RUNTIME, MIN_MEM_MB = 10, 1000


def load_measured(path: Path = MEASURED) -> dict[str, dict[str, float]]:
    """Measured rows by group path; empty if the file does not exist."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; expected {COLUMNS}")
        return {
            row["group"]: {k: float(row[k]) for k in COLUMNS if k != "group"} for row in reader
        }


def group_resources(
    group: str, runs: int, fallback: Mapping[str, Any], measured: Mapping[str, Mapping] | None
) -> dict[str, int]:
    """``{"mem_mb", "runtime"}`` for a group of ``runs`` runs (see the module docstring)."""
    row = (measured or {}).get(group)
    if row is None:
        return {"mem_mb": int(fallback["mem_mb"]), "runtime": int(fallback["runtime"])}
    scale = runs / max(1.0, row["runs"])
    runtime = max(MIN_RUNTIME, math.ceil(TIME_FACTOR * row["seconds"] * scale / 60))
    mem_mb = max(MIN_MEM_MB, math.ceil(MEMORY_FACTOR * row["max_rss_mb"] * max(1.0, scale)))
    return {"mem_mb": mem_mb, "runtime": runtime}


def group_priority(
    group: str, runs: int, fallback: Mapping[str, Any], measured: Mapping[str, Mapping] | None
) -> int:
    """The expected seconds of a group of ``runs`` runs: measured seconds scaled to ``runs``,
    or half the fallback runtime request (minutes, which allow twice the expected time)."""
    row = (measured or {}).get(group)
    if row is None:
        return int(60 * float(fallback["runtime"]) / TIME_FACTOR)
    return int(round(row["seconds"] * runs / max(1.0, row["runs"])))


def measured_rows(frame: Any) -> list[dict[str, Any]]:
    """Rows of ``train_groups.csv`` from a benchmark frame (benchmarks/rule_times.load) of
    training groups: one per group path, the last measurement."""
    rows = []
    for _, r in frame.iterrows():
        rows.append(
            {
                "group": f"dataset~{r['dataset']}/partition~{r['partition']}/method~{r['method']}",
                "runs": int(r["runs"]),
                "seconds": round(float(r["s"]), 1),
                "max_rss_mb": round(float(r["max_rss"]), 1),
                "threads": int(r["threads"]),
            }
        )
    return rows
