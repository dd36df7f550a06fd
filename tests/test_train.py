"""The train CLI: output files, determinism, divergence, saved partitions, config errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from persafl.config import load_run_config
from persafl.data import load_dataset
from persafl.partition import partition_dataset
from persafl.partition_io import save_partition
from persafl.train import CLIENT_COLUMNS, METRICS_COLUMNS, main

DATA_PARAMS = {"alpha": 0.5, "beta": 0.5, "num_clients": 6, "max_client_samples": 100}


def write_config(tmp_path: Path, name: str = "run.yaml", **overrides) -> Path:
    config = {
        "seed": 0,
        "dataset": {"name": "synthetic", "params": dict(DATA_PARAMS)},
        "model": {"name": "mlp", "params": {"hidden": 8}},
        "method": {
            "name": "persafl_maml_fo",
            "hp": {"local_steps": 3, "batch_size": 5, "eval_adapt_steps": 2},
        },
        "schedule": {"model": "clock", "staleness_bound": 3, "num_updates": 20},
        "eval": {"every": 5},
        "device": "cpu",
    }
    config.update(overrides)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path, out: Path, *extra: str) -> int:
    return main(["--config", str(config), "--out", str(out), "--threads", "1", *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_the_three_files(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert train(config, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clients.csv", "metrics.csv", "summary.json"]
    metrics = read_csv(out / "metrics.csv")
    assert tuple(metrics[0]) == METRICS_COLUMNS
    assert [int(r["update"]) for r in metrics] == [0, 5, 10, 15, 20]
    clients = read_csv(out / "clients.csv")
    assert tuple(clients[0]) == CLIENT_COLUMNS and len(clients) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["message"] == ""
    assert summary["config"] == load_run_config(config)
    assert summary["seed"] == 0 and summary["device"] == "cpu"
    assert set(summary["versions"]) == {"python", "torch", "numpy", "persafl"}
    assert isinstance(summary["git_commit"], str) and summary["git_commit"]
    assert summary["trace"]["num_updates"] == 20
    assert summary["final"]["update"] == 20
    assert summary["final"]["personal_acc_ca"] == pytest.approx(
        float(metrics[-1]["personal_acc_ca"])
    )
    # the client table agrees with the last metrics row (client-averaged personal accuracy)
    personal = np.mean([float(c["personal_acc"]) for c in clients])
    assert personal == pytest.approx(float(metrics[-1]["personal_acc_ca"]))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train(write_config(tmp_path), first) == 0
    assert train(write_config(tmp_path), second) == 0
    assert train(write_config(tmp_path, "seed1.yaml", seed=1), other) == 0
    for name in ("metrics.csv", "clients.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "metrics.csv").read_bytes() != (other / "metrics.csv").read_bytes()


def test_rerun_overwrites_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "run"
    assert train(write_config(tmp_path), out) == 0
    (out / "summary.json").write_text('{"status": "completed", "stale": true}')
    assert train(write_config(tmp_path, eval={"every": 10}), out) == 0
    assert "stale" not in json.loads((out / "summary.json").read_text())
    assert [int(r["update"]) for r in read_csv(out / "metrics.csv")] == [0, 10, 20]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_divergence_is_a_result_not_a_crash(tmp_path):
    method = {"name": "afl", "hp": {"local_steps": 3, "batch_size": 5, "local_lr": 1e30}}
    out = tmp_path / "run"
    assert train(write_config(tmp_path, method=method), out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "diverged at update" in summary["message"]
    assert (out / "metrics.csv").exists() and (out / "clients.csv").exists()


def test_saved_partition_is_used(tmp_path):
    data = load_dataset("synthetic", "unused", **DATA_PARAMS)
    partition = partition_dataset(
        data.y.numpy(), data.groups, "natural", 6, seed=0, test_fraction=0.5
    )
    save_partition(partition, tmp_path / "partition.npz", labels=data.y.numpy())
    out = tmp_path / "run"
    assert train(write_config(tmp_path), out, "--partition", str(tmp_path / "partition.npz")) == 0
    clients = read_csv(out / "clients.csv")
    assert [int(c["n_test"]) for c in clients] == [len(t) for t in partition.test]


def test_config_errors_exit_1_with_a_message(tmp_path, capsys):
    config = write_config(tmp_path, method={"name": "fedprox"})
    assert train(config, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "method.name" in err and "fedprox" in err
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    config = write_config(
        tmp_path, schedule={"model": "delay", "staleness_bound": 2, "num_updates": 5}
    )
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "persafl.train", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert "update 5/5" in done.stderr
    # the process ends in persafl.process.exit_now: the log's last line is still there
    assert done.stderr.rstrip().endswith(f"completed: {config} -> {out}")


def test_one_run_of_a_sweep_without_a_run_yaml(tmp_path, capsys):
    """`--sweep` trains the same run as the workflow's run config (issue 16, item 17)."""
    from persafl.sweep_cli import main as sweep_main

    sweep_config = Path(__file__).resolve().parents[1] / "config" / "test.yaml"
    name = ["--dataset", "synthetic", "--method", "afl", "--tau", "4", "--seed", "1"]
    run_yaml = tmp_path / "run.yaml"
    args = ["run-config", "--config", str(sweep_config), "--partition", "natural", *name]
    assert sweep_main([*args, "--out", str(run_yaml)]) == 0
    assert train(run_yaml, tmp_path / "a") == 0
    assert main(["--sweep", str(sweep_config), *name, "--out", str(tmp_path / "b")]) == 0
    for file in ("metrics.csv", "clients.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    bad = ["--sweep", str(sweep_config), *name[:4], "--tau", "3", "--seed", "0"]
    assert main([*bad, "--out", str(tmp_path / "c")]) == 1
    assert "staleness bound 3 is not in the sweep" in capsys.readouterr().err
    assert main(["--sweep", str(sweep_config), "--out", str(tmp_path / "c")]) == 1
    assert "also give --dataset" in capsys.readouterr().err
