"""Aggregation of the protocol labels: best-over-rounds beside final, leaky adapt_on marked."""

from __future__ import annotations

from pathlib import Path

import pytest

from persafl.aggregate import LEAKY_LABEL, final_table, summary_table
from persafl.aggregate_cli import load_runs
from persafl.run_files import write_run_outputs
from persafl.style import format_markdown
from persafl.train import CLIENT_COLUMNS


def _run(
    root: Path,
    method: str,
    seed: int,
    curve: list[float],
    adapt_on: str | None,
    extra_hp: dict | None = None,
) -> Path:
    run_dir = root / "dataset~mnist" / "partition~p" / f"method~{method}" / "tau~0" / f"seed~{seed}"
    run_dir.mkdir(parents=True)
    rows = [
        {"update": 10 * i, "time": i, "grad_evals": i, "staleness_mean": 0, "staleness_max": 0,
         "dropped": 0, "global_acc_ca": acc, "global_acc_sw": acc, "global_loss_ca": 1.0,
         "personal_acc_ca": acc, "personal_acc_sw": acc, "majority_acc_ca": 0.5,
         "majority_acc_sw": 0.5}
        for i, acc in enumerate(curve)
    ]  # fmt: skip
    hp = {} if adapt_on is None else {"adapt_on": adapt_on}
    hp.update(extra_hp or {})
    summary = {
        "status": "completed",
        "config": {"method": {"name": method, "hp": hp}},
        "seed": seed,
        "wall_seconds": 1.0,
        "trace": {"wait_time": 0.0},
        "final": {},
    }
    write_run_outputs(
        run_dir, rows, [], summary, metrics_columns=list(rows[0]), client_columns=CLIENT_COLUMNS
    )
    return run_dir


def test_best_over_rounds_and_final_are_both_reported(tmp_path):
    runs = [
        _run(tmp_path, "persafl_me", 0, [0.2, 0.9, 0.7], "train"),
        _run(tmp_path, "persafl_me", 1, [0.3, 0.6, 0.8], None),
    ]
    final = final_table(load_runs(runs))
    assert final["headline_acc"].tolist() == [0.7, 0.8]
    assert final["best_headline_acc"].tolist() == [0.9, 0.8]
    assert final["best_update"].tolist() == [10, 20]
    table = summary_table(final)
    assert table.loc[0, "acc_mean"] == pytest.approx(0.75)
    assert table.loc[0, "best_acc_mean"] == pytest.approx(0.85)
    assert table.loc[0, "adapt_on"] == "train" and LEAKY_LABEL not in table.loc[0, "method_label"]
    text = format_markdown(table)
    assert "Best (%)" in text and "85.0" in text and "75.0" in text


def test_leaky_adapt_on_test_is_labelled_in_every_table(tmp_path):
    runs = [_run(tmp_path, "persafl_maml_fo", 0, [0.5, 0.9], "test")]
    final = final_table(load_runs(runs))
    assert final.loc[0, "adapt_on"] == "test"
    table = summary_table(final)
    assert table.loc[0, "adapt_on"] == "test"
    assert table.loc[0, "method_label"].endswith(LEAKY_LABEL)
    assert "adapt on TEST: leaky" in format_markdown(table)


def test_each_row_states_its_runs_hyperparameters(tmp_path):
    """table_final says which values its runs used (issue 12: tuned or the base papers'),
    from each run's own config; older tables without the column still format."""
    tuned = {"local_lr": 0.01, "personal_lr": 0.03, "moreau_lambda": 15.0, "batch_size": 20}
    runs = [
        _run(tmp_path, "persafl_me", seed, [0.5, 0.8], None, extra_hp=tuned) for seed in (0, 1)
    ]
    final = final_table(load_runs(runs))
    assert final["hp"].tolist() == ["local_lr=0.01, personal_lr=0.03, moreau_lambda=15"] * 2
    table = summary_table(final)
    assert table.loc[0, "hp"] == "local_lr=0.01, personal_lr=0.03, moreau_lambda=15"
    assert "- MNIST, PersA-FL ME: local_lr=0.01, personal_lr=0.03, moreau_lambda=15" in (
        format_markdown(table)
    )
    older = summary_table(final.drop(columns="hp"))
    assert older.loc[0, "hp"] == "" and "Hyperparameters of the runs" not in format_markdown(older)
