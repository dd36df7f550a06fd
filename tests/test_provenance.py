"""persafl.provenance: the commit of a source tree, and the run commits of per-run tables."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from persafl.provenance import DIRTY, git_commit, run_commits


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def test_git_commit_is_head_and_marks_a_modified_tree(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("new\n")  # untracked files do not count
    assert git_commit(tmp_path) == head
    (tmp_path / "results").mkdir()  # the workflow's outputs may change: still clean
    (tmp_path / "results" / "t.csv").write_text("x\n1\n")
    _git(tmp_path, "add", "results/t.csv")
    _git(tmp_path, "commit", "-q", "-m", "two")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "results" / "t.csv").write_text("x\n2\n")
    assert git_commit(tmp_path) == head
    assert git_commit(tmp_path / "results") == head  # from a subfolder too
    (tmp_path / "a.txt").write_text("2\n")  # the code changed: dirty
    assert git_commit(tmp_path) == head + DIRTY
    assert git_commit(tmp_path / "results") == head + DIRTY


def test_git_commit_outside_a_repository_is_unknown(tmp_path):
    assert git_commit(tmp_path / "nowhere") == "unknown"


def test_run_commits_reads_every_final_table(tmp_path):
    a = tmp_path / "dataset~x" / "final.csv"
    b = tmp_path / "staleness" / "final.csv"
    old = tmp_path / "dataset~y" / "final.csv"
    for path in (a, b, old):
        path.parent.mkdir(parents=True)
    pd.DataFrame({"seed": [0, 1], "git_commit": ["c1", "c2"]}).to_csv(a, index=False)
    pd.DataFrame({"seed": [0], "git_commit": ["c1+dirty"]}).to_csv(b, index=False)
    pd.DataFrame({"seed": [0]}).to_csv(old, index=False)  # written before the column existed
    (tmp_path / "curves.csv").write_text("git_commit\nnot-a-final-table\n")
    assert run_commits(tmp_path) == ["c1", "c1+dirty", "c2", "unknown"]
    assert run_commits(tmp_path / "empty") == []
