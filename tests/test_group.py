"""Cross-run stacking: a group of runs trained in one process gives each run exactly what it
gets alone (metrics and per-client results, bit for bit), and the CLI takes groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from persafl.config import resolve_run_config
from persafl.engine import group
from persafl.resources import group_priority, group_resources
from persafl.train import main, train, train_group

DATA = {"alpha": 0.5, "beta": 0.5, "num_clients": 8, "max_client_samples": 60}


def config(method: str, tau: int, seed: int, data: dict | None = None, **schedule) -> dict:
    return resolve_run_config(
        {
            "seed": seed,
            "dataset": {"name": "synthetic", "params": dict(data or DATA)},
            "model": {"name": "mlp", "params": {"hidden": 8}},
            "method": {
                "name": method,
                "hp": {"local_steps": 3, "batch_size": 5, "eval_adapt_steps": 2, "inner_steps": 2},
            },
            "schedule": {
                "model": "clock",
                "staleness_bound": tau,
                "num_updates": 30,
                **schedule,
            },
            "eval": {"every": 10},
            "backend": "vectorized",
            "device": "cpu",
        }
    )


def files(out: Path) -> tuple[str, str]:
    return (out / "metrics.csv").read_text(), (out / "clients.csv").read_text()


@pytest.mark.parametrize(
    "method", ["afl", "persafl_maml_fo", "persafl_maml_hf", "persafl_me", "local"]
)
def test_a_group_gives_every_run_what_it_gets_alone(tmp_path, method):
    torch.set_num_threads(1)
    runs = [
        (config(method, tau, seed), tmp_path / f"group/{tau}_{seed}", None)
        for tau in (0, 2, 8)
        for seed in (0, 1)
    ]
    spy = {"calls": 0, "largest": 0}
    original = group.compute_stacked

    def counting(pairs, starts):
        spy["calls"] += 1
        spy["largest"] = max(spy["largest"], len({id(r) for r, _ in pairs}))
        return original(pairs, starts)

    group.compute_stacked = counting
    try:
        grouped = train_group(runs)
    finally:
        group.compute_stacked = original
    assert spy["largest"] > 1, "no call stacked jobs of two runs"
    for (cfg, out, _), result in zip(runs, grouped, strict=True):
        alone = train(cfg, tmp_path / "alone" / out.name)
        assert result.status == alone.status == "completed"
        assert files(out) == files(tmp_path / "alone" / out.name)  # bit for bit (as text)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["group"]["runs"] == len(runs)
        assert summary["config"] == cfg


def test_a_group_may_mix_methods_and_data_sets(tmp_path):
    """Runs of other step forms or other data are pooled correctly (indices shifted)."""
    torch.set_num_threads(1)
    other = {**DATA, "alpha": 1.0, "num_clients": 5}
    runs = [
        (config("afl", 2, 0), tmp_path / "g/a", None),
        (config("persafl_me", 2, 0, other), tmp_path / "g/b", None),
        (config("afl", 4, 1, other), tmp_path / "g/c", None),
    ]
    train_group(runs)
    for cfg, out, _ in runs:
        train(cfg, tmp_path / "alone" / out.name)
        assert files(out) == files(tmp_path / "alone" / out.name)


def test_a_diverged_run_does_not_stop_its_group(tmp_path):
    torch.set_num_threads(1)
    bad = config("afl", 2, 0)
    bad["method"]["hp"]["local_lr"] = 1e6
    runs = [(bad, tmp_path / "bad", None), (config("afl", 2, 1), tmp_path / "good", None)]
    results = train_group(runs)
    assert [r.status for r in results] == ["diverged", "completed"]
    assert json.loads((tmp_path / "good" / "summary.json").read_text())["status"] == "completed"


def test_cli_trains_a_group_and_checks_its_arguments(tmp_path, capsys):
    import yaml

    args = []
    for seed in (0, 1):
        path = tmp_path / f"run{seed}.yaml"
        path.write_text(yaml.safe_dump(config("afl", 2, seed)))
        args += ["--config", str(path), "--out", str(tmp_path / f"out{seed}")]
    assert main([*args, "--threads", "1"]) == 0
    assert all((tmp_path / f"out{s}" / "summary.json").exists() for s in (0, 1))
    with pytest.raises(SystemExit):
        main([*args[:-2], "--out", str(tmp_path / "x"), "--out", str(tmp_path / "y")])
    assert "one --out" in capsys.readouterr().err


def test_group_resources_scale_measurements_and_fall_back_to_the_config():
    measured = {"g": {"runs": 20, "seconds": 600.0, "max_rss_mb": 800.0, "threads": 1}}
    fallback = {"mem_mb": 4000, "runtime": 240}
    assert group_resources("g", 20, fallback, measured) == {"mem_mb": 1200, "runtime": 20}
    assert group_resources("g", 40, fallback, measured) == {"mem_mb": 2400, "runtime": 40}
    assert group_resources("g", 1, fallback, measured) == {"mem_mb": 1200, "runtime": 10}
    assert group_resources("other", 20, fallback, measured) == fallback


def test_group_priority_orders_groups_by_their_expected_seconds():
    fallback = {"mem_mb": 4000, "runtime": 240}
    measured = {"hf": {"runs": 20, "seconds": 1696.0}, "afl": {"runs": 20, "seconds": 436.0}}
    assert group_priority("hf", 20, fallback, measured) == 1696
    assert group_priority("afl", 5, fallback, measured) == 109  # scaled to 5 of 20 runs
    assert group_priority("unmeasured", 20, fallback, measured) == 7200  # half of 240 min
    ranked = sorted(["afl", "hf"], key=lambda g: -group_priority(g, 20, fallback, measured))
    assert ranked == ["hf", "afl"]


@pytest.mark.parametrize("method", ["afl", "local"])
@pytest.mark.parametrize("schedule", [{"policy": "drop"}, {"policy": "wait"}, {"buffer_size": 3}])
def test_compute_calls_are_known_from_the_trace_alone(method, schedule):
    """device.compute_calls predicts the vectorized executor's stacked calls exactly."""
    from persafl import methods
    from persafl.data import load_dataset
    from persafl.engine.device import compute_calls
    from persafl.engine.executor import run
    from persafl.engine.jobs import JobTable
    from persafl.engine.schedule import ScheduleConfig, make_trace
    from persafl.models import build_model
    from persafl.partition import partition_dataset

    data = load_dataset("synthetic", "data", **DATA)
    part = partition_dataset(data.y.numpy(), data.groups, "natural", 8, seed=0)
    model = build_model("mlp", (60,), 10, hidden=4)
    for bound in (0, 3, 10):
        cfg = ScheduleConfig.from_dict(
            {"model": "clock", "staleness_bound": bound, "num_updates": 40, **schedule}
        )
        trace = make_trace(cfg, 8, seed=bound)
        hp = {**methods.get(method).defaults, "local_steps": 1, "batch_size": 4}
        result = run(trace, methods.get(method), hp, model, data, part, 0, "vectorized", 100)
        assert compute_calls(JobTable.from_trace(trace), method == "local") == result.compute_calls


def test_auto_device_rule_of_thumb():
    """GPU when a stacked gradient exceeds 50 MFLOP (or the model convolves)."""
    from persafl.engine.device import prefers_gpu
    from persafl.models import build_model

    synthetic = build_model("mlp", (60,), 10, hidden=20)  # 1,430 parameters
    mnist = build_model("mlp", (784,), 10, hidden=100)  # 79,510 parameters
    cnn = build_model("cnn", (1, 28, 28), 10)
    assert not prefers_gpu(synthetic, 20, [3.6] * 20)  # a group of 20 async runs: 12 MFLOP
    assert prefers_gpu(synthetic, 20, [300.0])  # 300 x 0.17 MFLOP
    assert not prefers_gpu(mnist, 20, [3.6])  # one async run: 34 MFLOP
    assert prefers_gpu(mnist, 20, [3.6] * 2)  # two: 69 MFLOP
    assert prefers_gpu(cnn, 20, [1.0])
