"""The synchronous anchor: run configs, the export to the pFedMe code's format, the table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from persafl import anchor, paper_files, sweep
from persafl.aggregate import RunResult
from persafl.anchor_table import LEAKY_MARK, anchor_table, markdown
from persafl.data.base import Dataset
from persafl.data.synthetic import load_synthetic
from persafl.partition import partition_dataset

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    path = REPO / "benchmarks" / "anchor" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"anchor_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_partition = _script("export_partition")


def test_committed_anchor_config_loads_and_only_the_leaky_run_adapts_on_test():
    cfg = anchor.load_anchor(REPO / "config" / "anchor.yaml")
    for run in anchor.RUNS:
        assert 1 <= anchor.rounds_of(cfg, "mnist", run) <= cfg["rounds"]["mnist"]
    sweep_cfg = sweep.load_sweep_config([Path(cfg["sweep_config"])])
    for run in anchor.RUNS:
        config = anchor.anchor_config(sweep_cfg, "synthetic", run, 3, 0)
        hp = config["method"]["hp"]
        assert (hp["adapt_on"] == "test") == (run == "perfedavg_leaky")
        assert (hp["aggregation"], hp["server_lr"]) == ("samples", 1.0)
        assert config["schedule"]["model"] == "barrier"
        assert config["schedule"]["clients_per_round"] == 10
        assert config["schedule"]["train_all"] == (run == "pfedme")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"rounds": {"mnist": 0, "synthetic": 5}}, "rounds.mnist"),
        ({"runs": ["fedavg", "scaffold"]}, "scaffold"),
        ({"seeds": [-1]}, "seeds"),
        ({"max_rounds": {"pfedme": 0}}, "max_rounds"),
        ({"sweep_config": "nowhere.yaml"}, "sweep_config"),
    ],
)
def test_a_bad_anchor_config_is_named(tmp_path, change, named):
    cfg = yaml.safe_load((REPO / "config" / "anchor.yaml").read_text())
    cfg["sweep_config"] = str(REPO / "config" / "config.yaml")
    path = tmp_path / "anchor.yaml"
    path.write_text(yaml.safe_dump({**cfg, **change}))
    with pytest.raises(anchor.AnchorError, match=named):
        anchor.load_anchor(path)


def _check_round_trip(data: Dataset, partition, root: Path) -> None:
    folder = export_partition.export(data, partition, root, "synthetic")
    users, train, test = export_partition.read_back(folder)
    assert users == [export_partition.user_name(c) for c in range(partition.num_clients)]
    flat = data.x.reshape(len(data.x), -1)
    for c, user in enumerate(users):  # their user index c is our client c, sample for sample
        for split, ours in ((train, partition.train[c]), (test, partition.test[c])):
            x, y = split[user]
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert torch.equal(x, flat[ours]), (user, c)
            assert torch.equal(y, data.y[ours])
    counts = json.loads((folder / "train" / "anchor.json").read_text())["num_samples"]
    assert counts == [len(t) for t in partition.train]


def test_export_round_trips_our_synthetic_partition_exactly(tmp_path):
    data = load_synthetic(0.5, 0.5, num_clients=7, seed=3, max_client_samples=120)
    partition = partition_dataset(
        data.y.numpy(), data.groups, "natural", 7, seed=1, test_fraction=0.25, num_classes=10
    )
    _check_round_trip(data, partition, tmp_path)


def test_export_round_trips_awkward_float32_values_and_image_shapes(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.standard_normal(300), 10.0 ** rng.uniform(-30, 30, 300), [0.0, -0.0, 1e-45, 3.4e38]]
    )
    x = rng.choice(values, size=(60, 1, 2, 2)).astype(np.float32)  # MNIST-like [N, 1, H, W]
    y = rng.integers(0, 3, size=60)
    data = Dataset("toy", torch.from_numpy(x), torch.from_numpy(y), 3, None)
    partition = partition_dataset(y, None, "iid", 4, seed=0, test_fraction=0.25, num_classes=3)
    _check_round_trip(data, partition, tmp_path)


def _fake_run(dataset: str, run: str, seed: int, acc: list[float], adapt_on: str) -> RunResult:
    n = len(acc)
    metrics = pd.DataFrame(
        {
            "update": np.arange(n) * 10,
            "global_acc_ca": acc,
            "global_acc_sw": [a - 0.01 for a in acc],
            "personal_acc_ca": [a + 0.02 for a in acc],
            "personal_acc_sw": [a + 0.01 for a in acc],
        }
    )
    identity = {"dataset": dataset, "partition": "p", "method": run, "tau": 0, "seed": seed}
    summary = {"status": "completed", "config": {"method": {"hp": {"adapt_on": adapt_on}}}}
    return RunResult(Path("."), identity, metrics, summary)


def test_table_labels_statistics_and_leaky_rows():
    runs = [
        _fake_run("mnist", "fedavg", 0, [0.1, 0.9, 0.8], "train"),
        _fake_run("mnist", "perfedavg", 0, [0.1, 0.5, 0.6], "train"),
        _fake_run("mnist", "perfedavg_leaky", 0, [0.1, 0.5, 0.7], "test"),
    ]
    code = pd.DataFrame(
        [
            {"dataset": "mnist", "run": "fedavg", "model": "global", "rounds": 20,
             "repetition": 0, "final_acc": 81.0, "best_acc_eval_grid": 92.0},
            {"dataset": "mnist", "run": "perfedavg_leaky", "model": "personalized",
             "rounds": 20, "repetition": 0, "final_acc": 75.0, "best_acc_eval_grid": 76.0},
        ]
    )  # fmt: skip
    table = anchor_table(runs, code)
    assert len(table) == 6
    assert set(table["statistic"]) == {"final", "best over rounds"}
    leaky = table[table["leaky"]]
    assert set(leaky["run"]) == {"perfedavg_leaky"}
    assert all(LEAKY_MARK in label for label in leaky["label"])
    assert not any(LEAKY_MARK in label for label in table[~table["leaky"]]["label"])
    fedavg = table[table["run"] == "fedavg"].set_index("statistic")
    assert fedavg.loc["final", "ours_ca"] == pytest.approx(80.0)  # global for FedAvg
    assert fedavg.loc["best over rounds", "ours_sw"] == pytest.approx(89.0)
    assert fedavg.loc["final", "ours_minus_code_sw"] == pytest.approx(79.0 - 81.0)
    assert np.isnan(fedavg.loc["final", "published"])  # published numbers are best over rounds
    assert fedavg.loc["best over rounds", "published"] == pytest.approx(98.8)
    assert np.isnan(table[table["run"] == "perfedavg"]["code_sw"]).all()  # their code: leaky only
    text = markdown(table)
    assert sum(LEAKY_MARK in line for line in text.splitlines() if line.startswith("|")) == 2


def test_a_run_adapting_on_test_is_labelled_leaky_whatever_its_name():
    table = anchor_table([_fake_run("mnist", "perfedavg", 0, [0.2, 0.3], "test")], pd.DataFrame())
    assert table["leaky"].all()
    assert all(LEAKY_MARK in label for label in table["label"])


def test_anchor_tables_are_manifest_outputs_only_when_switched_on():
    cfg = sweep.load_sweep_config([REPO / "config" / "test.yaml"])
    assert "paper_figures/table_anchor.md" not in paper_files.paper_outputs(cfg)
    on = {**cfg, "figures": {**cfg["figures"], "anchor": True}}
    assert {"paper_figures/table_anchor.md", "paper_figures/table_anchor.csv"} <= set(
        paper_files.paper_outputs(on)
    )
    paper = sweep.load_sweep_config([REPO / "config" / "config.yaml"])
    assert "paper_figures/table_anchor.csv" in paper_files.paper_outputs(paper)


def test_pfedme_code_logs_are_parsed_per_model_and_cut_to_the_anchor_rounds(tmp_path):
    results = _script("pfedme_results")
    folder = tmp_path / "mnist-4" / "pFedMe"
    folder.mkdir(parents=True)
    lines = []
    for t, (glob, personal) in enumerate([(0.1, 0.8), (0.3, 0.9), (0.5, 0.85), (0.6, 0.95)]):
        lines += [f"-------------Round number:  {t}  -------------", "Evaluate global model",
                  f"Average Global Accurancy:  {glob}", "Average Global Trainning Accurancy:  0.2",
                  f"Average Personal Accurancy:  {personal}"]  # fmt: skip
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    rows = {r["model"]: r for r in results.parse_run(folder, "mnist", 3, eval_every=2)}
    assert rows["personalized"]["run"] == rows["global"]["run"] == "pfedme"
    assert rows["personalized"]["rounds"] == 3 and rows["personalized"]["complete"]
    assert rows["personalized"]["final_acc"] == pytest.approx(85.0)
    assert rows["personalized"]["best_acc"] == pytest.approx(90.0)
    assert rows["personalized"]["best_acc_eval_grid"] == pytest.approx(85.0)  # rounds 0 and 2
    assert rows["global"]["final_acc"] == pytest.approx(50.0)
    short = results.parse_run(folder, "mnist", 10, eval_every=2)
    assert all(r["rounds"] == 4 and not r["complete"] for r in short)
