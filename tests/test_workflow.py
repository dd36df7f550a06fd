"""The Snakemake workflow: lint, dry runs, schema errors, an interrupted-then-resumed tiny
real run (no mocks), the report, and (marked slurm) the same run through SLURM.

Every run happens in a temporary --directory, so the repository's results/ stay clean.
CI: ``pytest -m slow tests/test_workflow.py`` (and ``-m slurm`` after .ci/slurm-up.sh).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import slurm_answers
from persafl import sweep

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"
pytestmark = pytest.mark.slow


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]


def env() -> dict[str, str]:
    # the rules call `python -m persafl...`: the interpreter running the tests must be first
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def run(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(workdir, *args),
        cwd=REPO,
        env=env(),
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def job_counts(output: str) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def train_jobs(counts: dict[str, int]) -> int:
    """Training jobs in a job count: one rule per group (train_<dataset>_<partition>_<method>)."""
    return sum(n for rule, n in counts.items() if rule.startswith("train_"))


def dry_run(workdir: Path, *args: str) -> dict[str, int]:
    res = run(workdir, "-n", "--quiet=rules", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return job_counts(res.stdout + res.stderr)


def test_lint_is_clean(tmp_path):
    res = run(tmp_path, "--lint")
    assert res.returncode == 0, res.stdout + res.stderr


def test_dry_run_of_paper_config_lists_the_full_sweep(tmp_path):
    counts = dry_run(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"))
    cfg = sweep.load_sweep_config([REPO / "config" / "config.yaml"])
    # synthetic, mnist, fashion_mnist x one partition x (4 methods x 4 bounds + local) x 5 seeds
    assert len(sweep.run_keys(cfg)) == 3 * 1 * (4 * 4 + 1) * 5
    # trained in one group per data set, partition and method
    assert train_jobs(counts) == 3 * 1 * 5 == len(sweep.group_keys(cfg))
    assert counts["run_config"] == len(sweep.run_keys(cfg))
    assert counts["partition"] == 3 * 5
    assert counts["fetch_data"] == 2  # mnist and fashion_mnist; synthetic is generated


def test_default_config_is_the_paper_config(tmp_path):
    counts = dry_run(tmp_path)
    assert train_jobs(counts) == 15
    assert counts["run_config"] == 255


SETUP_PRIORITY = 10**7  # workflow/rules/common.smk


def job_priorities(output: str) -> dict[str, set[int]]:
    """Rule name -> the priorities its jobs print in a dry run (0 when none is printed)."""
    out: dict[str, set[int]] = {}
    for block in re.split(r"^\[[^\]\n]+\]$", output, flags=re.M):  # a timestamp starts a job
        rule = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if rule:
            priority = re.search(r"^\s+priority: (-?\d+)$", block, re.M)
            out.setdefault(rule.group(1), set()).add(int(priority.group(1)) if priority else 0)
    return out


def upstream_rules(rulegraph: str, targets) -> set[str]:
    """Rules that feed, directly or not, any rule for which ``targets(name)`` holds."""
    labels = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', rulegraph, re.M))
    parents: dict[str, set[str]] = {}
    for source, sink in re.findall(r"^\s*(\d+) -> (\d+)", rulegraph, re.M):
        parents.setdefault(labels[sink], set()).add(labels[source])
    found: set[str] = set()
    todo = [name for name in labels.values() if targets(name)]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in found and not targets(parent):
                found.add(parent)
                todo.append(parent)
    return found


def test_every_job_a_training_group_waits_for_runs_before_any_group(tmp_path):
    # Snakemake's priority is per job: a setup job left at 0 (the data fetch was, until
    # 2026-12-04) waits behind every ready training group, and the groups that need it start
    # last, whatever their own priority.
    config = ["--configfile", str(REPO / "config" / "config.yaml")]
    graph = run(tmp_path, "-n", "--rulegraph", *config)
    dry = run(tmp_path, "-n", *config)
    assert graph.returncode == 0 and dry.returncode == 0, graph.stderr + dry.stderr
    training = re.compile(r"(train|tune)_\w+").fullmatch
    setup = upstream_rules(graph.stdout, training)
    assert {"fetch_data", "partition", "run_config", "tuning_select"} <= setup
    priorities = job_priorities(dry.stdout + dry.stderr)
    assert {rule: priorities[rule] for rule in setup} == {rule: {SETUP_PRIORITY} for rule in setup}
    groups = {p for rule, ps in priorities.items() if training(rule) for p in ps}
    assert 0 < min(groups) and max(groups) < SETUP_PRIORITY


def test_partition_figure_needs_no_training(tmp_path):
    counts = dry_run(
        tmp_path, "paper_figures/fig_partition_synthetic.pdf", "--configfile", str(TEST_CONFIG)
    )
    assert train_jobs(counts) == 0
    assert counts["partition"] == 1


def test_accuracy_figure_trains_only_its_groups(tmp_path):
    """One figure pulls in the groups holding its runs: its data set's methods, every bound."""
    counts = dry_run(
        tmp_path, "paper_figures/fig_accuracy_synthetic.pdf", "--configfile", str(TEST_CONFIG)
    )
    cfg = sweep.load_sweep_config([TEST_CONFIG])
    assert train_jobs(counts) == len(cfg["methods"]) == 4
    assert counts["partition"] == len(cfg["seeds"])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"staleness_bound": [0, 4]}, "staleness_bound"),
        ({"methods": ["afl", "fedprox"]}, "fedprox"),
        ({"figures": {"accuracy_tau": 64}}, "accuracy_tau"),
    ],
)
def test_schema_rejects_a_bad_config_by_name(tmp_path, change, named):
    bad = yaml.safe_load(TEST_CONFIG.read_text())
    bad.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = run(tmp_path, "-n", "--configfile", str(path))
    assert res.returncode != 0
    assert named in res.stdout + res.stderr


def test_command_line_config_overrides_reach_the_run_configs(tmp_path):
    # (snakemake parses list values of --config as strings: lists belong in a config file)
    target = "results/runs/dataset~synthetic/partition~natural/method~afl/tau~4/seed~1/run.yaml"
    res = run(
        tmp_path,
        target,
        "--cores",
        "1",
        "--configfile",
        str(TEST_CONFIG),
        "--config",
        "backend=sequential",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert yaml.safe_load((tmp_path / target).read_text())["backend"] == "sequential"


# ---- a tiny real run, interrupted and resumed ---------------------------------------------


def expected_summaries(workdir: Path) -> list[Path]:
    cfg = sweep.load_sweep_config([TEST_CONFIG])
    return [workdir / sweep.run_dir(k) / "summary.json" for k in sweep.run_keys(cfg)]


def incomplete_outputs(workdir: Path) -> set[str]:
    """Outputs snakemake marks as incomplete (jobs started and not recorded as finished)."""
    return {
        base64.urlsafe_b64decode(f.name).decode()
        for f in (workdir / ".snakemake" / "incomplete").glob("*")
        if f.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Finish one training group, then start the whole tiny workflow and kill it (snakemake
    and its jobs) while another group trains; check what it left, then resume. Returns
    (workdir, facts).

    Deterministic by construction: the finished group comes from a first, complete invocation
    (not from racing the kill against a job's end, which once found no group finished on a
    loaded machine), and the kill waits for a training job to be marked running."""
    workdir = tmp_path_factory.mktemp("tiny")
    summaries = expected_summaries(workdir)
    cfg = sweep.load_sweep_config([TEST_CONFIG])
    first = sweep.group_keys(cfg)[0]
    first_targets = [f"{sweep.run_dir(k)}/summary.json" for k in sweep.group_runs(cfg, first)]
    facts: dict = {"first_group": first}
    t0 = time.monotonic()
    res = run(workdir, "--cores", "2", *first_targets, "--configfile", str(TEST_CONFIG))
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    proc = subprocess.Popen(
        snakemake_cmd(workdir, "--cores", "2", "--configfile", str(TEST_CONFIG)),
        cwd=REPO,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill once a training job has started (its summaries are marked incomplete)
        while time.monotonic() - t0 < 600:
            assert proc.poll() is None, "the workflow ended before it could be interrupted"
            marked = incomplete_outputs(workdir)
            if any(str(p.relative_to(workdir)) in marked for p in summaries):
                break
            time.sleep(0.1)
        else:
            pytest.fail("no training job started within 600 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: snakemake and its running jobs
        proc.wait()
    present = [p for p in summaries if p.exists()]
    # nothing half-written looks complete: each summary.json present is whole and completed
    for p in present:
        assert json.loads(p.read_text())["status"] in ("completed", "diverged")
        assert (p.parent / "metrics.csv").stat().st_size > 0
    # a job killed after writing summary.json but before snakemake recorded it stays marked
    # incomplete (snakemake reruns it: it cannot know); the others count as done
    incomplete = incomplete_outputs(workdir)
    done = [p for p in present if str(p.relative_to(workdir)) not in incomplete]
    facts["done_before_kill"] = len(done)
    facts["done_runs"] = set(done)
    facts["running_at_kill"] = len(
        [p for p in summaries if str(p.relative_to(workdir)) in incomplete]
    )
    # after a crash the directory stays locked: a user runs --unlock once, then reruns
    assert run(workdir, "--unlock", "--configfile", str(TEST_CONFIG)).returncode == 0
    facts["rerun_counts"] = dry_run(workdir, "--configfile", str(TEST_CONFIG))
    t1 = time.monotonic()
    res = run(workdir, "--cores", "2", "--configfile", str(TEST_CONFIG), timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    facts["resume_log"] = res.stdout + res.stderr
    facts["seconds_first"], facts["seconds_resume"] = t1 - t0, time.monotonic() - t1
    print(f"tiny workflow: {t1 - t0:.0f} s until killed, {time.monotonic() - t1:.0f} s resume")
    return workdir, facts


def test_interrupted_run_reruns_only_missing_jobs(tiny_run):
    workdir, facts = tiny_run
    n_runs = len(expected_summaries(workdir))
    assert facts["done_before_kill"] >= 1
    assert facts["running_at_kill"] >= 1  # the kill did interrupt training
    cfg = sweep.load_sweep_config([TEST_CONFIG])
    groups = {
        g: [workdir / sweep.run_dir(k) / "summary.json" for k in sweep.group_runs(cfg, g)]
        for g in sweep.group_keys(cfg)
    }
    # a group is done when all its runs are: those are kept, the others rerun whole
    done = facts["done_runs"]
    unfinished = [g for g, paths in groups.items() if not all(p in done for p in paths)]
    assert 0 < len(unfinished) < len(groups)
    assert facts["first_group"] not in unfinished  # the group finished first is kept
    assert sum(len(groups[g]) for g in unfinished) == n_runs - facts["done_before_kill"]
    assert train_jobs(facts["rerun_counts"]) == len(unfinished)
    started = re.findall(r"rule (train_\w+):", facts["resume_log"])
    assert sorted(started) == sorted(sweep.group_rule_name(g) for g in unfinished)


def test_tiny_run_writes_every_figure_and_table(tiny_run):
    workdir, _ = tiny_run
    paper = workdir / "paper_figures"
    for kind in ("accuracy", "staleness", "partition"):
        for ext in ("pdf", "png"):
            f = paper / f"fig_{kind}_synthetic.{ext}"
            assert f.stat().st_size > 0, f
    for ext in ("csv", "md", "tex"):
        assert (paper / f"table_final.{ext}").stat().st_size > 0
    assert all(p.exists() for p in expected_summaries(workdir))
    cfg = sweep.load_sweep_config([TEST_CONFIG])
    table = pd.read_csv(paper / "table_final.csv")
    personalized = [m for m in cfg["methods"] if m != "local"]
    assert len(table) == len(personalized) * len(cfg["staleness_bounds"])
    assert set(table["method"]) == set(personalized)
    manifest = json.loads((paper / "manifest.json").read_text())
    assert manifest["config_hash"] == sweep.config_hash(cfg)
    assert {f["file"] for f in manifest["figures"]} >= {"fig_accuracy_synthetic.pdf"}


def test_nothing_left_to_do_after_the_run(tiny_run):
    workdir, _ = tiny_run
    res = run(workdir, "-n", "--configfile", str(TEST_CONFIG))
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def test_moving_or_splitting_the_config_reruns_nothing(tiny_run, tmp_path):
    """Rules depend on each run's resolved config, not on where the config files are: the same
    settings in another file, or split over two merged files, leave every run up to date."""
    workdir, _ = tiny_run
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(cfg))
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text(yaml.safe_dump({"seeds": cfg.pop("seeds")}))
    rest = tmp_path / "rest.yaml"
    rest.write_text(yaml.safe_dump(cfg))
    for files in ([str(moved)], [str(rest), str(seeds)]):
        counts = dry_run(workdir, "--configfile", *files)
        assert train_jobs(counts) == 0 and counts.get("run_config", 0) == 0, counts


def test_a_changed_run_config_retrains_only_its_group(tiny_run, tmp_path):
    """One method's hyperparameter changed: its group's runs get new configs and that one
    group retrains; every other group stays up to date."""
    workdir, _ = tiny_run
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["datasets"]["synthetic"]["method_hp"]["persafl_me"]["moreau_lambda"] = 10.0
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    res = run(workdir, "-n", "--configfile", str(changed))
    assert res.returncode == 0, res.stdout + res.stderr
    counts = job_counts(res.stdout + res.stderr)
    assert {r: n for r, n in counts.items() if r.startswith("train_")} == {
        "train_synthetic_natural_persafl_me": 1
    }
    assert counts["run_config"] == len(cfg["staleness_bounds"]) * len(cfg["seeds"])


def test_report_is_written(tiny_run):
    workdir, _ = tiny_run
    res = run(workdir, "--configfile", str(TEST_CONFIG), "--report", "report.html")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (workdir / "report.html").stat().st_size > 10_000
    # every job of the config that ran has metadata: no "Missing metadata" warnings
    assert "Missing metadata" not in res.stdout + res.stderr
    # the final table is shown inline (as HTML), not offered as a download only
    assert "table_final.html" in (workdir / "report.html").read_text(errors="replace")


# ---- SLURM ---------------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_answers(), reason="no SLURM answers (start one with .ci/slurm-up.sh)")
def test_tiny_workflow_runs_through_slurm(tmp_path):
    one_seed = yaml.safe_load(TEST_CONFIG.read_text())
    one_seed["seeds"] = [0]  # each SLURM job costs ~15 s of polling: keep it to 7 runs
    config = tmp_path / "one_seed.yaml"
    config.write_text(yaml.safe_dump(one_seed))
    t0 = time.monotonic()
    res = run(
        tmp_path,
        "--profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--configfile",
        str(config),
        timeout=900,
    )
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    print(f"tiny workflow through SLURM: {time.monotonic() - t0:.0f} s")
    assert (tmp_path / "paper_figures" / "manifest.json").exists()
    job_ids = set(re.findall(r"SLURM jobid (\d+)", log, flags=re.IGNORECASE))
    cfg = sweep.load_sweep_config([config])
    assert len(job_ids) >= len(sweep.run_keys(cfg)), log[-3000:]
    jobcomp = Path("/var/log/slurm/jobcomp.log")
    if jobcomp.exists():  # slurm-up.sh's jobcomp/filetxt: every finished job is listed
        text = jobcomp.read_text()
        assert all(f"JobId={j} " in text for j in job_ids)
