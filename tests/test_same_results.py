"""benchmarks/same_results.py: a rerun's tables against the committed ones, on a small git repo."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "same_results.py"
spec = importlib.util.spec_from_file_location("same_results", SCRIPT)
same_results = importlib.util.module_from_spec(spec)
sys.modules["same_results"] = same_results  # dataclasses look their module up
spec.loader.exec_module(same_results)

TABLE = "dataset,method,seed,personal_acc_ca,wall_seconds,git_commit,status\n" \
    "mnist,afl,0,0.9712345678901,491.5,abc1234,completed\n" \
    "mnist,afl,1,,488.0,abc1234,diverged\n"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "clone"
    (repo / "results" / "tables").mkdir(parents=True)
    (repo / "results" / "tables" / "final.csv").write_text(TABLE)
    (repo / "results" / "tables" / "other.csv").write_text("a,b\n1,x\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tables")
    return repo


def test_a_rerun_that_differs_only_in_timing_and_commit_is_equal(tmp_path):
    repo = make_repo(tmp_path)
    rerun = TABLE.replace("491.5", "455.0").replace("abc1234", "def5678")
    (repo / "results" / "tables" / "final.csv").write_text(rerun)
    verdicts = {v.path: v for v in
                (same_results.verdict(repo, "HEAD", p, 1e-12)
                 for p in same_results.committed_tables(repo, "HEAD"))}
    assert verdicts["results/tables/final.csv"].status == "equal"
    assert verdicts["results/tables/other.csv"].status == "same bytes"
    assert same_results.main(["--repo", str(repo)]) == 0


def test_a_changed_accuracy_a_lost_nan_and_a_missing_file_are_reported(tmp_path, capsys):
    repo = make_repo(tmp_path)
    rerun = TABLE.replace("0.9712345678901", "0.9712345678951").replace(",,488.0", ",0.5,488.0")
    (repo / "results" / "tables" / "final.csv").write_text(rerun)
    (repo / "results" / "tables" / "other.csv").unlink()
    v = same_results.verdict(repo, "HEAD", "results/tables/final.csv", 1e-12)
    assert v.status == "differs"
    assert "personal_acc_ca: 2 rows" in v.detail  # the 5e-12 gap and the NaN that became 0.5
    loose = same_results.verdict(repo, "HEAD", "results/tables/final.csv", 1.0)
    assert loose.status == "differs" and "max gap inf" in loose.detail  # NaN vs number
    assert same_results.verdict(repo, "HEAD", "results/tables/other.csv", 0).status == "missing"
    assert same_results.main(["--repo", str(repo)]) == 1
    assert "2 tables: 0 same bytes, 0 equal" in capsys.readouterr().out


def test_text_columns_rows_and_columns_must_match():
    ref = pd.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"]})
    assert same_results.compare_frames(ref, ref.copy(), 0.0) == ""
    assert same_results.compare_frames(ref, ref.assign(s=["x", "z"]), 0.0) == "s: 1 rows"
    assert "rows" in same_results.compare_frames(ref, ref.iloc[:1], 0.0)
    assert "columns differ" in same_results.compare_frames(ref, ref.assign(c=1), 0.0)
