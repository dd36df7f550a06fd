"""One training run: ``python -m persafl.train --config run.yaml --out DIR [--partition FILE]``.

Builds the data set, the partition (from the config, or the saved ``--partition`` file the
workflow passes), the model, the method and the schedule trace, replays the trace
(:mod:`persafl.engine.executor`) and writes into ``DIR`` atomically (docs/design.md "File formats"):
``metrics.csv``, ``clients.csv`` and, last, ``summary.json``. An existing ``summary.json`` is
removed when the run starts, so its presence always marks a complete run of this config.

A diverged run (non-finite parameters or loss) is a result: its files are written with status
``diverged`` and a message, and the exit code is 0. Bad configs and data problems exit with 1
and a message naming what to fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from persafl import __version__
from persafl.config import ConfigError, load_run_config
from persafl.engine.evaluate import METRIC_COLUMNS
from persafl.engine.executor import ROW_PREFIX, RunResult
from persafl.io import atomic_write_csv, atomic_write_json

log = logging.getLogger("persafl.train")

METRICS_COLUMNS = (*ROW_PREFIX, *METRIC_COLUMNS)
CLIENT_COLUMNS = ("client", "n_train", "n_test", "global_acc", "personal_acc", "majority_acc")


def git_commit() -> str:
    """The commit of the source tree (``git rev-parse HEAD``), or ``"unknown"``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _client_rows(partition: Any, result: RunResult) -> list[dict[str, Any]]:
    last = result.last
    rows = []
    for client, (train, test) in enumerate(zip(partition.train, partition.test, strict=True)):
        rows.append(
            {
                "client": client,
                "n_train": len(train),
                "n_test": len(test),
                "global_acc": float(last.global_acc[client]) if last else float("nan"),
                "personal_acc": float(last.personal_acc[client]) if last else float("nan"),
                "majority_acc": float(last.majority_acc[client]) if last else float("nan"),
            }
        )
    return rows


def train(
    config: dict[str, Any], out: Path, partition_file: Path | None = None, progress: bool = False
) -> RunResult:
    """Run the resolved ``config`` and write its outputs into ``out``."""
    return train_group([(config, out, partition_file)], progress=progress)[0]


def train_group(
    runs: list[tuple[dict[str, Any], Path, Path | None]], progress: bool = False
) -> list[RunResult]:
    """Train several runs in one process, their client jobs stacked together.

    ``runs``: (resolved config, output directory, saved partition or None) each. Every run
    is set up (and its config errors raised) before any trains (:mod:`persafl.run_group`);
    runs of the same method and hyperparameters share stacked calls. Each run's directory
    gets exactly what a run alone writes; ``summary.json`` records the group's size and wall
    time, and ``wall_seconds`` is the run's share of it.
    """
    from persafl.engine.group import drive
    from persafl.run_group import prepare_replays, set_up

    started = time.perf_counter()
    for _, out, _ in runs:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").unlink(missing_ok=True)  # not complete until written again
    setups = set_up(runs)
    named = len(setups) > 1
    prepare_replays(setups, lambda run: _reporter(run.out, run.trace.num_updates, named))
    if named:
        log.info("training %d runs in one group", len(setups))
    results = drive([run.replay for run in setups], progress=progress)
    wall = time.perf_counter() - started
    for run, result in zip(setups, results, strict=True):
        if result.status != "completed":
            log.warning("run %s %s: %s", run.out, result.status, result.message)
        _write(run, result, wall, len(setups))
    return results


def _reporter(out: Path, num_updates: int, named: bool) -> Any:
    def report(row: dict[str, Any]) -> None:
        log.info(
            "%supdate %d/%d  global_acc_ca=%.4f  personal_acc_ca=%.4f  grad_evals=%d",
            f"{out}: " if named else "",
            row["update"],
            num_updates,
            row["global_acc_ca"],
            row["personal_acc_ca"],
            row["grad_evals"],
        )

    return report


def _write(run: Any, result: RunResult, group_wall: float, group_size: int) -> None:
    """The run's files, ``summary.json`` last (atomically)."""
    import torch

    out, config = run.out, run.config
    atomic_write_csv(out / "metrics.csv", result.rows, METRICS_COLUMNS)
    atomic_write_csv(out / "clients.csv", _client_rows(run.partition, result), CLIENT_COLUMNS)
    summary = {
        "status": result.status,
        "message": result.message,
        "config": config,
        "seed": config["seed"],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "persafl": __version__,
        },
        "device": run.device,
        "git_commit": git_commit(),
        "wall_seconds": group_wall / group_size,
        "group": {"runs": group_size, "wall_seconds": group_wall},
        "final": result.rows[-1] if result.rows else {},
        "trace": run.trace.summary(),
        "updates_applied": result.updates_applied,
    }
    atomic_write_json(out / "summary.json", summary)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 also for a diverged run).

    ``--config``, ``--out`` and ``--partition`` may be repeated (in the same order, one each
    per run) to train a group of runs in one process with their client jobs stacked.
    """
    parser = argparse.ArgumentParser(prog="python -m persafl.train", description=__doc__)
    parser.add_argument(
        "--config", required=True, type=Path, action="append", help="run config (YAML)"
    )
    parser.add_argument("--out", required=True, type=Path, action="append", help="output folder")
    parser.add_argument(
        "--partition", type=Path, action="append", help="saved partition .npz to use"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ["PERSAFL_THREADS"]) if "PERSAFL_THREADS" in os.environ else None,
        help="torch CPU threads (default: $PERSAFL_THREADS, else torch's default)",
    )
    args = parser.parse_args(argv)
    partitions = args.partition or [None] * len(args.config)
    if not len(args.config) == len(args.out) == len(partitions):
        parser.error(
            f"got {len(args.config)} --config, {len(args.out)} --out and "
            f"{len(args.partition or [])} --partition: give one --out (and one --partition, "
            "if any) per --config, in the same order"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # Deterministic cuBLAS needs this before CUDA starts (harmless on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    # warn_only: an op without a deterministic kernel warns instead of failing the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: got {args.threads}, expected an integer >= 1")
        torch.set_num_threads(args.threads)
    from persafl.data import DataError

    current = args.config[0]
    try:
        runs = []
        for current, out, partition in zip(args.config, args.out, partitions, strict=True):
            runs.append((load_run_config(current), out, partition))
        current = args.config[0] if len(runs) == 1 else "group"
        results = train_group(runs, progress=sys.stderr.isatty())
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # parameters checked by the data/partition/model builders
        print(f"error: {current}: {err}", file=sys.stderr)
        return 1
    for (_, out, _), result, path in zip(runs, results, args.config, strict=True):
        log.info("%s: %s -> %s", result.status, path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
