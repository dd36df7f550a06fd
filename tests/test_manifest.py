"""persafl.paper_files and persafl.manifest: the figure specs, the manifest format, the CLIs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from persafl import figures, manifest, paper_files, sweep

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"


def cfg() -> dict:
    return sweep.load_sweep_config([TEST_CONFIG])


def test_specs_name_each_figure_its_table_and_arguments():
    c = cfg()
    tau = c["figures"]["accuracy_tau"]
    part = next(iter(c["datasets"]["synthetic"]["partitions"]))
    specs = {s.kind: s for s in paper_files.figure_specs(c) if s.dataset == "synthetic"}
    assert specs["accuracy"].table == f"results/tables/dataset~synthetic/tau~{tau}/curves.csv"
    assert specs["accuracy"].args == {"dataset": "synthetic", "tau": tau, "partition": part}
    assert specs["staleness"].table == "results/tables/dataset~synthetic/final.csv"
    assert specs["partition"].table == "results/tables/partition_synthetic.csv"
    assert specs["accuracy"].outputs == (
        "paper_figures/fig_accuracy_synthetic.pdf",
        "paper_figures/fig_accuracy_synthetic.png",
    )
    outputs = paper_files.paper_outputs(c)
    assert len(outputs) == len(set(outputs)) == 6 * len(sweep.datasets(c)) + 3


def test_figure_argv_is_the_figures_cli():
    argv = paper_files.figure_argv("accuracy", "t.csv", {"dataset": "d", "tau": 4}, "o.pdf")
    assert argv == ["accuracy", "--curves", "t.csv", "--dataset", "d", "--tau", "4", "--out",
                    "o.pdf"]  # fmt: skip
    assert paper_files.figure_argv("partition", "p.csv", {"title": None}, "o.pdf") == [
        "partition", "--counts", "p.csv", "--out", "o.pdf",
    ]  # fmt: skip
    figures._parser().parse_args(argv)  # the figures CLI accepts it
    with pytest.raises(paper_files.ManifestError, match="heatmap"):
        paper_files.figure_argv("heatmap", "t.csv", {}, "o.pdf")


def fake_outputs(root: Path, c: dict) -> list[str]:
    """Every paper_figures file and every table a spec names, with distinct contents."""
    paths = paper_files.paper_outputs(c) + [s.table for s in paper_files.figure_specs(c)]
    paths += list(paper_files.TABLE_COPIES.values())
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    return paper_files.paper_outputs(c)


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
    assert {e["table"] for e in m["tables"]} == set(paper_files.TABLE_COPIES.values())
    json.dumps(m)  # serialisable


def test_manifest_refuses_files_the_config_does_not_draw(tmp_path):
    c = cfg()
    files = fake_outputs(tmp_path, c)
    with pytest.raises(paper_files.ManifestError, match="fig_extra"):
        manifest.build_manifest(c, [*files, "paper_figures/fig_extra.pdf"], root=tmp_path)
    with pytest.raises(paper_files.ManifestError, match="not given"):
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


def committed_tree(root: Path) -> dict:
    """A workflow directory under ``root`` with every file the test config's manifest names
    (its config file copied to config/test.yaml) and that manifest, built with ``repo=root``."""
    c = cfg()
    files = fake_outputs(root, c)
    config = root / "config" / "test.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_bytes(TEST_CONFIG.read_bytes())
    return manifest.build_manifest(c, files, root=root, repo=root, config_files=[config])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_refresh_rehashes_exactly_the_changed_figure_and_its_table(tmp_path):
    old = committed_tree(tmp_path)
    before = json.loads(json.dumps(old))
    pdf = "paper_figures/fig_accuracy_synthetic.pdf"
    table = next(e["table"] for e in old["figures"] if e["path"] == pdf)
    (tmp_path / pdf).write_bytes(b"a redrawn figure, longer than before")
    (tmp_path / table).write_bytes(b"step,accuracy\n0,0.5\n")

    new = manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path)

    assert old == before  # the input is not changed
    expected = json.loads(json.dumps(old))
    for entry in expected["figures"]:
        if entry["table"] == table:  # the PDF and the PNG drawn from the same table
            entry["table_sha256"] = sha(b"step,accuracy\n0,0.5\n")
        if entry["path"] == pdf:
            entry["sha256"] = sha(b"a redrawn figure, longer than before")
            entry["bytes"] = len(b"a redrawn figure, longer than before")
    assert new == expected
    assert new != old and [e for e in new["figures"] if e["table"] == table]
    assert list(new) == list(old)  # same keys in the same order: the committed JSON diffs small
    assert [list(e) for e in new["figures"]] == [list(e) for e in old["figures"]]
    # and the refreshed manifest is the one a full build of the changed tree writes
    rebuilt = manifest.build_manifest(
        cfg(),
        paper_files.paper_outputs(cfg()),
        root=tmp_path,
        repo=tmp_path,
        config_files=[tmp_path / "config/test.yaml"],
    )
    assert new == rebuilt


def test_refresh_of_an_unchanged_tree_is_a_fixed_point(tmp_path):
    old = committed_tree(tmp_path)
    assert old["git_commit"] == manifest.git_commit(tmp_path)  # "unknown": not a repository
    assert manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path) == old


def test_refresh_rehashes_config_files_and_rereads_run_commits(tmp_path):
    old = committed_tree(tmp_path)
    config = tmp_path / "config" / "test.yaml"
    assert manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path)["config_hash"] == (
        old["config_hash"]
    )  # the hash is recomputed from the file, and equals the build's
    changed = config.read_bytes() + b"\nseeds: [0, 1, 2, 3]\n"  # a later key wins in YAML
    config.write_bytes(changed)
    runs = tmp_path / "results/tables/regime/dataset~synthetic/final.csv"
    runs.parent.mkdir(parents=True)
    runs.write_text("run,git_commit\na,abc123\nb,def456\n")

    new = manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path)

    assert new["config"]["files"] == [{"path": "config/test.yaml", "sha256": sha(changed)}]
    expected = sweep.config_hash(sweep.load_sweep_config([config]))
    assert new["config"]["hash"] == new["config_hash"] == expected != old["config_hash"]
    assert "abc123" in new["run_commits"] and "def456" in new["run_commits"]
    assert "abc123" not in old["run_commits"]
    assert new["figures"] == old["figures"] and new["tables"] == old["tables"]


def test_refresh_keeps_tuning_entries_and_fields_it_cannot_recompute(tmp_path):
    old = committed_tree(tmp_path)
    tuning = [{"dataset": "synthetic", "method": "afl", "selection": "results/tuning/x.yaml",
               "sha256": "0" * 64, "hp": {"local_lr": 0.1}, "edge": [], "tuning_runs": 3,
               "final_runs": ["results/runs/x"]}]  # fmt: skip
    old |= {"tuning": tuning, "tuning_config": {"hash": "h", "files": []}}
    new = manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path)
    assert new["tuning"] == tuning and new["tuning_config"] == {"hash": "h", "files": []}
    assert new["tuning"] is not tuning  # a copy: editing the result leaves the input alone


def test_refresh_names_the_missing_files(tmp_path):
    old = committed_tree(tmp_path)
    gone = ["paper_figures/fig_partition_synthetic.png", "results/tables/partition_synthetic.csv",
            "paper_figures/table_final.md"]  # fmt: skip
    for path in gone:
        (tmp_path / path).unlink()
    with pytest.raises(paper_files.ManifestError, match="missing") as err:
        manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path)
    for path in gone:
        assert path in str(err.value)
    assert "fig_accuracy_synthetic" not in str(err.value)
    (tmp_path / "config" / "test.yaml").unlink()
    with pytest.raises(paper_files.ManifestError, match="config/test.yaml"):
        manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path)


def test_refresh_cli_rewrites_the_manifest_in_place(tmp_path, capsys):
    old = committed_tree(tmp_path)
    path = tmp_path / "paper_figures" / "manifest.json"
    path.write_text(json.dumps(old, indent=2) + "\n")
    (tmp_path / "paper_figures/fig_staleness_synthetic.png").write_bytes(b"new png")

    rc = manifest.main(["--refresh", str(path), "--root", str(tmp_path), "--repo", str(tmp_path)])

    assert rc == 0, capsys.readouterr().err
    assert "entries changed: 1" in capsys.readouterr().out
    written = json.loads(path.read_text())
    assert written == manifest.refresh_manifest(old, root=tmp_path, repo=tmp_path) != old
    assert path.read_text() == json.dumps(written, indent=2) + "\n"
    assert [p.name for p in path.parent.glob(".manifest.json.*")] == []  # no temp file left


def test_refresh_cli_refuses_the_build_options_and_a_missing_file(tmp_path, capsys):
    old = committed_tree(tmp_path)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(old))
    text = path.read_text()
    for extra in (["--config", str(TEST_CONFIG)], ["--out", "x.json"], ["--tuning-only"],
                  ["paper_figures/table_final.csv"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            manifest.main(["--refresh", str(path), *extra])
        assert exit_.value.code == 2
        assert f"--refresh takes only --root and --repo, not {extra[0]}" in capsys.readouterr().err
    (tmp_path / "paper_figures/table_final.tex").unlink()
    assert manifest.main(["--refresh", str(path), "--root", str(tmp_path)]) == 2
    assert "paper_figures/table_final.tex" in capsys.readouterr().err
    assert path.read_text() == text  # left as it was


def test_build_cli_still_writes_the_manifest(tmp_path, monkeypatch, capsys):
    c = cfg()
    files = fake_outputs(tmp_path, c)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "paper_figures" / "manifest.json"
    argv = ["--config", str(TEST_CONFIG), "--repo", str(tmp_path), "--out", str(out), *files]
    assert manifest.main(argv) == 0, capsys.readouterr().err
    expected = manifest.build_manifest(
        c, files, root=tmp_path, repo=tmp_path, config_files=[str(TEST_CONFIG)], overrides={}
    )
    assert json.loads(out.read_text()) == expected
    with pytest.raises(SystemExit):
        manifest.main([*argv, "--root", "elsewhere"])
    assert "--root goes with --refresh" in capsys.readouterr().err
