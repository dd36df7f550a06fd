"""What bad input gets (README "What bad input gets"): one test per case of issue 16, items
1-12. Each case fails with one line that names the file or key and the fix, or (item 1, 3, 5)
is caught where it used to pass silently."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from persafl.aggregate import AggregationError
from persafl.aggregate_cli import load_runs
from persafl.run_files import write_run_outputs

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"

COLUMNS = ["update", "acc"]


def _fake_run(root: Path) -> Path:
    run_dir = root / "dataset~synthetic/partition~natural/method~afl/tau~0/seed~0"
    run_dir.mkdir(parents=True)
    from persafl.aggregate import METRIC_COLUMNS

    rows = [{c: float(u) for c in METRIC_COLUMNS} | {"update": u} for u in (0, 10, 20)]
    write_run_outputs(
        run_dir,
        rows,
        [{"client": 0, "acc": 0.5}],
        {"status": "completed"},
        metrics_columns=METRIC_COLUMNS,
        client_columns=["client", "acc"],
    )
    return run_dir


# ---- 1: a truncated metrics.csv stops aggregation, naming the run -----------------------


def test_summary_records_row_counts_and_checksums(tmp_path):
    run_dir = _fake_run(tmp_path)
    files = json.loads((run_dir / "summary.json").read_text())["files"]
    assert files["metrics.csv"]["rows"] == 3 and files["clients.csv"]["rows"] == 1
    assert len(files["metrics.csv"]["sha256"]) == 64
    assert len(load_runs([run_dir])) == 1


@pytest.mark.parametrize("cut", [1, 20])
def test_truncated_metrics_stop_aggregation_naming_the_run(tmp_path, cut):
    run_dir = _fake_run(tmp_path)
    metrics = run_dir / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes()[:-cut])
    with pytest.raises(AggregationError, match="rerun") as err:
        load_runs([run_dir])
    assert str(run_dir) in str(err.value) and "\n" not in str(err.value)


def test_edited_clients_csv_stops_aggregation(tmp_path):
    run_dir = _fake_run(tmp_path)
    (run_dir / "clients.csv").write_text("client,acc\n0,0.9\n")
    with pytest.raises(AggregationError, match="clients.csv"):
        load_runs([run_dir])


def test_aggregation_rules_depend_on_the_run_files():
    from persafl import sweep

    key = sweep.RunKey("synthetic", "natural", "afl", 0, 0)
    names = [Path(p).name for p in sweep.run_files(key)]
    assert names == ["metrics.csv", "clients.csv", "summary.json"]
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    # a cell (one dataset, partition, method, tau over the seeds) reads every run file; the
    # tables above it read the cells' tables
    body = common.split("def cell_runs(")[1].split("\ndef ")[0]
    assert "run_files(" in body
    rules = (REPO / "workflow" / "rules" / "aggregate.smk").read_text()
    assert "rule aggregate_cell:\n    input:\n        cell_runs," in rules


# ---- 2: NaN and infinity are rejected wherever a number is read ----------------------------


def _sweep(**changes):
    import copy

    import yaml

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    ds = cfg["datasets"]["synthetic"]
    for key, value in changes.items():
        section, _, name = key.partition("__")
        ds[section][name] = value
    return copy.deepcopy(cfg)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["hp__local_lr", "params__alpha"])
def test_non_finite_numbers_fail_the_sweep_config(key, value):
    from persafl import sweep

    with pytest.raises(sweep.SweepError, match="finite|minimum") as err:
        sweep.validate(_sweep(**{key: value}))
    assert key.split("__")[1] in str(err.value)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_fail_the_run_config(tmp_path, value):
    from persafl.config import ConfigError, load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(f"method: {{name: afl, hp: {{local_lr: {value}}}}}\n")
    with pytest.raises(ConfigError, match="method.hp.local_lr.*finite"):
        load_run_config(path)
    path.write_text(f"dataset: {{name: synthetic, params: {{alpha: {value}, beta: 0.5}}}}\n")
    with pytest.raises(ConfigError, match="dataset.params.alpha"):
        load_run_config(path)


# ---- 3: divergence is visible: left out of means, counted, warned about, optionally fatal --


@pytest.fixture()
def with_diverged(tmp_path):
    from test_aggregate import write_run

    root = tmp_path / "runs"
    dirs = [
        write_run(root, "afl", 4, 0, personal=0.7, glob=0.70, majority=0.3),
        write_run(root, "afl", 4, 1, personal=0.7, glob=0.72, majority=0.3),
        write_run(root, "afl", 4, 2, personal=0.1, glob=0.10, majority=0.3, status="diverged"),
    ]
    return dirs


def test_diverged_runs_are_left_out_of_means_and_counted(with_diverged):
    from persafl.aggregate import final_table, summary_table

    table = summary_table(final_table(load_runs(with_diverged)))
    row = table.iloc[0]
    assert row["n_seeds"] == 3 and row["n_diverged"] == 1
    assert row["acc_mean"] == pytest.approx(0.71)


def test_figures_mark_and_leave_out_diverged_runs(with_diverged):
    from persafl.aggregate import curves_table, final_table
    from persafl.plotting import accuracy_figure, staleness_figure

    runs = load_runs(with_diverged)
    for fig in (
        accuracy_figure(curves_table(runs), "synthetic", 4),
        staleness_figure(final_table(runs), "synthetic"),
    ):
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert any("1 div." in label for label in labels), labels
    line = next(ln for ln in accuracy_figure(curves_table(runs), "synthetic", 4).axes[0].lines)
    assert line.get_ydata()[-1] == pytest.approx(71.0)


def test_fail_on_divergence_fails_aggregation_and_the_warning_lists_runs(
    with_diverged, tmp_path, capsys
):
    from persafl.aggregate_cli import divergence_summary, main

    out = tmp_path / "tables"
    runs = [str(d) for d in with_diverged]
    assert main(["--runs", *runs, "--out-dir", str(out)]) == 0
    assert main(["--runs", *runs, "--out-dir", str(out / "x"), "--fail-on-divergence"]) == 1
    assert "fail_on_divergence" in capsys.readouterr().err and not (out / "x").exists()
    text = divergence_summary(str(d / "summary.json") for d in with_diverged)
    assert text is not None and "1 of 3 run(s) diverged" in text and "seed~2" in text
    assert divergence_summary(str(d / "summary.json") for d in with_diverged[:2]) is None


# ---- 4: the schema and training agree; infeasible partitions stop before any job -----------


def test_schema_rejects_what_training_rejects():
    from persafl import sweep

    with pytest.raises(sweep.SweepError, match="eval_adapt_steps"):
        sweep.validate(_sweep(hp__eval_adapt_steps=0))


def test_every_schema_hp_minimum_is_accepted_by_the_run_config():
    import yaml

    from persafl.config import resolve_run_config

    schema = yaml.safe_load(sweep_schema().read_text())
    for name, spec in schema["$defs"]["hp"]["properties"].items():
        if spec.get("type") not in ("integer", "number"):
            continue  # named choices (aggregation, adapt_on, hvp, ...) have no minimum
        low = spec.get("minimum", spec.get("exclusiveMinimum", 0) + 1e-3)
        value = int(low) if spec["type"] == "integer" else float(low)
        for method in ("afl", "persafl_me", "persafl_maml_hf"):
            try:
                resolve_run_config({"method": {"name": method, "hp": {name: value}}, **SCHEDULE})
            except ValueError as err:
                if "unknown" not in str(err) and "does not" not in str(err):
                    raise AssertionError(f"{name}={value} passes the schema only: {err}") from err


SCHEDULE = {"schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 1}}


def sweep_schema() -> Path:
    return REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize(
    ("part", "named"),
    [
        ({"scheme": "iid", "num_clients": 5000}, "num_clients"),
        ({"scheme": "dirichlet", "num_clients": 500, "params": {"dirichlet_alpha": 0.1}}, "500"),
        ({"scheme": "natural", "num_clients": 30}, "natural clients"),
        (
            {"scheme": "pathological", "num_clients": 4, "params": {"classes_per_client": 2}},
            "unassigned",
        ),
    ],
)
def test_infeasible_partitions_stop_before_any_job_in_one_line(part, named):
    from persafl import sweep

    cfg = _sweep()
    cfg["datasets"]["synthetic"]["partitions"]["bad"] = part
    with pytest.raises(sweep.SweepError, match=named) as err:
        sweep.validate(cfg)
    assert "partitions.bad" in str(err.value) and len(str(err.value)) < 300


def test_a_partition_leaving_clients_without_data_fails_briefly():
    import numpy as np

    from persafl.partition import partition_dataset

    labels = np.arange(100) % 10
    with pytest.raises(ValueError, match="no training samples") as err:
        partition_dataset(labels, None, "iid", 5000, 0)
    assert len(str(err.value)) < 200


# ---- 5: the thread count is part of a run's identity ---------------------------------------


def test_thread_count_is_in_the_run_config_so_a_change_reruns():
    from persafl import sweep

    one = sweep.run_config(sweep.validate(_sweep()), "synthetic", "natural", "afl", 0, 0)
    two = sweep.run_config(
        sweep.validate(_sweep(resources__threads=2)), "synthetic", "natural", "afl", 0, 0
    )
    assert one["threads"] == 1 and two["threads"] == 2
    rule = (REPO / "workflow" / "rules" / "train.smk").read_text()
    assert "--threads {threads}" not in rule  # snakemake scales {threads} down to --cores


def test_train_uses_the_configs_threads_not_torchs_default(tmp_path):
    import torch
    import yaml

    from persafl.train import main

    before = torch.get_num_threads()
    config = {
        "dataset": {
            "name": "synthetic",
            "params": {"alpha": 0.5, "beta": 0.5, "num_clients": 4, "max_client_samples": 60},
        },
        "model": {"name": "logistic"},
        "schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 2},
        "device": "cpu",
    }
    path = tmp_path / "run.yaml"
    try:
        for threads in (None, 2):
            if threads:
                config["threads"] = threads
            path.write_text(yaml.safe_dump(config))
            torch.set_num_threads(3)
            assert main(["--config", str(path), "--out", str(tmp_path / "out")]) == 0
            summary = json.loads((tmp_path / "out" / "summary.json").read_text())
            assert summary["threads"] == (threads or 1) == summary["config"]["threads"]
    finally:
        torch.set_num_threads(before)


# ---- 6: a figure is never drawn from the tables of another config --------------------------


def test_partition_figure_refuses_a_table_of_another_config(tmp_path, capsys):
    from persafl.figures import main

    # a table of 100 clients written here: the checkout's results/tables/partition_synthetic.csv
    # is rewritten by `make reproduce` (30 clients), and the README runs that before `make test`
    table = tmp_path / "partition_synthetic.csv"
    rows = ["client," + ",".join(f"class_{c}" for c in range(10))]
    rows += [f"{i}," + ",".join("5" if c in (i % 10, (i + 1) % 10) else "0" for c in range(10))
             for i in range(100)]  # fmt: skip
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "fig.pdf"
    args = ["partition", "--counts", str(table), "--out", str(out)]
    assert main([*args, "--expect", '{"clients": 12}']) == 1
    err = capsys.readouterr().err
    assert "another config" in err and "--forcerun partition_table" in err and not out.exists()
    assert main([*args, "--expect", '{"clients": 100}']) == 0


def test_accuracy_and_staleness_figures_refuse_tables_of_another_config(tmp_path, capsys):
    from persafl import sweep
    from persafl.figures import main

    cfg = sweep.validate(_sweep())  # config/test.yaml: 2 seeds, bounds 0 and 4
    tables = REPO / "results" / "tables" / "dataset~synthetic"  # the paper's tables
    keys = sweep.run_keys(cfg, dataset="synthetic", tau=4)
    expect = json.dumps({"runs": [[k.partition, k.method, k.tau, k.seed] for k in keys]})
    curves = ["accuracy", "--curves", str(tables / "tau~16" / "curves.csv"), "--tau", "16"]
    final = ["staleness", "--final", str(tables / "final.csv")]
    for args in (curves, final):
        out = tmp_path / "fig.pdf"
        code = main([*args, "--dataset", "synthetic", "--out", str(out), "--expect", expect])
        assert code == 1 and "comes from another config" in capsys.readouterr().err
        assert not out.exists()


# ---- 7-11: one line naming the file and the fix, no traceback ------------------------------

OK_RUN = {
    "dataset": {
        "name": "synthetic",
        "params": {"alpha": 0.5, "beta": 0.5, "num_clients": 4, "max_client_samples": 60},
    },
    "model": {"name": "logistic"},
    "schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 1},
    "device": "cpu",
}


def _train(tmp_path, config: Path, out: Path | None = None) -> tuple[int, str]:
    import subprocess
    import sys

    out = out or tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "persafl.train", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr


def _one_line_error(code: int, err: str, *named: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and "Traceback" not in err and len(lines) == 1, err
    for text in named:
        assert text in lines[0], (text, lines[0])


def test_7_a_binary_file_given_as_config_is_named(tmp_path):
    pdf = REPO / "paper_figures" / "fig_partition_synthetic.pdf"
    _one_line_error(*_train(tmp_path, pdf), str(pdf), "not a text (YAML) file")
    from persafl import sweep

    with pytest.raises(sweep.SweepError, match="not a text"):
        sweep.load_sweep_config([TEST_CONFIG, pdf])


def test_8_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("seed: 0\nmethod: {name: afl\nmodel: x\n")
    _one_line_error(*_train(tmp_path, bad), str(bad), "line 3", "not valid YAML")
    from persafl import sweep

    with pytest.raises(sweep.SweepError, match=r"run.yaml, line 3"):
        sweep.load_sweep_config([bad])


def test_9_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    _one_line_error(*_train(tmp_path, missing), str(missing), "does not exist")
    from persafl import sweep

    with pytest.raises(sweep.SweepError, match="does not exist"):
        sweep.load_sweep_config([missing])


def test_10_unwritable_out(tmp_path):
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(OK_RUN))
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = _train(tmp_path, config, blocker / "out")
    _one_line_error(code, err, "--out", str(blocker / "out"), "writable")


def test_11_unknown_data_set_is_named_not_its_parameters(tmp_path):
    import yaml

    from persafl.config import _CHECKS
    from persafl.data import DATASETS, load_dataset

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**OK_RUN, "dataset": {"name": "mnistt", "params": {"a": 1}}}))
    _one_line_error(*_train(tmp_path, config), "dataset.name", "'mnistt'", "synthetic")
    with pytest.raises(ValueError, match="unknown data set 'mnistt'"):
        load_dataset("mnistt", "data", alpha=1)
    for name in DATASETS:  # the config's list is the loader's
        assert _CHECKS["dataset.name"]("dataset.name", name) == name


# ---- 12: the lock message warns that --unlock breaks a run still going ---------------------


def test_12_lock_warning_and_unlock_refused_while_another_snakemake_runs(tmp_path):
    import subprocess
    import sys

    from persafl import locks

    assert locks.lock_warning(tmp_path) is None
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x")
    warning = locks.lock_warning(tmp_path)
    assert warning is not None and "--unlock now makes it fail" in warning
    assert locks.unlock_refusal(tmp_path) is None
    # a stand-in for a snakemake still working in that directory; it must outlive the real
    # snakemake below, which can take a minute to start on a loaded machine (killed at the end)
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)", "snakemake"], cwd=tmp_path
    )
    try:
        import time

        deadline = time.monotonic() + 10  # until the child has exec'd (its cmdline is set)
        while other.pid not in locks.other_snakemakes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other.pid in locks.other_snakemakes(tmp_path)
        tail = subprocess.Popen(["sleep", "30", ".snakemake/log/x.log"], cwd=tmp_path)
        assert tail.pid not in locks.other_snakemakes(tmp_path)  # only snakemake itself counts
        tail.kill()
        tail.wait()
        refusal = locks.unlock_refusal(tmp_path)
        assert refusal is not None and str(other.pid) in refusal
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        cmd += ["--directory", str(tmp_path), "--unlock", "--configfile", str(TEST_CONFIG)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode != 0 and "refusing --unlock" in done.stderr, done.stderr
        assert (tmp_path / ".snakemake" / "locks" / "0.input.lock").exists()
    finally:
        other.kill()
        other.wait()


# ---- 13: a quiet console --------------------------------------------------------------------


def test_13_default_profile_prints_no_shell_commands():
    import yaml

    profile = yaml.safe_load((REPO / "workflow/profiles/default/config.yaml").read_text())
    assert not profile.get("printshellcmds")


def test_13_log_lines_do_not_run_into_the_progress_bar(tmp_path):
    import subprocess
    import sys

    import yaml

    config = tmp_path / "run.yaml"
    run = {**OK_RUN, "schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 40}}
    config.write_text(yaml.safe_dump({**run, "eval": {"every": 10}}))
    cmd = [sys.executable, "-m", "persafl.train", "--config", str(config)]
    cmd += ["--out", str(tmp_path / "out"), "--progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    segments = done.stderr.replace("\r", "\n").splitlines()
    logged = [s for s in segments if "global_acc_ca=" in s]
    assert len(logged) == 5 and "upd" in done.stderr  # the bar was drawn
    assert all(s[:4].isdigit() for s in logged), logged  # each log line starts on its own
