"""Which code made a result: the git commit of a source tree, ``+dirty`` when it was modified.

Each run's summary.json records the commit of the code that trained it, the aggregated
``final.csv`` tables carry it per run (column ``git_commit``) and the manifest records the
commit it was written at, so a reader can check that every committed result came from a clean,
committed tree (tests/test_committed_figures.py does).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DIRTY = "+dirty"
# The workflow's outputs: committed, and rewritten by every run, so not part of "the code".
OUTPUTS = ("results", "paper_figures")


def git_commit(repo: str | Path) -> str:
    """HEAD of the git repository at ``repo``, or ``unknown`` outside a repository;
    ``+dirty`` if a tracked file outside the workflow's outputs (``results/``,
    ``paper_figures/``: a run rewrites them) differs from HEAD: code, configs, docs."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        excluded = [f":(exclude){top / name}" for name in OUTPUTS]
        status = git("status", "--porcelain", "--untracked-files=no", "--", str(top), *excluded)
        dirty = bool(status)
    except (OSError, subprocess.SubprocessError):
        dirty = False
    return (commit or "unknown") + (DIRTY if dirty and commit else "")


def run_commits(tables: str | Path) -> list[str]:
    """The distinct ``git_commit`` values of the per-run tables (every ``final.csv``) under
    ``tables``: the code that trained the runs they aggregate (``unknown`` for tables written
    before the column existed)."""
    import pandas as pd

    commits: set[str] = set()
    for path in sorted(Path(tables).rglob("final.csv")):
        columns = pd.read_csv(path, nrows=0).columns
        if "git_commit" not in columns:
            commits.add("unknown")
            continue
        values = pd.read_csv(path, usecols=["git_commit"], dtype=str)["git_commit"]
        commits.update(values.fillna("unknown"))
    return sorted(commits)
