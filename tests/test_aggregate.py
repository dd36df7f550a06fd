"""Aggregation of synthetic run directories: numbers checked against hand computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persafl.aggregate import (
    METRIC_COLUMNS,
    AggregationError,
    curves_table,
    final_table,
    parse_identity,
    summary_table,
)
from persafl.aggregate_cli import load_runs, main
from persafl.run_files import write_run_outputs

UPDATES = (0, 50, 100)


def write_run(
    root: Path,
    method: str,
    tau: int,
    seed: int,
    *,
    personal: float,
    glob: float,
    majority: float,
    dataset: str = "synthetic",
    partition: str = "natural",
    status: str = "completed",
) -> Path:
    """A fake but well-formed run directory; the final row holds the given accuracies."""
    parts = [f"dataset~{dataset}", f"partition~{partition}", f"method~{method}"]
    run_dir = root.joinpath(*parts, f"tau~{tau}", f"seed~{seed}")
    run_dir.mkdir(parents=True)
    rows = []
    for i, update in enumerate(UPDATES):
        frac = (i + 1) / len(UPDATES)  # accuracies rise to the given final values
        rows.append(
            {
                "update": update,
                "time": 0.5 * update,
                "grad_evals": 40 * update,
                "staleness_mean": 0.1 * i,
                "staleness_max": i,
                "dropped": i,
                "global_acc_ca": glob * frac,
                "global_acc_sw": glob * frac,
                "global_loss_ca": 2.0 - frac,
                "personal_acc_ca": personal * frac,
                "personal_acc_sw": personal * frac,
                "majority_acc_ca": majority,
                "majority_acc_sw": majority,
            }
        )
    summary = {
        "status": status,
        "config": {},
        "seed": seed,
        "wall_seconds": 1.5,
        "git_commit": f"commit-of-{method}",
        "trace": {"dropped": 2, "wait_time": 3.0, "num_updates": 100},
        "final": {},
    }
    clients = [{"client": 0, "n_train": 3, "n_test": 1, "personal_acc": personal}]
    write_run_outputs(
        run_dir,
        rows,
        clients,
        summary,
        metrics_columns=list(rows[0]),
        client_columns=list(clients[0]),
    )
    return run_dir


@pytest.fixture()
def runs_root(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Three ME seeds, two A-FL seeds (tau 4), two local seeds at tau 4 and one at tau 0."""
    root = tmp_path / "runs"
    dirs = [
        write_run(root, "persafl_me", 4, 0, personal=0.7, glob=0.5, majority=0.3),
        write_run(root, "persafl_me", 4, 1, personal=0.8, glob=0.5, majority=0.4),
        write_run(root, "persafl_me", 4, 2, personal=0.9, glob=0.5, majority=0.5),
        # afl: personal differs from global on purpose; the headline must be global
        write_run(root, "afl", 4, 0, personal=0.99, glob=0.60, majority=0.3),
        write_run(root, "afl", 4, 1, personal=0.99, glob=0.64, majority=0.4),
        write_run(root, "local", 4, 0, personal=0.5, glob=math.nan, majority=0.3),
        write_run(root, "local", 4, 1, personal=0.7, glob=math.nan, majority=0.4),
        write_run(root, "local", 0, 0, personal=0.1, glob=math.nan, majority=0.3),
    ]
    return root, dirs


def test_parse_identity_reads_key_value_parts() -> None:
    path = Path("results/runs/dataset~mnist/partition~patho/method~afl/tau~8/seed~3")
    assert parse_identity(path) == {
        "dataset": "mnist",
        "partition": "patho",
        "method": "afl",
        "tau": 8,
        "seed": 3,
    }
    with pytest.raises(AggregationError, match="seed~"):
        parse_identity(Path("dataset~mnist/partition~p/method~afl/tau~8"))
    with pytest.raises(AggregationError, match="tau~x is not an integer"):
        parse_identity(Path("dataset~m/partition~p/method~afl/tau~x/seed~0"))


def test_summary_table_means_and_stds_match_hand_computation(runs_root) -> None:
    _, dirs = runs_root
    table = summary_table(final_table(load_runs(dirs)))
    # one row per (dataset, partition, method, tau); local is a column, not a row
    assert list(zip(table["method"], table["tau"], strict=True)) == [("afl", 4), ("persafl_me", 4)]
    me = table.set_index("method").loc["persafl_me"]
    assert me["n_seeds"] == 3 and me["n_diverged"] == 0
    assert me["acc_mean"] == pytest.approx(0.8)
    assert me["acc_std"] == pytest.approx(0.1)  # sample std of 0.7, 0.8, 0.9
    assert me["global_acc_mean"] == pytest.approx(0.5)
    assert me["majority_acc_mean"] == pytest.approx(0.4)
    assert me["majority_acc_std"] == pytest.approx(0.1)
    # local baseline at the same tau (seeds 0.5, 0.7), not the tau-0 run
    assert me["local_acc_mean"] == pytest.approx(0.6)
    assert me["local_acc_std"] == pytest.approx(math.sqrt(0.02))
    assert me["local_n_seeds"] == 2
    afl = table.set_index("method").loc["afl"]
    assert afl["acc_mean"] == pytest.approx(0.62)  # global, not the 0.99 personal
    assert afl["acc_std"] == pytest.approx(math.sqrt(2 * 0.02**2))
    assert afl["majority_acc_mean"] == pytest.approx(0.35)
    assert afl["method_label"] == "A-FL"


def test_baselines_stay_within_their_dataset(runs_root) -> None:
    root, dirs = runs_root
    dirs.append(write_run(root, "persafl_me", 4, 0, personal=0.95, glob=0.9, majority=0.2,
                          dataset="mnist"))  # fmt: skip
    table = summary_table(final_table(load_runs(dirs)))
    keys = list(zip(table["dataset"], table["method"], table["tau"], strict=True))
    assert keys == [
        ("mnist", "persafl_me", 4),
        ("synthetic", "afl", 4),
        ("synthetic", "persafl_me", 4),
    ]
    mnist = table.iloc[0]
    assert mnist["acc_mean"] == pytest.approx(0.95) and mnist["majority_acc_mean"] == 0.2
    assert np.isnan(mnist["local_acc_mean"]) and mnist["local_n_seeds"] == 0
    assert table.iloc[2]["acc_mean"] == pytest.approx(0.8)  # mnist run not mixed in


def test_local_baseline_falls_back_to_all_taus_averaged_per_seed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    dirs = [
        write_run(root, "persafl_maml_fo", 2, 0, personal=0.8, glob=0.5, majority=0.3),
        write_run(root, "local", 0, 0, personal=0.4, glob=math.nan, majority=0.3),
        write_run(root, "local", 8, 0, personal=0.6, glob=math.nan, majority=0.3),
        write_run(root, "local", 0, 1, personal=0.8, glob=math.nan, majority=0.3),
    ]
    row = summary_table(final_table(load_runs(dirs))).iloc[0]
    # seed 0: mean(0.4, 0.6) = 0.5; seed 1: 0.8 -> mean 0.65, std sqrt(0.045)
    assert row["local_n_seeds"] == 2
    assert row["local_acc_mean"] == pytest.approx(0.65)
    assert row["local_acc_std"] == pytest.approx(math.sqrt(0.045))
    assert np.isnan(row["acc_std"])  # one seed: no std


def test_diverged_runs_count_but_nan_accuracies_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    diverged = {"personal": math.nan, "glob": math.nan, "majority": 0.3, "status": "diverged"}
    dirs = [
        write_run(root, "persafl_me", 1, 0, personal=0.6, glob=0.5, majority=0.3),
        write_run(root, "persafl_me", 1, 1, personal=0.8, glob=0.5, majority=0.3),
        write_run(root, "persafl_me", 1, 2, **diverged),
        write_run(root, "persafl_me", 1, 3, personal=0.1, glob=0.1, majority=0.3, status="running"),
    ]
    row = summary_table(final_table(load_runs(dirs))).iloc[0]
    assert row["n_seeds"] == 3  # the "running" run does not count
    assert row["n_diverged"] == 1
    assert row["acc_mean"] == pytest.approx(0.7)


def test_curves_and_final_tables(runs_root) -> None:
    _, dirs = runs_root
    runs = load_runs(dirs)
    curves = curves_table(runs)
    assert len(curves) == len(dirs) * len(UPDATES)
    assert list(curves.columns[:5]) == ["dataset", "partition", "method", "tau", "seed"]
    assert set(METRIC_COLUMNS) <= set(curves.columns)
    afl = curves[(curves["method"] == "afl") & (curves["seed"] == 1)]
    np.testing.assert_allclose(afl["headline_acc"], afl["global_acc_ca"])
    final = final_table(runs)
    assert len(final) == len(dirs)
    me0 = final[(final["method"] == "persafl_me") & (final["seed"] == 0)].iloc[0]
    assert me0["update"] == 100 and me0["dropped"] == 2 and me0["staleness_max"] == 2
    assert me0["headline_acc"] == pytest.approx(0.7)
    assert me0["status"] == "completed" and me0["wait_time"] == 3.0
    assert me0["git_commit"] == "commit-of-persafl_me"  # each run's code, from its summary


def test_missing_summary_names_the_directory(runs_root) -> None:
    _, dirs = runs_root
    (dirs[1] / "summary.json").unlink()
    with pytest.raises(AggregationError, match="no summary.json") as err:
        load_runs(dirs)
    assert str(dirs[1]) in str(err.value)


def test_missing_metrics_column_names_file_and_column(runs_root) -> None:
    _, dirs = runs_root
    metrics = dirs[2] / "metrics.csv"
    pd.read_csv(metrics).drop(columns="personal_acc_ca").to_csv(metrics, index=False)
    with pytest.raises(AggregationError) as err:
        load_runs(dirs)
    assert str(metrics) in str(err.value) and "personal_acc_ca" in str(err.value)


def test_non_numeric_metrics_and_bad_json_name_the_file(runs_root) -> None:
    _, dirs = runs_root
    metrics = dirs[0] / "metrics.csv"
    df = pd.read_csv(metrics).astype({"time": object})
    df.loc[1, "time"] = "soon"
    df.to_csv(metrics, index=False)
    with pytest.raises(AggregationError, match="column time is not numeric") as err:
        load_runs(dirs[:1])
    assert str(metrics) in str(err.value)
    (dirs[3] / "summary.json").write_text("{not json")
    with pytest.raises(AggregationError, match="summary.json: not valid JSON"):
        load_runs(dirs[3:4])


def test_cli_writes_every_table(runs_root, tmp_path: Path, capsys) -> None:
    _, dirs = runs_root
    runs_file = tmp_path / "runs.txt"
    runs_file.write_text("# runs\n" + "\n".join(str(d) for d in dirs[3:]) + "\n\n")
    counts = tmp_path / "partition_counts.csv"
    pd.DataFrame({"client": [1, 0], "class_0": [5, 0], "class_1": [0, 7]}).to_csv(
        counts, index=False
    )
    out = tmp_path / "tables"
    rc = main(
        [
            "--runs", *(str(d / "summary.json") for d in dirs[:3]),  # files in run dirs work
            "--runs-file", str(runs_file),
            "--partitions", f"synthetic={counts}",
            "--out-dir", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    for name in ("curves.csv", "final.csv", "table_final.csv", "table_final.md"):
        assert (out / name).stat().st_size > 0
    assert len(pd.read_csv(out / "final.csv")) == len(dirs)
    md = (out / "table_final.md").read_text()
    assert "| PersA-FL ME |" in md.replace("| synthetic | natural ", "")
    assert "80.0 ± 10.0" in md and "60.0 ± 14.1" in md and "40.0 ± 10.0" in md
    tex = (out / "table_final.tex").read_text()
    assert r"80.0 $\pm$ 10.0" in tex and r"\toprule" in tex and "persafl_me" not in tex
    copied = pd.read_csv(out / "partition_synthetic.csv")
    assert copied["client"].tolist() == [0, 1] and copied["class_1"].tolist() == [7, 0]


def test_cli_reports_incomplete_run_and_bad_partition(runs_root, tmp_path, capsys) -> None:
    _, dirs = runs_root
    (dirs[0] / "summary.json").unlink()
    assert main(["--runs", *map(str, dirs), "--out-dir", str(tmp_path / "t")]) == 1
    assert str(dirs[0]) in capsys.readouterr().err
    bad = tmp_path / "counts.csv"
    pd.DataFrame({"client": [0], "class_0": [1], "class_2": [3]}).to_csv(bad, index=False)
    assert main(["--partitions", f"x={bad}", "--out-dir", str(tmp_path / "t")]) == 1
    assert str(bad) in capsys.readouterr().err


def test_cli_partitions_alone_copy_only_the_counts(tmp_path: Path) -> None:
    counts = tmp_path / "partition_counts.csv"
    pd.DataFrame({"client": [0, 1], "class_0": [3, 0], "class_1": [1, 2]}).to_csv(
        counts, index=False
    )
    out = tmp_path / "tables"
    assert main(["--partitions", f"mnist={counts}", "--out-dir", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["partition_mnist.csv"]
    assert main(["--out-dir", str(out)]) == 1  # neither runs nor partitions: an error


def test_merging_partial_tables_gives_the_same_bytes_as_all_runs_at_once(runs_root, tmp_path):
    """The workflow aggregates per (dataset, partition, method, tau) cell, then merges the
    cells' tables (--tables): the result must equal aggregating every run at once."""
    _, dirs = runs_root
    whole = tmp_path / "whole"
    assert main(["--runs", *map(str, dirs), "--out-dir", str(whole)]) == 0
    cells = {}
    for d in dirs:
        cells.setdefault(d.parent, []).append(d)  # one cell: the seeds of one (method, tau)
    cell_dirs = []
    for i, runs in enumerate(cells.values()):
        out = tmp_path / f"cell{i}"
        args = ["--runs", *map(str, runs), "--out-dir", str(out), "--runs-tables-only"]
        assert main(args) == 0
        assert sorted(p.name for p in out.iterdir()) == ["curves.csv", "final.csv"]
        cell_dirs.append(str(out / "final.csv"))
    merged = tmp_path / "merged"
    assert main(["--tables", *reversed(cell_dirs), "--out-dir", str(merged)]) == 0
    for name in ("curves.csv", "final.csv", "table_final.csv", "table_final.md"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    twice = tmp_path / "twice"
    assert main(["--tables", cell_dirs[0], str(tmp_path / "cell0"), "--out-dir", str(twice)]) == 0
    (tmp_path / "copy").mkdir()
    for name in ("curves.csv", "final.csv"):
        (tmp_path / "copy" / name).write_bytes((tmp_path / "cell0" / name).read_bytes())
    bad = ["--tables", cell_dirs[0], str(tmp_path / "copy"), "--out-dir", str(twice)]
    assert main(bad) == 1
