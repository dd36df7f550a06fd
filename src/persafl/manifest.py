"""The manifest of the paper figures: what each file was drawn from, so it can be redrawn.

Every figure is a pure function of one aggregated table and a few arguments; the manifest
records them, so the committed figures can be redrawn from the committed tables alone
(tests/test_committed_figures.py does, byte for byte). The figure rules
(workflow/rules/figures.smk) and the manifest take the figure list, tables and arguments from
:func:`figure_specs`; the workflow's manifest rule calls the CLI::

    python -m persafl.manifest --config config/synthetic.yaml [--override JSON] \
        [--repo .] --out paper_figures/manifest.json FILE...
    python -m persafl.manifest --config config/config.yaml --tuning-only \
        --out paper_figures/manifest.json      # add a tuning stage's figure and table
    python -m persafl.manifest --refresh paper_figures/manifest.json [--root .] [--repo .]

``FILE...`` are the paper_figures outputs (figures and table copies); each must be one that
:func:`figure_specs` / :func:`table_copies` names for this config. Paths in the manifest are
relative to the workflow directory (the folder holding ``paper_figures/`` and ``results/``).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persafl import sweep
from persafl.provenance import git_commit, run_commits

MANIFEST_FORMAT = 2
FIGURES_DIR = "paper_figures"
TABLES_DIR = "results/tables"
# figure kind -> the persafl.figures option naming its table
TABLE_OPTIONS: dict[str, str] = {
    "accuracy": "--curves",
    "staleness": "--final",
    "partition": "--counts",
    "tuning": "--table",
    # the staleness and time study (persafl.timefigures)
    "axes": "--curves",
    "time": "--curves",
    "bounds": "--table",
    "regime": "--summary",
}
STUDY_TABLES = f"{TABLES_DIR}/staleness"
STUDY_TABLE_NAMES = ("table_time", "table_bounds")
# paper_figures copy -> the aggregated table it copies
TABLE_COPIES: dict[str, str] = {
    f"{FIGURES_DIR}/table_final.{ext}": f"{TABLES_DIR}/table_final.{ext}"
    for ext in ("csv", "md", "tex")
}
# with ``figures.anchor``: the synchronous anchor's table (workflow/rules/anchor.smk)
ANCHOR_COPIES: dict[str, str] = {
    f"{FIGURES_DIR}/table_anchor.{ext}": f"{TABLES_DIR}/table_anchor.{ext}" for ext in ("csv", "md")
}


class ManifestError(ValueError):
    """A file that no figure spec names, or a spec's file missing; the message names it."""


@dataclass(frozen=True)
class FigureSpec:
    """One paper figure: ``python -m persafl.figures KIND --TABLE table --ARG value ...``."""

    kind: str
    dataset: str
    table: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def pdf(self) -> str:
        return f"{FIGURES_DIR}/fig_{self.kind}_{self.dataset}.pdf"

    @property
    def outputs(self) -> tuple[str, str]:
        """The PDF and the PNG the figure CLI writes beside it."""
        return self.pdf, self.pdf.removesuffix(".pdf") + ".png"


def figure_partition(cfg: Mapping[str, Any], dataset: str) -> str:
    """The partition a data set's single-partition figures show: its first one."""
    return next(iter(cfg["datasets"][dataset]["partitions"]))


def figure_specs(cfg: Mapping[str, Any]) -> list[FigureSpec]:
    """Every paper figure of the sweep, per data set: accuracy, staleness, partition."""
    tau = int(cfg["figures"]["accuracy_tau"])
    specs = []
    for dataset in sweep.datasets(cfg):
        partition = figure_partition(cfg, dataset)
        tables = f"{TABLES_DIR}/dataset~{dataset}"
        specs += [
            FigureSpec(
                "accuracy",
                dataset,
                f"{tables}/tau~{tau}/curves.csv",
                {"dataset": dataset, "tau": tau, "partition": partition},
            ),
            FigureSpec(
                "staleness",
                dataset,
                f"{tables}/final.csv",
                {"dataset": dataset, "partition": partition},
            ),
            FigureSpec("partition", dataset, f"{TABLES_DIR}/partition_{dataset}.csv"),
        ]
    # the regime study's figures (issue 14), drawn from its committed tables (config/regime.yaml)
    for dataset in cfg["figures"].get("regime", []):
        table = f"{TABLES_DIR}/regime/dataset~{dataset}/summary.csv"
        specs.append(FigureSpec("regime", dataset, table, {"dataset": dataset}))
    from persafl.tuning import tuned_datasets  # the tuning grids' figures (persafl.tuning)

    specs += [FigureSpec("tuning", d, f"{TABLES_DIR}/tuning_{d}.csv", {"dataset": d})
              for d in tuned_datasets(cfg)]
    return specs + study_specs(cfg)


def table_copies(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Every table copied into paper_figures/ (copy -> the table it copies) for this config:
    :data:`TABLE_COPIES`; the anchor's with ``figures.anchor``; the tuning table when the config
    tunes; the staleness study's tables when it names one."""
    from persafl.tuning import tuned_datasets

    anchor = bool((cfg.get("figures") or {}).get("anchor", False))
    copies = {**TABLE_COPIES, **(ANCHOR_COPIES if anchor else {}), **study_table_copies(cfg)}
    if tuned_datasets(cfg):
        copies |= {f"{FIGURES_DIR}/table_tuning.{ext}": f"{TABLES_DIR}/table_tuning.{ext}"
                   for ext in ("csv", "md")}
    return copies


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


def load_study_of(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The staleness study config the sweep config names (``staleness_study``), or None.

    The path is relative to the working directory, else to this checkout.
    """
    found = study_path(cfg)
    if found is None:
        return None
    from persafl import timestudy

    return timestudy.load_study(found)


def study_path(cfg: Mapping[str, Any]) -> Path | None:
    """The study config file named by ``staleness_study`` (working directory, else this
    checkout), or None."""
    path = cfg.get("staleness_study")
    if not path:
        return None
    found = Path(path)
    return found if found.is_file() else Path(__file__).resolve().parents[2] / path


def study_specs(cfg: Mapping[str, Any]) -> list[FigureSpec]:
    """The staleness study's figures (none unless the sweep config names a study)."""
    study = load_study_of(cfg)
    if study is None:
        return []
    curves, bounds = f"{STUDY_TABLES}/curves.csv", f"{STUDY_TABLES}/table_bounds.csv"
    specs = []
    for dataset in study["datasets"]:
        setting = study["figures"].get("bounds_setting") or next(iter(study["settings"]))
        specs += [
            FigureSpec("axes", dataset, curves, {"dataset": dataset, "setting": setting}),
            FigureSpec("time", dataset, curves, {"dataset": dataset}),
            FigureSpec("bounds", dataset, bounds, {"dataset": dataset}),
        ]
    return specs


def study_spec(cfg: Mapping[str, Any], kind: str, dataset: str) -> FigureSpec:
    for spec in study_specs(cfg):
        if (spec.kind, spec.dataset) == (kind, dataset):
            return spec
    raise ManifestError(f"no staleness study figure {kind!r} for data set {dataset!r}")


def study_argv(cfg: Mapping[str, Any], kind: str, dataset: str, out: str) -> list[str]:
    """The ``persafl.figures`` arguments of a study figure (the workflow's figure rule)."""
    spec = study_spec(cfg, kind, dataset)
    return figure_argv(spec.kind, spec.table, spec.args, out)


def study_table_copies(cfg: Mapping[str, Any]) -> dict[str, str]:
    """paper_figures copies of the study's tables (none without a study)."""
    if not cfg.get("staleness_study"):
        return {}
    return {
        f"{FIGURES_DIR}/{name}.{ext}": f"{STUDY_TABLES}/{name}.{ext}"
        for name in STUDY_TABLE_NAMES
        for ext in ("csv", "md")
    }


def paper_outputs(cfg: Mapping[str, Any]) -> list[str]:
    """Every file under paper_figures/ but the manifest, in manifest order."""
    return [f for spec in figure_specs(cfg) for f in spec.outputs] + list(table_copies(cfg))


def figure_argv(kind: str, table: str | Path, args: Mapping[str, Any], out: str | Path) -> list:
    """The ``persafl.figures`` arguments that draw a figure (None values are left out)."""
    if kind not in TABLE_OPTIONS:
        raise ManifestError(f"unknown figure kind {kind!r}; expected one of {list(TABLE_OPTIONS)}")
    argv = [kind, TABLE_OPTIONS[kind], str(table)]
    for name, value in args.items():
        if value is not None:
            argv += [f"--{name}", str(value)]
    return [*argv, "--out", str(out)]


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
