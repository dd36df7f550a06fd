"""The tuning stage in the workflow: dry runs (what a target pulls in, what a changed grid
reruns) and one tiny real run of config/test_tuning.yaml (tuning, then the final runs reading
the selections, in one invocation). Helpers from tests/test_workflow.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from persafl import sweep, tuning
from test_workflow import REPO, dry_run, job_counts, run, train_jobs

pytestmark = pytest.mark.slow
TUNING_CONFIG = REPO / "config" / "test_tuning.yaml"
PAPER_CONFIG = REPO / "config" / "config.yaml"


def tune_jobs(counts: dict[str, int]) -> dict[str, int]:
    return {rule: n for rule, n in counts.items() if rule.startswith("tune_")}


def test_dry_run_tunes_every_method_with_the_same_budget(tmp_path):
    counts = dry_run(tmp_path, "--configfile", str(TUNING_CONFIG))
    cfg = sweep.load_sweep_config([TUNING_CONFIG])
    assert len(tune_jobs(counts)) == len(cfg["methods"]) * 2  # one rule per grid point
    assert counts["tuning_select"] == len(cfg["methods"])
    assert counts["tuning_run_config"] == len(cfg["methods"]) * 2 * 2  # points x seeds
    assert counts["validation_split"] == 2  # one tuning view per tuning seed
    assert train_jobs(counts) == len(cfg["methods"])


def test_base_papers_config_has_no_tuning(tmp_path):
    counts = dry_run(tmp_path, "--configfile", str(REPO / "config" / "base_papers.yaml"))
    assert not tune_jobs(counts) and "tuning_select" not in counts
    assert train_jobs(counts) == 15


def test_one_figure_pulls_in_only_its_data_sets_tuning(tmp_path):
    cfg = sweep.load_sweep_config([PAPER_CONFIG])
    counts = dry_run(tmp_path, "paper_figures/fig_accuracy_synthetic.pdf", "--configfile",
                     str(PAPER_CONFIG))
    assert counts["tuning_select"] == len(cfg["methods"])  # synthetic's, not MNIST's
    assert len(tune_jobs(counts)) == len(tuning.tuning_keys(cfg, "synthetic")) // 2
    assert all("_synthetic_" in rule for rule in tune_jobs(counts))
    part = dry_run(tmp_path, "paper_figures/fig_partition_synthetic.pdf", "--configfile",
                   str(PAPER_CONFIG))
    assert not tune_jobs(part) and train_jobs(part) == 0


def test_a_tuning_target_of_an_untuned_data_set_names_the_problem(tmp_path):
    # cifar10 is configured but disabled in the paper config: no tuning of it exists
    res = run(tmp_path, "-n", "results/tuning/cifar10/afl.yaml", "--configfile",
              str(PAPER_CONFIG))
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "no tuning of data set 'cifar10', method 'afl' in this config" in out
    assert "tuned data sets ['synthetic', 'mnist', 'fashion_mnist']" in out
    assert "KeyError" not in out


# ---- a tiny real run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tuned")
    res = run(workdir, "--cores", "2", "--configfile", str(TUNING_CONFIG), timeout=1500)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    return workdir


def test_final_runs_use_the_selected_values(tuned_run):
    cfg = sweep.load_sweep_config([TUNING_CONFIG])
    for method in cfg["methods"]:
        selection = yaml.safe_load(
            (tuned_run / tuning.selection_path("synthetic", method)).read_text())
        assert selection["seeds"] == [100, 101] and selection["staleness_bound"] in (0, 4)
        assert isinstance(selection["edge"], list)  # 2-point grids: always on an edge
        for key in sweep.run_keys(cfg):
            if key.method != method:
                continue
            run_cfg = yaml.safe_load((tuned_run / sweep.run_dir(key) / "run.yaml").read_text())
            for name, value in selection["hp"].items():
                assert run_cfg["method"]["hp"][name] == value


def test_tuning_table_figure_and_manifest(tuned_run):
    paper = tuned_run / "paper_figures"
    for f in ("fig_tuning_synthetic.pdf", "fig_tuning_synthetic.png", "table_tuning.csv",
              "table_tuning.md"):
        assert (paper / f).stat().st_size > 0, f
    table = pd.read_csv(paper / "table_tuning.csv")
    assert len(table) == 4 and set(table["grid_points"]) == {2}
    manifest = json.loads((paper / "manifest.json").read_text())
    assert {f["file"] for f in manifest["figures"]} >= {"fig_tuning_synthetic.pdf"}
    entries = {e["method"]: e for e in manifest["tuning"]}
    assert set(entries) == {"afl", "persafl_maml_fo", "persafl_me", "local"}
    assert all(e["final_runs"] for e in entries.values())


def test_nothing_left_to_do_after_the_tuned_run(tuned_run):
    res = run(tuned_run, "-n", "--configfile", str(TUNING_CONFIG))
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def test_a_changed_grid_reruns_only_the_affected_runs(tuned_run, tmp_path):
    """One value of ME's grid changed: only the grid point holding it trains, ME is reselected
    and its final runs retrain; the other methods' tuning and final runs stay up to date."""
    cfg = yaml.safe_load(TUNING_CONFIG.read_text())
    cfg["tuning"]["datasets"]["synthetic"]["grids"]["persafl_me"]["moreau_lambda"] = [5.0, 10.0]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    res = run(tuned_run, "-n", "--quiet=rules", "--configfile", str(changed))
    assert res.returncode == 0, res.stdout + res.stderr
    counts = job_counts(res.stdout + res.stderr)
    new_point = tuning.point_label({"moreau_lambda": 10.0})
    assert tune_jobs(counts) == {f"tune_synthetic_natural_persafl_me_{new_point}": 1}
    assert counts["tuning_select"] == 1
    assert {r: n for r, n in counts.items() if r.startswith("train_")} == {
        "train_synthetic_natural_persafl_me": 1
    }
