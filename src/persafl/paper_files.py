"""The files of ``paper_figures/`` for a config, and how each is drawn.

Every paper figure is a pure function of one aggregated table and a few arguments
(:class:`FigureSpec`: ``python -m persafl.figures KIND --TABLE table --ARG value ...``); some
tables are copied next to the figures (:func:`table_copies`). The figure rules
(workflow/rules/figures.smk, staleness.smk) and the manifest (:mod:`persafl.manifest`, which
records each file's table, arguments and hashes) both take the list from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persafl import sweep

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
