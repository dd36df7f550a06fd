"""Did a rerun reproduce the committed tables? Compares each committed CSV under
``results/tables/`` (as of a git revision) with the same file in a working tree.

    python benchmarks/same_results.py [--repo DIR] [--ref HEAD] [--tol 1e-12] [PATH ...]

Run it in a clone after ``snakemake --cores N`` there: the workflow rewrote the tables, and
``git`` still holds the committed ones. Columns that record how or when a run was made, not
what it computed (``wall_seconds``, ``git_commit``), are left out; numbers must agree to
``--tol`` (absolute; NaN equals NaN), text exactly, row for row. A file the rerun did not
rewrite is reported as such (its bytes are the committed ones). Exit status 1 if any file
differs or is missing.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

IGNORED = ("wall_seconds", "git_commit")


@dataclass(frozen=True)
class Verdict:
    path: str
    status: str  # "same bytes", "equal", "differs", "missing"
    detail: str = ""


def compare_frames(ref: pd.DataFrame, new: pd.DataFrame, tol: float) -> str:
    """'' when equal (IGNORED columns left out), else what differs."""
    ref = ref.drop(columns=[c for c in IGNORED if c in ref.columns])
    new = new.drop(columns=[c for c in IGNORED if c in new.columns])
    if list(ref.columns) != list(new.columns):
        return f"columns differ: {sorted(set(ref.columns) ^ set(new.columns))}"
    if len(ref) != len(new):
        return f"{len(ref)} rows committed, {len(new)} now"
    problems = []
    for column in ref.columns:
        a, b = ref[column], new[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            both_nan = np.isnan(x) & np.isnan(y)
            gap = np.where(both_nan, 0.0, np.abs(x - y))
            gap = np.where(np.isnan(gap), np.inf, gap)  # NaN on one side only
            bad = gap > tol
            if bad.any():
                problems.append(f"{column}: {int(bad.sum())} rows, max gap {gap.max():.3g}")
        else:
            bad = ~((a == b) | (a.isna() & b.isna()))
            if bad.any():
                problems.append(f"{column}: {int(bad.sum())} rows")
    return "; ".join(problems)


def committed_tables(repo: Path, ref: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", ref, "results/tables/"],
        capture_output=True, text=True, check=True,
    ).stdout
    return sorted(p for p in out.splitlines() if p.endswith(".csv"))


def committed_bytes(repo: Path, ref: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"], capture_output=True, check=True
    ).stdout


def verdict(repo: Path, ref: str, path: str, tol: float) -> Verdict:
    file = repo / path
    if not file.exists():
        return Verdict(path, "missing")
    old, now = committed_bytes(repo, ref, path), file.read_bytes()
    if old == now:
        return Verdict(path, "same bytes")
    detail = compare_frames(
        pd.read_csv(io.BytesIO(old)), pd.read_csv(io.BytesIO(now)), tol
    )
    return Verdict(path, "differs", detail) if detail else Verdict(path, "equal")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="tables to check (default: every committed CSV)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--tol", type=float, default=1e-12)
    args = parser.parse_args(argv)
    paths = args.paths or committed_tables(args.repo, args.ref)
    verdicts = [verdict(args.repo, args.ref, p, args.tol) for p in paths]
    for v in verdicts:
        print(f"{v.status:10s} {v.path}" + (f"  ({v.detail})" if v.detail else ""))
    bad = [v for v in verdicts if v.status in ("differs", "missing")]
    counts = {s: sum(v.status == s for v in verdicts) for s in ("same bytes", "equal")}
    print(
        f"{len(verdicts)} tables: {counts['same bytes']} same bytes, {counts['equal']} equal "
        f"but for {', '.join(IGNORED)} (tolerance {args.tol:g}), {len(bad)} differ or missing"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
