"""One training run: ``python -m persafl.train --config run.yaml --out DIR [--partition FILE]``,
or one run of a sweep config without writing its run config: ``python -m persafl.train --sweep
config/test.yaml --dataset synthetic --method persafl_me --tau 4 --seed 0 [--partition NAME]
--out DIR``.

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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from persafl import __version__, provenance
from persafl.config import ConfigError, load_run_config
from persafl.engine.evaluate import METRIC_COLUMNS
from persafl.engine.executor import ROW_PREFIX, RunResult
from persafl.process import exit_now, use_deterministic_kernels
from persafl.run_files import write_run_outputs

log = logging.getLogger("persafl.train")

METRICS_COLUMNS = (*ROW_PREFIX, *METRIC_COLUMNS)
CLIENT_COLUMNS = (
    "client",
    "n_train",
    "n_test",
    "global_acc",
    "personal_acc",
    "majority_acc",
    "masked_acc",  # persafl.baselines: label-masked final server model (NaN for local)
    "finetune_acc",  # persafl.baselines: final server model fine-tuned on TRAIN data
)


def git_commit() -> str:
    """The commit of the source tree, ``+dirty`` if it was modified (persafl.provenance)."""
    return provenance.git_commit(Path(__file__).resolve().parent)


def _baselines(run: Any, result: RunResult) -> dict[str, np.ndarray]:
    """Per-client baselines of the final server model (:mod:`persafl.baselines`); NaN for
    ``local`` (no server model) and for a run that did not complete."""
    from persafl.baselines import BASELINE_COLUMNS, client_baselines

    clients = len(run.partition.test)
    if result.server is None or result.status != "completed":
        return {name: np.full(clients, np.nan) for name in BASELINE_COLUMNS}
    config, data = run.config, run.data
    server = {k: v.detach().cpu() for k, v in result.server.items()}
    return client_baselines(
        run.model,
        config["method"]["hp"],
        server,
        data.x,
        data.y,
        run.partition.train,
        run.partition.test,
        data.num_classes,
        config["seed"],
        result.updates_applied,
    )


def _client_rows(
    partition: Any, result: RunResult, baselines: dict[str, np.ndarray] | None = None
) -> list[dict[str, Any]]:
    last = result.last
    baselines = baselines or {}
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
                **{
                    name: float(values[client]) if last else float("nan")
                    for name, values in baselines.items()
                },
            }
        )
    return rows


def train(
    config: dict[str, Any], out: Path, partition_file: Path | None = None, progress: bool = False
) -> RunResult:
    """Run the resolved ``config`` and write its outputs into ``out``.

    Runs with the process's torch thread count (``python -m persafl.train`` first sets it
    from the config's ``threads``): the last bits of a result depend on it, so a caller that
    wants the workflow's numbers sets ``torch.set_num_threads(config["threads"])`` first.
    """
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
    """The run's files, ``summary.json`` last (atomically, with the CSVs' checksums)."""
    import torch

    out, config = run.out, run.config
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
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "wall_seconds": group_wall / group_size,
        "group": {"runs": group_size, "wall_seconds": group_wall},
        "eval_seconds": result.eval_seconds,
        "final": result.rows[-1] if result.rows else {},
        "trace": run.trace.summary(),
        "updates_applied": result.updates_applied,
    }
    write_run_outputs(
        out,
        result.rows,
        _client_rows(run.partition, result, _baselines(run, result)),
        summary,
        metrics_columns=METRICS_COLUMNS,
        client_columns=CLIENT_COLUMNS,
    )


def config_from_sweep(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The resolved run config of one run of the sweep config ``path`` (as the workflow
    resolves it: persafl.sweep.run_config), named by ``args``' dataset, partition, method, tau
    and seed; a missing name or a run outside the sweep is a ConfigError of one line."""
    from persafl import sweep
    from persafl.config import resolve_run_config

    missing = [f"--{n}" for n in ("dataset", "method", "tau", "seed") if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"--sweep {path}: also give {', '.join(missing)} (which run to train)")
    try:
        cfg = sweep.load_sweep_config([path])
        if args.dataset not in sweep.datasets(cfg):
            raise sweep.SweepError(
                f"data set {args.dataset!r} is not enabled in the sweep; enabled: "
                f"{sweep.datasets(cfg)}"
            )
        partition = args.partition or next(iter(cfg["datasets"][args.dataset]["partitions"]))
        run = sweep.run_config(cfg, args.dataset, partition, args.method, args.tau, args.seed)
    except sweep.SweepError as err:
        raise ConfigError(f"--sweep {path}: {err}") from None
    return resolve_run_config(run)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 also for a diverged run).

    ``--config``, ``--out`` and ``--partition`` may be repeated (in the same order, one each
    per run) to train a group of runs in one process with their client jobs stacked.
    """
    parser = argparse.ArgumentParser(prog="python -m persafl.train", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config", type=Path, action="append", help="run config (YAML); repeat for a group"
    )
    source.add_argument(
        "--sweep",
        type=Path,
        help="sweep config (config/*.yaml): train its run named by --dataset, --method, --tau, "
        "--seed and --partition NAME (default: the data set's first partition)",
    )
    parser.add_argument(
        "--out", required=True, type=Path, action="append", help="output folder (one per run)"
    )
    parser.add_argument(
        "--partition",
        action="append",
        help="with --config: a saved partition .npz to use (one per run); with --sweep: the "
        "partition's name",
    )
    for name, kind in (("--dataset", str), ("--method", str), ("--tau", int), ("--seed", int)):
        parser.add_argument(name, type=kind, help="with --sweep: which run of the sweep")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads, overriding the run config's 'threads' (default 1): results "
        "differ in the last bits between thread counts",
    )
    args = parser.parse_args(argv)
    configs = args.config or [args.sweep]
    partitions = args.partition or [None] * len(configs)
    if args.sweep is not None and (len(args.out) > 1 or len(partitions) > 1):
        parser.error("--sweep trains one run: give one --out (and at most one --partition)")
    if args.config and not len(args.config) == len(args.out) == len(partitions):
        parser.error(
            f"got {len(args.config)} --config, {len(args.out)} --out and "
            f"{len(args.partition or [])} --partition: give one --out (and one --partition, "
            "if any) per --config, in the same order"
        )
    source = configs[0] if len(configs) == 1 else f"group of {len(configs)} runs"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # Deterministic cuBLAS needs this before CUDA starts (harmless on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    # an op without a deterministic kernel warns instead of failing the run (persafl.process)
    use_deterministic_kernels()
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: got {args.threads}, expected an integer >= 1")
    from persafl.data import DataError

    try:
        if args.sweep is not None:
            one = argparse.Namespace(**{**vars(args), "partition": (args.partition or [None])[0]})
            runs = [(config_from_sweep(args.sweep, one), args.out[0], None)]
        else:
            runs = []
            for current, out, partition in zip(args.config, args.out, partitions, strict=True):
                path = Path(partition) if partition else None
                runs.append((load_run_config(current), out, path))
        # one thread count for the group: part of each run's identity (summary.json)
        threads = args.threads if args.threads is not None else runs[0][0]["threads"]
        for config, _, _ in runs:
            config["threads"] = threads
        torch.set_num_threads(threads)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        # log lines go through tqdm.write, above the bar, instead of into it
        with logging_redirect_tqdm():
            results = train_group(runs, progress=progress)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # parameters checked by the data/partition/model builders
        print(f"error: {source}: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # --out: the run's files cannot be written there
        where = err.filename or args.out[0]
        print(
            f"error: cannot write the run into --out {where} ({err.strerror}); "
            "give a writable folder",
            file=sys.stderr,
        )
        return 1
    for (_, out, _), result in zip(runs, results, strict=True):
        log.info("%s: %s -> %s", result.status, source, out)
    return 0


if __name__ == "__main__":
    exit_now(main())
