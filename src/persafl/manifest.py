"""The manifest of the paper figures: what each file was drawn from, so it can be redrawn.

Every figure is a pure function of one aggregated table and a few arguments; the manifest
records them, so the committed figures can be redrawn from the committed tables alone
(tests/test_committed_figures.py does, byte for byte). The figure rules
(workflow/rules/figures.smk) and the manifest take the figure list, tables and arguments from
:func:`persafl.paper_files.figure_specs`; the workflow's manifest rule calls the CLI::

    python -m persafl.manifest --config config/synthetic.yaml [--override JSON] \
        [--repo .] --out paper_figures/manifest.json FILE...
    python -m persafl.manifest --config config/config.yaml --tuning-only \
        --out paper_figures/manifest.json      # add a tuning stage's figure and table
    python -m persafl.manifest --refresh paper_figures/manifest.json [--root .] [--repo .]

``FILE...`` are the paper_figures outputs (figures and table copies); each must be one that
``paper_files.figure_specs`` / ``paper_files.table_copies`` names for this config. Paths in the
manifest are relative to the workflow directory (the folder holding ``paper_figures/`` and
``results/``).

``--refresh`` rewrites an existing manifest in place from the committed files alone, without
the raw runs (:func:`refresh_manifest`): for tables and figures regenerated in another clone
and copied in. It rehashes every file the manifest names (figures, their tables, table copies,
config files) and records the current ``git_commit`` and ``run_commits``; everything else
(kinds, arguments, commands, the config hash, the tuning entries, whose selection files are
not committed) is kept. ``--root`` is the workflow directory (default: the working directory).

Format (``"format": 2``)::

    {"format": 2,
     "config": {"hash": H, "files": [{"path": "config/synthetic.yaml", "sha256": ...}],
                "overrides": {...}},
     "config_hash": H, "git_commit": ..., "run_commits": [...], "datasets": [...], "methods": [...],
     "staleness_bounds": [...], "seeds": [...],
     "figures": [{"file": "fig_accuracy_D.pdf", "path": "paper_figures/fig_accuracy_D.pdf",
                  "kind": "accuracy", "table": "results/tables/dataset~D/tau~T/curves.csv",
                  "table_sha256": ..., "args": {"dataset": D, "tau": T, "partition": P},
                  "command": "python -m persafl.figures accuracy ...",
                  "sha256": ..., "bytes": ...}, ...],
     "tables": [{"file": "table_final.csv", "path": "paper_figures/table_final.csv",
                 "table": "results/tables/table_final.csv", "sha256": ..., "bytes": ...}, ...],
     "tuning": [{"dataset": D, "method": M, "selection": "results/tuning/D/M.yaml",
                 "sha256": ..., "hp": {...}, "edge": [...], "tuning_runs": N,
                 "final_runs": ["results/runs/...", ...]}, ...],   # [] without tuning
     "tuning_config": {"hash": ..., "files": [...]}}   # only after --tuning-only

A figure's PDF and its PNG (written beside it by the same command) are two entries with the
same kind, table and args.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from persafl import sweep
from persafl.paper_files import (
    TABLE_COPIES,
    ManifestError,
    figure_argv,
    figure_specs,
    paper_outputs,
    study_path,
    table_copies,
)
from persafl.provenance import git_commit, run_commits

MANIFEST_FORMAT = 2
def tuning_provenance(cfg: Mapping[str, Any], root: Path) -> list[dict[str, Any]]:
    """Which tuning produced each final run: per tuned (data set, method) the selection file
    (results/tuning/D/M.yaml, its sha256 and values) and the final runs that read it."""
    import yaml

    from persafl.tuning import selection_path, tuned_datasets

    entries = []
    for dataset in tuned_datasets(cfg):
        for method in cfg["methods"]:
            path = selection_path(dataset, method)
            selection = yaml.safe_load((root / path).read_text())
            runs = [sweep.run_dir(k) for k in sweep.run_keys(cfg, dataset) if k.method == method]
            entries.append({"dataset": dataset, "method": method, "selection": path,
                            "sha256": sha256_of(root / path), "hp": selection["hp"],
                            "edge": selection["edge"], "tuning_runs": len(selection["runs"]),
                            "final_runs": runs})
    return entries


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _relative(path: str | Path, repo: Path) -> str:
    """``path`` relative to the repository when inside it (the manifest is committed)."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(path)


def _file_entry(path: str, root: Path) -> dict[str, Any]:
    data = (root / path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    return {"file": Path(path).name, "path": path, "sha256": sha, "bytes": len(data)}


def build_manifest(
    cfg: Mapping[str, Any],
    files: Sequence[str | Path],
    *,
    root: str | Path = ".",
    repo: str | Path = ".",
    config_files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of ``files`` (paths relative to the workflow directory ``root``).

    ``files`` must be exactly :func:`paper_outputs` of ``cfg`` (in any order): a file the
    config does not draw, or one it draws that is not given, is a :class:`ManifestError`.
    """
    root = Path(root)
    given = {Path(f).as_posix() for f in files}
    expected = paper_outputs(cfg)
    unknown = sorted(given - set(expected))
    if unknown:
        raise ManifestError(f"no figure or table of this sweep config is drawn as {unknown}")
    absent = [f for f in expected if f not in given]
    if absent:
        raise ManifestError(f"files of this sweep config not given: {absent}")
    figures = []
    for spec in figure_specs(cfg):
        argv = figure_argv(spec.kind, spec.table, spec.args, spec.pdf)
        command = shlex.join(["python", "-m", "persafl.figures", *argv])
        for path in spec.outputs:
            entry = _file_entry(path, root)
            figures.append(
                {
                    "file": entry["file"],
                    "path": path,
                    "kind": spec.kind,
                    "table": spec.table,
                    "table_sha256": sha256_of(root / spec.table),
                    "args": dict(spec.args),
                    "command": command,
                    "sha256": entry["sha256"],
                    "bytes": entry["bytes"],
                }
            )
    tables = []
    for path, table in table_copies(cfg).items():
        entry = _file_entry(path, root)
        tables.append({**entry, "table": table})
    repo = Path(repo)
    study = study_path(cfg)
    if study is not None:  # the study's own config is an input of its figures: record it too
        config_files = [*config_files, study]
    return {
        "format": MANIFEST_FORMAT,
        "config": {
            "hash": sweep.config_hash(cfg),
            "files": [{"path": _relative(f, repo), "sha256": sha256_of(f)} for f in config_files],
            "overrides": dict(overrides or {}),
        },
        "config_hash": sweep.config_hash(cfg),
        "git_commit": git_commit(repo),
        # the code that trained the runs behind results/tables (persafl.provenance)
        "run_commits": run_commits(root / "results" / "tables"),
        "datasets": sweep.datasets(cfg),
        "methods": list(cfg["methods"]),
        "staleness_bounds": list(cfg["staleness_bounds"]),
        "seeds": list(cfg["seeds"]),
        "figures": figures,
        "tables": tables,
        "tuning": tuning_provenance(cfg, root),
    }


def add_tuning(
    manifest: dict[str, Any],
    cfg: Mapping[str, Any],
    *,
    root: str | Path = ".",
    repo: str | Path = ".",
    config_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """``manifest`` with the tuning figures and tables of ``cfg`` in place of any it held, and
    the config that tuned them under ``tuning_config``: for committing a tuning stage's outputs
    beside final figures made with another (e.g. the untuned) config."""
    root = Path(root)
    tuning_specs = [spec for spec in figure_specs(cfg) if spec.kind == "tuning"]
    kept = [f for f in manifest["figures"] if f["kind"] != "tuning"]
    for spec in tuning_specs:
        argv = figure_argv(spec.kind, spec.table, spec.args, spec.pdf)
        command = shlex.join(["python", "-m", "persafl.figures", *argv])
        for path in spec.outputs:
            entry = _file_entry(path, root)
            kept.append({"file": entry["file"], "path": path, "kind": spec.kind,
                         "table": spec.table, "table_sha256": sha256_of(root / spec.table),
                         "args": dict(spec.args), "command": command,
                         "sha256": entry["sha256"], "bytes": entry["bytes"]})
    copies = {k: v for k, v in table_copies(cfg).items() if k not in TABLE_COPIES}
    tables = [t for t in manifest["tables"] if t["path"] not in copies]
    tables += [{**_file_entry(path, root), "table": table} for path, table in copies.items()]
    repo = Path(repo)
    return {
        **manifest,
        "figures": kept,
        "tables": tables,
        "tuning": tuning_provenance(cfg, root),
        "tuning_config": {
            "hash": sweep.config_hash(cfg),
            "files": [{"path": _relative(f, repo), "sha256": sha256_of(f)} for f in config_files],
        },
    }


def _missing_files(manifest: Mapping[str, Any], root: Path, repo: Path) -> list[str]:
    """The files ``manifest`` names that are not there: figures, their tables and table copies
    (relative to ``root``), config files (relative to ``repo``)."""
    named = [e[key] for e in manifest["figures"] for key in ("path", "table")]
    named += [e["path"] for e in manifest["tables"]]
    missing = [p for p in dict.fromkeys(named) if not (root / p).is_file()]
    files = manifest["config"]["files"]
    return missing + [f["path"] for f in files if not (repo / f["path"]).is_file()]


def _rehashed(entry: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A figure or table copy entry with its ``sha256`` and ``bytes`` (and a figure's
    ``table_sha256``) recomputed; its keys keep their order."""
    fresh = _file_entry(entry["path"], root)
    hashed = {**entry, "sha256": fresh["sha256"], "bytes": fresh["bytes"]}
    if "table_sha256" in entry:
        hashed["table_sha256"] = sha256_of(root / entry["table"])
    return hashed


def sweep_config_hash(config: Mapping[str, Any], repo: Path) -> str:
    """The hash of the sweep config a manifest's ``config`` entry names: its files (less the
    staleness study's own config, which :func:`build_manifest` appends) with its overrides."""
    paths = [repo / f["path"] for f in config["files"]]
    overrides = dict(config.get("overrides") or {})
    study = study_path(sweep.load_sweep_config(paths[:1], overrides))
    files = [p for p in paths if study is None or p.resolve() != (repo / study).resolve()]
    return sweep.config_hash(sweep.load_sweep_config(files, overrides))


def refresh_manifest(manifest: Mapping[str, Any], *, root: Path, repo: Path) -> dict[str, Any]:
    """``manifest`` recomputed from the files it names alone, without the raw runs.

    Every figure and table copy (paths relative to the workflow directory ``root``) gets its
    ``sha256`` and ``bytes``, every figure its ``table_sha256``, every config file (path
    relative to ``repo``) its ``sha256``; ``git_commit`` is ``repo``'s HEAD and
    ``run_commits`` those of ``root/results/tables``; the config hash is recomputed from the
    config files (:func:`sweep_config_hash`). All else is kept as is, the tuning
    entries too (their selection files, results/tuning/, are not committed). ``manifest`` is
    not changed. A named file that is missing is a :class:`ManifestError` naming it.
    """
    root, repo = Path(root), Path(repo)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(
            f"manifest format {manifest.get('format')!r}; --refresh reads format {MANIFEST_FORMAT}"
        )
    missing = _missing_files(manifest, root, repo)
    if missing:
        raise ManifestError(f"files the manifest names are missing: {missing}")
    fresh = copy.deepcopy(dict(manifest))
    config = fresh["config"]
    config["files"] = [{**f, "sha256": sha256_of(repo / f["path"])} for f in config["files"]]
    if config["files"]:  # a changed config file (resources, comments) changes its hash too
        config["hash"] = fresh["config_hash"] = sweep_config_hash(config, repo)
    fresh["git_commit"] = git_commit(repo)
    fresh["run_commits"] = run_commits(root / "results" / "tables")
    fresh["figures"] = [_rehashed(e, root) for e in fresh["figures"]]
    fresh["tables"] = [_rehashed(e, root) for e in fresh["tables"]]
    return fresh


def _parser() -> argparse.ArgumentParser:
    """The CLI: build (``--config ... --out ... FILE...``), ``--tuning-only``, ``--refresh``."""
    from persafl.sweep_cli import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="python -m persafl.manifest",
        usage="%(prog)s --config CONFIG [--override JSON] [--schema SCHEMA] [--repo REPO]\n"
        "           [--tuning-only] --out OUT [FILE ...]\n"
        "       %(prog)s --refresh MANIFEST [--root ROOT] [--repo REPO]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="the manifest JSON to write")
    parser.add_argument("--repo", default=".", help="git repository whose commit is recorded")
    parser.add_argument(
        "--tuning-only",
        action="store_true",
        help="add this config's tuning figures and tables to the existing --out manifest",
    )
    _add_refresh_arguments(parser)
    parser.add_argument("files", nargs="*", help="paper_figures files (figures, table copies)")
    return parser


def _add_refresh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh",
        metavar="MANIFEST",
        help="rewrite this manifest in place from the committed files alone (no --config, "
        "--out, --override, --schema, --tuning-only or FILE)",
    )
    parser.add_argument(
        "--root", default=".", help="with --refresh: the workflow directory (default: .)"
    )


def _refresh_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """The ``--refresh`` arguments when ``argv`` asks for a refresh, else None. Exits with a
    usage error when it also names an option or file of the other modes."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_refresh_arguments(pre)
    pre.add_argument("--repo", default=".")
    args, extra = pre.parse_known_args(argv)
    if args.refresh is None or {"-h", "--help"} & set(extra):
        return None
    if extra:
        _parser().error(
            f"--refresh takes only --root and --repo, not {' '.join(extra)} "
            "(build a manifest with --config ... --out ... FILE... instead)"
        )
    return args


def _refresh_main(args: argparse.Namespace) -> int:
    """``--refresh``: rewrite the manifest in place (atomically)."""
    from persafl.io import atomic_write_text

    try:
        old = json.loads(Path(args.refresh).read_text())
        manifest = refresh_manifest(old, root=Path(args.root), repo=Path(args.repo))
        atomic_write_text(args.refresh, json.dumps(manifest, indent=2) + "\n")
    except (ManifestError, OSError, json.JSONDecodeError) as err:
        print(f"persafl.manifest: {args.refresh}: {err}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as err:
        print(f"persafl.manifest: {args.refresh}: not a manifest ({err!r})", file=sys.stderr)
        return 2
    changed = sum(
        new != before
        for kind in ("figures", "tables")
        for new, before in zip(manifest[kind], old[kind], strict=True)
    )
    print(
        f"refreshed {args.refresh}: {len(manifest['figures'])} figures, "
        f"{len(manifest['tables'])} tables; entries changed: {changed}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    from persafl.io import atomic_write_text

    argv = list(sys.argv[1:] if argv is None else argv)
    refresh = _refresh_args(argv)
    if refresh is not None:
        return _refresh_main(refresh)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.root != ".":
        parser.error("--root goes with --refresh")
    try:
        overrides = json.loads(args.override)
        cfg = sweep.load_sweep_config(args.config, overrides, args.schema)
        if args.tuning_only:
            manifest = add_tuning(json.loads(Path(args.out).read_text()), cfg, repo=args.repo,
                                  config_files=args.config)
        else:
            manifest = build_manifest(
                cfg, args.files, repo=args.repo, config_files=args.config, overrides=overrides
            )
        atomic_write_text(args.out, json.dumps(manifest, indent=2) + "\n")
    except (sweep.SweepError, ManifestError, OSError, json.JSONDecodeError) as err:
        print(f"persafl.manifest: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(manifest['figures'])} figures, {len(manifest['tables'])} tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
