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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from persafl import __version__
from persafl.config import ConfigError, load_run_config
from persafl.engine.evaluate import METRIC_COLUMNS
from persafl.engine.executor import ROW_PREFIX, RunResult
from persafl.run_files import write_run_outputs

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


def pick_device(requested: str) -> str:
    """``auto``: cuda if available, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device': got 'cuda', but no CUDA device is available")
    return requested


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
    import torch

    from persafl import methods
    from persafl.data import load_dataset
    from persafl.engine.executor import run
    from persafl.engine.schedule import ScheduleConfig, make_trace
    from persafl.models import build_model
    from persafl.partition import build_partition
    from persafl.partition_io import load_partition

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # not complete until written again
    seed = config["seed"]
    device = pick_device(config["device"])
    data_cfg, model_cfg = config["dataset"], config["model"]
    data = load_dataset(data_cfg["name"], data_cfg["root"], **data_cfg["params"])
    if partition_file is not None:
        partition = load_partition(partition_file)
        top = max((int(t.max()) for t in [*partition.train, *partition.test] if len(t)), default=0)
        if top >= len(data.y):
            raise ConfigError(
                f"partition {partition_file} indexes sample {top}, but data set "
                f"{data.name!r} has {len(data.y)} samples: it was made for other data"
            )
    else:
        try:
            partition = build_partition(config, data)
        except ValueError as err:
            raise ConfigError(f"config section 'partition': {err}") from err
    model = build_model(
        model_cfg["name"], data.x.shape[1:], data.num_classes, **model_cfg["params"]
    )
    method = methods.get(config["method"]["name"])
    schedule = ScheduleConfig.from_dict(config["schedule"])
    trace = make_trace(schedule, len(partition.train), seed)

    def report(row: dict[str, Any]) -> None:
        log.info(
            "update %d/%d  global_acc_ca=%.4f  personal_acc_ca=%.4f  grad_evals=%d",
            row["update"],
            trace.num_updates,
            row["global_acc_ca"],
            row["personal_acc_ca"],
            row["grad_evals"],
        )

    result = run(
        trace,
        method,
        config["method"]["hp"],
        model,
        data,
        partition,
        seed,
        backend=config["backend"],
        eval_every=config["eval"]["every"],
        callback=report,
        device=device,
        progress=progress,
    )
    if result.status != "completed":
        log.warning("run %s: %s", result.status, result.message)
    summary = {
        "status": result.status,
        "message": result.message,
        "config": config,
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "persafl": __version__,
        },
        "device": device,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "wall_seconds": time.perf_counter() - started,
        "final": result.rows[-1] if result.rows else {},
        "trace": trace.summary(),
        "updates_applied": result.updates_applied,
    }
    write_run_outputs(
        out,
        result.rows,
        _client_rows(partition, result),
        summary,
        metrics_columns=METRICS_COLUMNS,
        client_columns=CLIENT_COLUMNS,
    )
    return result


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
    """CLI entry point; returns the exit code (0 also for a diverged run)."""
    parser = argparse.ArgumentParser(prog="python -m persafl.train", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="run config (YAML)")
    source.add_argument(
        "--sweep",
        type=Path,
        help="sweep config (config/*.yaml): train its run named by --dataset, --method, --tau, "
        "--seed and --partition NAME (default: the data set's first partition)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--partition",
        help="with --config: a saved partition .npz to use; with --sweep: the partition's name",
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # Deterministic cuBLAS needs this before CUDA starts (harmless on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    # warn_only: an op without a deterministic kernel warns instead of failing the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: got {args.threads}, expected an integer >= 1")
    from persafl.data import DataError

    partition_file = Path(args.partition) if args.config and args.partition else None
    try:
        if args.sweep is not None:
            config = config_from_sweep(args.sweep, args)
        else:
            config = load_run_config(args.config)
        if args.threads is not None:
            config["threads"] = args.threads
        torch.set_num_threads(config["threads"])  # part of the run's identity (summary.json)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        # log lines go through tqdm.write, above the bar, instead of into it
        with logging_redirect_tqdm():
            result = train(config, args.out, partition_file, progress=progress)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # parameters checked by the data/partition/model builders
        print(f"error: {args.config or args.sweep}: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # --out: the run's files cannot be written there
        where = err.filename or args.out
        print(
            f"error: cannot write the run into --out {args.out} ({where}: {err.strerror}); "
            "give a writable folder",
            file=sys.stderr,
        )
        return 1
    log.info("%s: %s -> %s", result.status, args.config or args.sweep, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
