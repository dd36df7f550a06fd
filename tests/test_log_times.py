"""benchmarks/log_times.py: per-rule wall clock from a Snakemake log, on a small log of the
format Snakemake 9 writes (two jobs at once, a per-group rule family, an unfinished job)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "log_times.py"
spec = importlib.util.spec_from_file_location("log_times", SCRIPT)
log_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(log_times)

LOG = """\
Building DAG of jobs...
[Fri Dec  4 15:06:31 2026]
localrule run_config:
    output: results/runs/a/run.yaml
    jobid: 7
    resources: tmpdir=/tmp
[Fri Dec  4 15:06:31 2026]
localrule train_mnist_path2_n30_afl:
    input: results/runs/a/run.yaml
    jobid: 3
    wildcards: dataset=mnist
[Fri Dec  4 15:06:32 2026]
Finished jobid: 7 (Rule: run_config)
1 of 4 steps (25%) done
[Fri Dec  4 15:06:40 2026]
rule train_fashion_mnist_dir0_5_all_persafl_me:
    jobid: 4
[Fri Dec  4 15:07:01 2026]
Finished jobid: 3 (Rule: train_mnist_path2_n30_afl)
2 of 4 steps (50%) done
[Fri Dec  4 15:07:31 2026]
Finished jobid: 4 (Rule: train_fashion_mnist_dir0_5_all_persafl_me)
3 of 4 steps (75%) done
[Fri Dec  4 15:07:31 2026]
localrule regime_summary:
    jobid: 9
"""


def test_each_job_lasts_from_its_start_to_its_finished_line() -> None:
    jobs, wall = log_times.parse(LOG.splitlines())
    seconds = dict(zip(jobs["jobid"], jobs["seconds"], strict=True))
    assert seconds[7] == 1.0 and seconds[3] == 30.0 and seconds[4] == 51.0
    assert pd.isna(jobs.set_index("jobid").loc[9, "end"])  # started, never finished
    assert wall == 60.0


def test_per_group_rules_sum_under_their_family_and_unfinished_jobs_are_apart() -> None:
    jobs, _ = log_times.parse(LOG.splitlines())
    table = log_times.per_rule(jobs).set_index("family")
    assert table.loc["train", "jobs"] == 2 and table.loc["train", "total_s"] == 81.0
    assert table.loc["train", "max_s"] == 51.0
    assert table.loc["run_config", "total_s"] == 1.0
    assert "regime_summary" not in table.index  # never finished: no seconds to add
    assert log_times.family("train") == "train" and log_times.family("tune_x") == "tune"
    assert log_times.family("regime_summary") == "regime_summary"


def test_a_file_that_is_not_a_snakemake_log_is_a_clear_error(tmp_path, capsys) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("nothing here\n")
    assert log_times.main([str(other)]) == 2
    assert "no jobs found" in capsys.readouterr().err
    assert log_times.main([str(tmp_path / "absent.log")]) == 2
    assert "no such log" in capsys.readouterr().err


def test_the_table_is_written_where_asked(tmp_path) -> None:
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    out = tmp_path / "times.md"
    assert log_times.main([str(log), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| train" in text and "3 jobs, 82 job-seconds; wall clock 1.0 min" in text
