"""Wall clock per rule of a Snakemake run, from its log (every rule, not only the ones with a
``benchmark:`` file).

    python benchmarks/log_times.py .snakemake/log/<run>.snakemake.log [--out FILE.md]

Snakemake logs a timestamp line (``[Fri Dec  4 15:06:31 2026]``) before every job's start
(``rule NAME:`` or ``localrule NAME:`` then ``jobid: N``) and before its end (``Finished jobid:
N (Rule: NAME)``). A job's seconds are end minus start (one-second resolution). Rules written
once per group (``train_<dataset>_<partition>_<method>``) are summed under their family
(``train``). Jobs that started and never finished (an interrupted run) are counted apart.
The wall clock is first to last timestamp; job-seconds over wall clock is the mean number of
jobs running at once.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
FAMILIES = ("train", "tune")  # rule families written once per group: <family>_<group parts>


def family(rule: str) -> str:
    """``train_mnist_path2_n30_afl`` -> ``train``; other rule names unchanged."""
    head = rule.split("_", 1)[0]
    return head if head in FAMILIES and rule != head else rule


def parse(lines: Iterable[str]) -> tuple[pd.DataFrame, float]:
    """One row per job (rule, family, jobid, start, end, seconds; end NaN if unfinished) and
    the run's wall clock in seconds (first to last timestamp)."""
    stamp: datetime | None = None
    first = last = None
    pending_rule: str | None = None
    jobs: dict[int, dict] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        match = STAMP.match(line)
        if match:
            stamp = datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            last = stamp
            continue
        match = START.match(line)
        if match:
            pending_rule = match.group(1)
            continue
        match = JOBID.match(line)
        if match and pending_rule is not None:
            jobs[int(match.group(1))] = {"rule": pending_rule, "start": stamp, "end": None}
            pending_rule = None
            continue
        match = FINISHED.match(line)
        if match and int(match.group(1)) in jobs:
            jobs[int(match.group(1))]["end"] = stamp
    rows = [
        {
            "rule": job["rule"],
            "family": family(job["rule"]),
            "jobid": jobid,
            "start": job["start"],
            "end": job["end"],
            "seconds": (job["end"] - job["start"]).total_seconds() if job["end"] else float("nan"),
        }
        for jobid, job in jobs.items()
    ]
    wall = (last - first).total_seconds() if first and last else 0.0
    columns = ["rule", "family", "jobid", "start", "end", "seconds"]
    return pd.DataFrame(rows, columns=columns), wall


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule family: finished jobs, job-seconds, mean and max seconds, unfinished jobs."""
    done = jobs[jobs["end"].notna()]
    table = done.groupby("family")["seconds"].agg(jobs="count", total_s="sum", mean_s="mean")
    table["max_s"] = done.groupby("family")["seconds"].max()
    table["unfinished"] = jobs[jobs["end"].isna()].groupby("family").size()
    table["unfinished"] = table["unfinished"].fillna(0).astype(int)
    return table.sort_values("total_s", ascending=False).reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="a .snakemake/log/*.snakemake.log file")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"log_times: no such log: {args.log}", file=sys.stderr)
        return 2
    jobs, wall = parse(args.log.read_text().splitlines())
    if jobs.empty:
        print(f"log_times: {args.log}: no jobs found (not a Snakemake log?)", file=sys.stderr)
        return 2
    table = per_rule(jobs)
    busy = table["total_s"].sum()
    text = (
        table.to_markdown(index=False, floatfmt=".1f")
        + f"\n\n{int(table['jobs'].sum())} jobs, {busy:,.0f} job-seconds; wall clock "
        f"{wall / 60:.1f} min ({busy / wall if wall else 0:.2f} jobs running on average).\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
