"""The CLI of :mod:`persafl.sweep` (run as ``python -m persafl.sweep``; usage there).

Subcommands: ``run-config`` and ``partition-config`` write one run config (YAML) resolved from
the sweep config files; ``write`` writes an already resolved run config given as JSON (what the
workflow's light config rules call: their only params are the resolved config, so a rule reruns
exactly when its run's config changes, not when the config files move or are split); ``list``
prints every run directory of the sweep. Errors (bad
config, unknown run) print one line naming the key or value and return 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from persafl import sweep
from persafl.io import atomic_write_text


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` (repeatable), ``--override`` and ``--schema``: the resolved sweep config
    exactly as the workflow sees it (see common.smk's ``_sweep_args``)."""
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help="sweep config YAML (repeat to merge, later wins)",
    )
    parser.add_argument(
        "--override",
        default="{}",
        help="JSON mapping merged over the files (snakemake --config values)",
    )
    parser.add_argument(
        "--schema", default=str(sweep.SCHEMA), help="JSON schema of the sweep config"
    )


def _write_yaml(obj: Any, out: str) -> None:
    atomic_write_text(out, yaml.safe_dump(obj, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m persafl.sweep", description=sweep.__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_config_arguments(common)
    run = sub.add_parser("run-config", parents=[common], help="write one run's config")
    for name in ("--dataset", "--partition", "--method"):
        run.add_argument(name, required=True)
    run.add_argument("--tau", type=int, required=True)
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--out", required=True)
    part = sub.add_parser("partition-config", parents=[common], help="write a partition's config")
    part.add_argument("--dataset", required=True)
    part.add_argument("--partition", required=True)
    part.add_argument("--seed", type=int, required=True)
    part.add_argument("--out", required=True)
    sub.add_parser("list", parents=[common], help="print the run directories")
    write = sub.add_parser("write", help="write a resolved run config given as JSON")
    write.add_argument("--json", required=True, help="the resolved run config (a JSON object)")
    write.add_argument("--out", required=True)
    write.add_argument("--tuned", help="a tuning selection (YAML) whose hp replace the config's")
    args = parser.parse_args(argv)
    if args.command == "write":
        return _write_resolved(args.json, args.out, args.tuned)
    try:
        cfg = sweep.load_sweep_config(args.config, json.loads(args.override), args.schema)
        if args.command == "run-config":
            resolved = sweep.run_config(
                cfg, args.dataset, args.partition, args.method, args.tau, args.seed
            )
            _write_yaml(resolved, args.out)
        elif args.command == "partition-config":
            resolved = sweep.partition_run_config(cfg, args.dataset, args.partition, args.seed)
            _write_yaml(resolved, args.out)
        else:
            print("\n".join(sweep.run_dir(k) for k in sweep.run_keys(cfg)))
    except (sweep.SweepError, OSError, yaml.YAMLError, json.JSONDecodeError) as err:
        print(f"persafl.sweep: {err}", file=sys.stderr)
        return 2
    return 0


def _write_resolved(text: str, out: str, tuned: str | None = None) -> int:
    try:
        resolved = json.loads(text)
    except json.JSONDecodeError as err:
        print(f"persafl.sweep write: --json is not valid JSON ({err})", file=sys.stderr)
        return 2
    if not isinstance(resolved, dict):
        print(f"persafl.sweep write: --json must be an object, got {text[:80]!r}", file=sys.stderr)
        return 2
    if tuned:  # persafl.tuning: the selected hyperparameters replace the configured ones
        from persafl.tuning import apply_selection

        resolved = apply_selection(resolved, yaml.safe_load(Path(tuned).read_text()))
    _write_yaml(resolved, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
