"""persafl.regime: per-client win rate, paired differences and the regime tables (issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from persafl import regime


def _clients(seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        shift = 0.01 * seed
        local = [0.9, 0.9, 0.1]
        afl = [0.5, 0.5, 0.5]
        method = [0.8, 0.8, 0.95]
        for client in range(3):
            rows.append(
                {
                    "dataset": "d",
                    "skew": "pathological-2",
                    "cap": "10",
                    "seed": seed,
                    "client": client,
                    "n_train": 10,
                    "n_test": 5,
                    "local": local[client],
                    "afl": afl[client],
                    "persafl_me": method[client] + shift,
                }
            )
    return pd.DataFrame(rows)


def test_win_rate_is_per_client_not_from_means():
    clients = _clients()
    # the method beats both MEANS (0.85 > 0.63 local, 0.50 A-FL) ...
    assert clients["persafl_me"].mean() > clients[["local", "afl"]].mean().max()
    summary = regime.summary_table(clients).set_index("method")
    # ... but exceeds max(local, A-FL) of the same client on one client in three
    assert summary.loc["persafl_me", "win_rate"] == pytest.approx(1 / 3)
    # paired difference: per client acc - max(local, afl), averaged over clients per seed
    per_seed = [np.mean([0.8 - 0.9, 0.8 - 0.9, 0.95 - 0.5]) + 0.01 * s for s in (0, 1)]
    assert summary.loc["persafl_me", "diff_mean"] == pytest.approx(np.mean(per_seed))
    lo, hi = summary.loc["persafl_me", ["diff_lo", "diff_hi"]]
    half = 4.303 * 0 + 12.706 * np.std(per_seed, ddof=1) / np.sqrt(2)  # t(0.975, 1 dof)
    assert (lo, hi) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half))
    # the references themselves have no win rate
    assert np.isnan(summary.loc["local", "win_rate"]) and np.isnan(summary.loc["afl", "win_rate"])


def test_ties_do_not_win():
    clients = _clients(seeds=(0,))
    clients["persafl_me"] = clients[["local", "afl"]].max(axis=1)
    summary = regime.summary_table(clients).set_index("method")
    assert summary.loc["persafl_me", "win_rate"] == 0.0


def test_labels_of_partition_configs():
    assert regime.skew_label({"scheme": "dirichlet", "params": {"dirichlet_alpha": 0.1}}) == (
        "dirichlet-0.1"
    )
    part = {"scheme": "pathological", "params": {"classes_per_client": 2}}
    assert regime.skew_label(part) == "pathological-2" and regime.cap_label(part) == "all"
    assert regime.cap_label({**part, "max_train_samples": 30}) == "30"


def test_client_rows_of_an_afl_run_carry_the_baselines():
    clients = pd.DataFrame(
        {
            "client": [0],
            "n_train": [10],
            "n_test": [4],
            "global_acc": [0.5],
            "personal_acc": [0.5],
            "majority_acc": [0.25],
            "masked_acc": [0.75],
            "finetune_acc": [1.0],
        }
    )
    identity = {"dataset": "d", "partition": "p", "method": "afl", "seed": 0}
    long = pd.DataFrame(regime.client_rows(identity, {"skew": "s", "cap": "10"}, clients))
    wide = regime.clients_table(long)
    assert wide.loc[0, ["afl", "afl_finetune", "afl_masked", "majority"]].tolist() == [
        0.5,
        1.0,
        0.75,
        0.25,
    ]


def test_the_regime_config_is_valid_and_one_partition_per_skew_and_cap():
    from persafl import sweep

    cfg = sweep.load_sweep_config(["config/regime.yaml"])
    regime.check_regime(cfg)
    labels = regime.partition_labels(cfg, "fashion_mnist")
    assert {v["cap"] for v in labels.values()} == {"10", "30", "100", "300", "1000", "all"}
    assert {v["skew"] for v in labels.values()} == {
        "pathological-2",
        "dirichlet-0.1",
        "dirichlet-0.5",
    }
    run = sweep.run_config(cfg, "fashion_mnist", "dir0.1_n30", "afl", 4, 0)
    assert run["partition"]["max_train_samples"] == 30
    base = sweep.run_config(cfg, "fashion_mnist", "dir0.1_all", "afl", 4, 0)
    assert "max_train_samples" not in base["partition"]


def test_regime_figure_draws_every_method_and_marks_the_crossover():
    from persafl.plot_regime import _crossover, regime_figure

    rows = []
    for cap, n, local in (("10", 10, 0.6), ("100", 100, 0.8), ("all", 1000, 0.95)):
        for method, acc in (("local", local), ("afl", 0.75), ("persafl_me", 0.8)):
            rows.append(
                {
                    "dataset": "d",
                    "skew": "dirichlet-0.5",
                    "cap": cap,
                    "n_train_mean": n,
                    "method": method,
                    "acc_mean": acc,
                    "acc_std": 0.01,
                    "win_rate": np.nan if method in ("local", "afl") else 0.5,
                }
            )
    summary = pd.DataFrame(rows)
    fig = regime_figure(summary, "d")
    gids = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
    assert {"method:local", "method:afl", "method:persafl_me"} <= gids
    # local 0.6 -> 0.8 against A-FL 0.75 between 10 and 100 samples: log-interpolated crossing
    cross = _crossover(summary[summary.method == "local"], summary[summary.method == "afl"])
    assert cross == pytest.approx(10 ** (1 + 0.15 / 0.2))


def test_the_regime_config_uses_the_committed_tuned_values():
    """config/regime.yaml's hyperparameters are the paper config's tuning selections
    (paper_figures/table_tuning.csv) for every method and partition, and FedAvg + fine-tuning
    gets ME's tuned adaptation budget."""
    import io
    import subprocess
    from pathlib import Path

    import pandas as pd

    from persafl import sweep

    root = Path(__file__).resolve().parents[1]
    cfg = sweep.load_sweep_config([str(root / "config/regime.yaml")])
    try:  # the COMMITTED table: `make reproduce` rewrites paper_figures/ with Synthetic only
        text = subprocess.run(
            ["git", "-C", str(root), "show", "HEAD:paper_figures/table_tuning.csv"],
            capture_output=True, check=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        text = (root / "paper_figures/table_tuning.csv").read_text()
    table = pd.read_csv(io.StringIO(text))
    checked = set()
    for row in table.itertuples():
        if row.dataset not in cfg["datasets"] or not cfg["datasets"][row.dataset]["enabled"]:
            continue
        selected = {
            name: float(value)
            for name, value in (pair.split("=") for pair in row.selected_hp.split(", "))
        }
        for partition in cfg["datasets"][row.dataset]["partitions"]:
            tau = sweep.taus_of(cfg, row.method)[0]
            hp = sweep.run_config(cfg, row.dataset, partition, row.method, tau, 0)["method"]["hp"]
            assert {k: float(hp[k]) for k in selected} == selected, (row.dataset, partition)
        checked.add(row.dataset)
        if row.method == "persafl_me":
            afl = sweep.run_config(cfg, row.dataset, partition, "afl", 4, 0)["method"]["hp"]
            assert float(afl["personal_lr"]) == selected["personal_lr"]
    assert checked == {"mnist", "fashion_mnist"}  # not vacuous: both studied data sets


def test_a_diverged_run_is_no_result_for_its_clients(tmp_path):
    """A diverged local run must not enter max(local, global) with its collapsed accuracies
    (regression: its clients.csv was read, and a personalized method then 'won' that seed)."""
    from persafl.run_files import write_run_outputs
    from persafl.train import CLIENT_COLUMNS

    def run(method: str, seed: int, status: str, acc: float) -> str:
        run_dir = tmp_path / f"dataset~d/partition~p/method~{method}/tau~0/seed~{seed}"
        run_dir.mkdir(parents=True)
        metrics = [
            {"update": 0, "time": 0, "grad_evals": 0, "staleness_mean": 0, "staleness_max": 0,
             "dropped": 0, "global_acc_ca": acc, "global_acc_sw": acc, "global_loss_ca": 1.0,
             "personal_acc_ca": acc, "personal_acc_sw": acc, "majority_acc_ca": 0.5,
             "majority_acc_sw": 0.5}
        ]  # fmt: skip
        clients = [
            {"client": c, "n_train": 10, "n_test": 5, "global_acc": acc, "personal_acc": acc,
             "majority_acc": 0.5, "masked_acc": acc, "finetune_acc": acc}
            for c in range(2)
        ]  # fmt: skip
        summary = {"status": status, "config": {"method": {"name": method, "hp": {}}}}
        write_run_outputs(
            run_dir, metrics, clients, summary,
            metrics_columns=list(metrics[0]), client_columns=CLIENT_COLUMNS,
        )  # fmt: skip
        return str(run_dir)

    runs = [
        run("local", 0, "completed", 0.9), run("local", 1, "diverged", 0.1),
        run("afl", 0, "completed", 0.6), run("afl", 1, "completed", 0.6),
        run("persafl_me", 0, "completed", 0.8), run("persafl_me", 1, "completed", 0.8),
    ]  # fmt: skip
    labels = {"p": {"skew": "s", "cap": "all"}}
    wide = regime.clients_table(regime.load_clients(runs, labels))
    assert wide.loc[wide["seed"] == 1, "local"].isna().all()
    me = regime.summary_table(wide).set_index("method").loc["persafl_me"]
    assert me["win_rate"] == 0.0  # seed 0 only: 0.8 < local 0.9; seed 1 is not a win
    assert regime.summary_table(wide).set_index("method").loc["local", "seeds"] == 1


def test_the_per_run_table_names_each_runs_code_and_status(tmp_path):
    """final.csv lists every run (a diverged one too) with the commit from its summary.json,
    and persafl.provenance.run_commits reads it (the manifest's run_commits)."""
    from persafl.provenance import run_commits

    runs = []
    for method, seed, status, commit in [
        ("local", 0, "completed", "abc"), ("local", 1, "diverged", "abc"),
        ("persafl_me", 0, "completed", None),
    ]:  # fmt: skip
        run_dir = tmp_path / f"runs/dataset~d/partition~p/method~{method}/tau~0/seed~{seed}"
        run_dir.mkdir(parents=True)
        summary = {"status": status, **({"git_commit": commit} if commit else {})}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        runs.append(str(run_dir))
    table = regime.runs_table(runs, {"p": {"skew": "s", "cap": "all"}})
    assert list(table["method"]) == ["local", "local", "persafl_me"]
    assert list(table["status"]) == ["completed", "diverged", "completed"]
    assert list(table["git_commit"]) == ["abc", "abc", "unknown"]
    out = tmp_path / "tables/regime/dataset~d/final.csv"
    out.parent.mkdir(parents=True)
    table.to_csv(out, index=False)
    assert run_commits(tmp_path / "tables") == ["abc", "unknown"]
    with pytest.raises(regime.RegimeError, match="partition 'p' not in --partitions"):
        regime.runs_table(runs, {"q": {"skew": "s", "cap": "all"}})
