"""The committed paper figures are a pure function of the committed tables.

For every figure in paper_figures/manifest.json, redraw it from the committed table under
results/tables/ with the recorded arguments and compare bytes with the committed file and the
manifest's sha256; the table copies in paper_figures/ must equal results/tables' files.

In a git checkout the files checked are the COMMITTED ones (``git archive HEAD`` of
paper_figures/, results/tables/ and config/ into a temporary folder): ``make reproduce``
rewrites paper_figures/ and its manifest in the working tree from the small default config, by
design, and that must not make the committed set look broken. Without git (an unpacked source
archive) the working tree is the committed set and is checked as it is.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from persafl import figures
from persafl.manifest import MANIFEST_FORMAT
from persafl.paper_files import figure_argv

CHECKOUT = Path(__file__).resolve().parents[1]
COMMITTED_PATHS = ("paper_figures", "results/tables", "config")


def committed_root(checkout: Path, paths: tuple[str, ...] = COMMITTED_PATHS) -> Path:
    """A folder holding HEAD's committed ``paths`` (figures, tables and configs by default;
    ``checkout`` itself when it is not a git checkout with those paths committed)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(checkout), "archive", "--format=tar", "HEAD", *paths],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return checkout
    root = Path(tempfile.mkdtemp(prefix="persafl-committed-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


REPO = committed_root(CHECKOUT)
MANIFEST = REPO / "paper_figures" / "manifest.json"
pytestmark = pytest.mark.skipif(
    not MANIFEST.is_file(),
    reason="no paper_figures/manifest.json: no committed figures (make reproduce writes them)",
)


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def draws() -> list[tuple[str, str, dict]]:
    """Distinct (kind, table, args) of the manifest's figures: one CLI call each (PDF + PNG)."""
    seen: dict[str, tuple[str, str, dict]] = {}
    for entry in load_manifest().get("figures", []):
        pdf = entry["path"].removesuffix(".png").removesuffix(".pdf") + ".pdf"
        seen.setdefault(pdf, (entry["kind"], entry["table"], entry["args"]))
    return [(pdf, *spec) for pdf, spec in seen.items()]


def test_manifest_lists_every_committed_figure_and_table():
    manifest = load_manifest()
    assert manifest["format"] == MANIFEST_FORMAT
    listed = {e["file"] for e in manifest["figures"]} | {e["file"] for e in manifest["tables"]}
    on_disk = {p.name for p in (REPO / "paper_figures").iterdir() if p.name != "manifest.json"}
    assert listed == on_disk
    assert manifest["config"]["hash"] == manifest["config_hash"]
    for config_file in manifest["config"]["files"]:
        assert sha256(REPO / config_file["path"]) == config_file["sha256"], config_file["path"]


@pytest.mark.parametrize(("pdf", "kind", "table", "args"), draws(), ids=lambda v: str(v))
def test_committed_figure_is_redrawn_byte_identically(pdf, kind, table, args, tmp_path):
    entries = {e["path"]: e for e in load_manifest()["figures"] if e["kind"] == kind}
    assert (REPO / table).is_file(), f"{table} (drawn into {pdf}) is not committed"
    assert sha256(REPO / table) == entries[pdf]["table_sha256"], (
        f"{table} changed after {pdf} was drawn: rerun the workflow's figure and manifest jobs"
    )
    out = tmp_path / Path(pdf).name
    assert figures.main(figure_argv(kind, REPO / table, args, out)) == 0
    for path in (pdf, pdf.removesuffix(".pdf") + ".png"):
        entry = entries[path]
        redrawn = (tmp_path / Path(path).name).read_bytes()
        assert hashlib.sha256(redrawn).hexdigest() == entry["sha256"], path
        assert redrawn == (REPO / path).read_bytes(), f"{path} differs from its redraw"


def test_table_copies_equal_the_aggregated_tables():
    for entry in load_manifest()["tables"]:
        committed = (REPO / entry["path"]).read_bytes()
        assert committed == (REPO / entry["table"]).read_bytes(), entry["path"]
        assert hashlib.sha256(committed).hexdigest() == entry["sha256"], entry["path"]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True)


def test_manifest_names_clean_committed_code():
    """The committed results were made by committed code: the manifest's commit, and the
    commit of every run behind the committed tables (``run_commits``, from each run's
    summary.json through the final.csv tables), is clean (no ``+dirty``) and an ancestor of
    HEAD. Runs aggregated before tables recorded their commit show as ``unknown``."""
    if _git("rev-parse", "HEAD").returncode != 0:
        pytest.skip("not a git checkout")
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("shallow clone: ancestry unknown")
    manifest = load_manifest()
    commits = [manifest["git_commit"], *manifest.get("run_commits", [])]
    for commit in commits:
        assert not commit.endswith("+dirty"), f"{commit}: results made by a modified tree"
        if commit == "unknown" and commit is not manifest["git_commit"]:
            continue
        ancestor = _git("merge-base", "--is-ancestor", commit, "HEAD")
        assert ancestor.returncode == 0, f"{commit} is not an ancestor of HEAD"
