"""CPU used by the snakemake process itself, with and without persafl.scheduler_timer.

A toy workflow with the paper config's shape of waiting: many short jobs finish (each one an
event that wakes the scheduler) while long jobs wait for the cores. Snakemake 9 starts one more
1-second re-scheduling timer chain per such event (persafl/scheduler_timer.py); the patch keeps
one. The snakemake process's own user + system CPU (not its jobs') is sampled from
/proc/<pid>/stat every 0.2 s: the last sample before exit, and the rate over the second half of
the run (long jobs running, others waiting; DAG building and the burst of short jobs come first).

Usage: python benchmarks/scheduler_cpu.py [--fast 300] [--slow 12] [--slow-seconds 5]
       [--cores 2] [--out benchmarks/results]
Writes scheduler_cpu.{md,csv}. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEFILE = """\
if {patched}:
    from persafl import scheduler_timer
    scheduler_timer.install()
rule all:
    input: expand("out/f{{i}}.txt", i=range({fast})), expand("out/s{{i}}.txt", i=range({slow}))
rule fast:
    output: "out/f{{i}}.txt"
    priority: 1
    shell: "sleep 0.02; touch {{output}}"
rule slow:
    output: "out/s{{i}}.txt"
    shell: "sleep {slow_seconds}; touch {{output}}"
"""


def own_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` itself (children excluded), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, patched: bool) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="persafl-sched-"))
    try:
        (workdir / "Snakefile").write_text(
            SNAKEFILE.format(
                patched=patched, fast=args.fast, slow=args.slow, slow_seconds=args.slow_seconds
            )
        )
        snakemake = Path(sys.executable).with_name("snakemake")
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(snakemake), "--cores", str(args.cores), "-q", "all"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples = [(0.0, 0.0)]  # (seconds since start, own CPU seconds)
        while proc.poll() is None:
            sample = own_cpu_seconds(proc.pid)
            if sample is not None:
                samples.append((time.perf_counter() - start, sample))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        cpu = samples[-1][1]
        # the second half: long jobs running while others wait (DAG building and the burst of
        # short jobs are in the first)
        half = next(c for t, c in samples if t >= samples[-1][0] / 2)
        span = samples[-1][0] - next(t for t, c in samples if t >= samples[-1][0] / 2)
        if proc.returncode != 0:
            raise SystemExit(f"snakemake failed (rc {proc.returncode}) in {workdir}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "patched": patched,
        "jobs": args.fast + args.slow,
        "wall_s": round(wall, 2),
        "snakemake_cpu_s": round(cpu, 2),
        "cores_used_by_snakemake": round(cpu / wall, 3),
        "cores_used_second_half": round((cpu - half) / span, 3) if span > 0 else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", type=int, default=300)
    parser.add_argument("--slow", type=int, default=12)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    rows = [measure(args, patched) for patched in (False, True)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "scheduler_cpu.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import snakemake

    lines = [
        "# Snakemake's own CPU with and without persafl.scheduler_timer",
        "",
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; "
        f"{platform.processor() or platform.machine()}, snakemake {snakemake.__version__}, "
        f"--cores {args.cores}; {args.fast} jobs of 0.02 s and {args.slow} of "
        f"{args.slow_seconds:g} s (benchmarks/scheduler_cpu.py).",
        "",
        "| scheduler timers | jobs | wall s | snakemake CPU s | cores used by snakemake | "
        "in the second half |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = "one pending (patched)" if row["patched"] else "one chain per event (Snakemake)"
        lines.append(
            f"| {name} | {row['jobs']} | {row['wall_s']} | {row['snakemake_cpu_s']} | "
            f"{row['cores_used_by_snakemake']} | {row['cores_used_second_half']} |"
        )
    (args.out / "scheduler_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
