"""The staleness study config, its run configs and its time-to-target table."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from persafl import paper_files, timestudy
from persafl.config import resolve_run_config
from persafl.timetables import time_table

STUDY = Path(__file__).resolve().parents[1] / "config" / "staleness.yaml"


def test_the_committed_study_expands_into_valid_run_configs():
    cfg = timestudy.load_study(STUDY)
    runs = timestudy.all_runs(cfg)
    assert len(runs) == len(set(runs))
    dirs = {timestudy.run_dir(r) for r in runs}
    assert len(dirs) == len(runs)  # every run has its own directory
    for run in runs[:: max(1, len(runs) // 15)]:
        resolved = resolve_run_config(timestudy.run_config(cfg, run))
        assert resolved["schedule"]["staleness_bound"] == run.tau


def test_server_lr_adapted_to_the_bound():
    cfg = timestudy.load_study(STUDY)
    run = timestudy.StudyRun("drop_exponential_lr", "synthetic", "natural", "afl", 8, 0)
    assert timestudy.run_config(cfg, run)["method"]["hp"]["server_lr"] == pytest.approx(1 / 3)
    assert timestudy.adapted_server_lr(1.0, 3, 0.5) == 0.5
    assert timestudy.adapted_server_lr(0.8, 99, 0.0) == 0.8


def test_a_barrier_setting_with_a_bound_is_refused():
    cfg = timestudy.load_study(STUDY)
    bad = copy.deepcopy(cfg)
    bad["settings"]["sync_exponential"]["bounds"] = [0, 4]
    with pytest.raises(timestudy.StudyError, match="sync_exponential.bounds"):
        timestudy.validate(bad)
    bad = copy.deepcopy(cfg)
    bad["settings"]["delay"]["schedule"]["policy"] = "hold"
    with pytest.raises(timestudy.StudyError, match="settings.delay.schedule.policy"):
        timestudy.validate(bad)


def test_the_manifest_lists_the_study_only_when_the_sweep_names_it():
    cfg = {"staleness_study": str(STUDY), "datasets": {}, "figures": {"accuracy_tau": 0}}
    files = {Path(f).name for f in paper_files.paper_outputs(cfg)}
    assert {"fig_axes_synthetic.pdf", "fig_time_synthetic.png", "fig_bounds_synthetic.pdf",
            "table_time.md", "table_bounds.csv"} <= files
    no_study = paper_files.paper_outputs({**cfg, "staleness_study": None})
    assert no_study == list(paper_files.TABLE_COPIES)


def curve(setting: str, sync: bool, times: list[float], accs: list[float], seed: int = 0):
    return pd.DataFrame({
        "dataset": "d", "method": "afl", "setting": setting, "label": setting, "sync": sync,
        "speed": "exponential", "tau": 0 if sync else 4, "seed": seed, "status": "completed",
        "update": range(len(times)), "time": times, "headline_acc": accs,
    })


def test_time_to_target_on_hand_made_curves():
    # sync best 0.8 -> target 0.5 x 0.8 = 0.4, reached at t = 20 (0.2 at 10, 0.6 at 30)
    sync = curve("sync", True, [0, 10, 30, 40], [0.0, 0.2, 0.6, 0.8])
    # async: 0.4 at t = 4 (0.0 at 0, 0.8 at 8); a second one never gets there
    fast = curve("fast", False, [0, 8, 16], [0.0, 0.8, 0.9])
    slow = curve("slow", False, [0, 5, 50], [0.0, 0.1, 0.3])
    table = time_table(pd.concat([sync, fast, slow], ignore_index=True), 0.5, 401)
    rows = table.set_index("setting")
    assert rows.loc["fast", "target_acc"] == pytest.approx(0.4)
    assert rows.loc["fast", "sync_time"] == pytest.approx(20.0)
    assert rows.loc["fast", "async_time"] == pytest.approx(4.0)
    assert rows.loc["fast", "ratio"] == pytest.approx(0.2)
    assert pd.isna(rows.loc["slow", "async_time"]) and pd.isna(rows.loc["slow", "ratio"])
