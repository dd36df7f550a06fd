"""persafl.manifest: the figure specs, the manifest format, and the `python -m` CLIs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from persafl import figures, manifest, sweep

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"


def cfg() -> dict:
    return sweep.load_sweep_config([TEST_CONFIG])


def test_specs_name_each_figure_its_table_and_arguments():
    c = cfg()
    tau = c["figures"]["accuracy_tau"]
    part = next(iter(c["datasets"]["synthetic"]["partitions"]))
    specs = {s.kind: s for s in manifest.figure_specs(c) if s.dataset == "synthetic"}
    assert specs["accuracy"].table == f"results/tables/dataset~synthetic/tau~{tau}/curves.csv"
    assert specs["accuracy"].args == {"dataset": "synthetic", "tau": tau, "partition": part}
    assert specs["staleness"].table == "results/tables/dataset~synthetic/final.csv"
    assert specs["partition"].table == "results/tables/partition_synthetic.csv"
    assert specs["accuracy"].outputs == (
        "paper_figures/fig_accuracy_synthetic.pdf",
        "paper_figures/fig_accuracy_synthetic.png",
    )
    outputs = manifest.paper_outputs(c)
    assert len(outputs) == len(set(outputs)) == 6 * len(sweep.datasets(c)) + 3


def test_figure_argv_is_the_figures_cli():
    argv = manifest.figure_argv("accuracy", "t.csv", {"dataset": "d", "tau": 4}, "o.pdf")
    assert argv == ["accuracy", "--curves", "t.csv", "--dataset", "d", "--tau", "4", "--out",
                    "o.pdf"]  # fmt: skip
    assert manifest.figure_argv("partition", "p.csv", {"title": None}, "o.pdf") == [
        "partition", "--counts", "p.csv", "--out", "o.pdf",
    ]  # fmt: skip
    figures._parser().parse_args(argv)  # the figures CLI accepts it
    with pytest.raises(manifest.ManifestError, match="heatmap"):
        manifest.figure_argv("heatmap", "t.csv", {}, "o.pdf")


def fake_outputs(root: Path, c: dict) -> list[str]:
    """Every paper_figures file and every table a spec names, with distinct contents."""
    paths = manifest.paper_outputs(c) + [s.table for s in manifest.figure_specs(c)]
    paths += list(manifest.TABLE_COPIES.values())
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    return manifest.paper_outputs(c)


def test_manifest_records_table_args_and_hashes(tmp_path):
    c = cfg()
    files = fake_outputs(tmp_path, c)
    m = manifest.build_manifest(c, files, root=tmp_path, repo=REPO, config_files=[TEST_CONFIG])
    assert m["format"] == manifest.MANIFEST_FORMAT
    assert m["config"]["hash"] == m["config_hash"] == sweep.config_hash(c)
    assert m["config"]["files"] == [
        {"path": "config/test.yaml", "sha256": hashlib.sha256(TEST_CONFIG.read_bytes()).hexdigest()}
    ]
    by_path = {e["path"]: e for e in m["figures"]}
    acc = by_path["paper_figures/fig_accuracy_synthetic.png"]
    assert acc["kind"] == "accuracy" and acc["table"].endswith("curves.csv")
    assert acc["args"]["dataset"] == "synthetic"
    assert acc["sha256"] == hashlib.sha256(acc["path"].encode()).hexdigest()
    assert acc["table_sha256"] == hashlib.sha256(acc["table"].encode()).hexdigest()
    assert "--out paper_figures/fig_accuracy_synthetic.pdf" in acc["command"]
    assert {e["table"] for e in m["tables"]} == set(manifest.TABLE_COPIES.values())
    json.dumps(m)  # serialisable


def test_manifest_refuses_files_the_config_does_not_draw(tmp_path):
    c = cfg()
    files = fake_outputs(tmp_path, c)
    with pytest.raises(manifest.ManifestError, match="fig_extra"):
        manifest.build_manifest(c, [*files, "paper_figures/fig_extra.pdf"], root=tmp_path)
    with pytest.raises(manifest.ManifestError, match="not given"):
        manifest.build_manifest(c, files[1:], root=tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["persafl.sweep", "list", "--config", str(TEST_CONFIG)],
        ["persafl.aggregate", "--help"],
        ["persafl.manifest", "--help"],
    ],
)
def test_module_clis_run_as_the_rules_call_them(argv):
    res = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()
