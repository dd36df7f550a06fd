"""The paper's figures as pure functions: aggregated tables in, a matplotlib Figure out.

Each function reads only the tables written by :mod:`persafl.aggregate` (``curves.csv``,
``final.csv``, ``partition_NAME.csv``), builds a :class:`matplotlib.figure.Figure` (no pyplot,
no global state) under the house style of :mod:`persafl.style`, and returns it; saving is the
CLI's job (:mod:`persafl.figures`). Every line or band drawn for a method carries the gid
``method:NAME`` so a test can check that a method has one colour in every figure.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from persafl.aggregate import local_baseline, mean_std, summary_table
from persafl.style import (
    BASELINE_LINESTYLES,
    METHOD_ORDER,
    RC_PARAMS,
    SINGLE_COLUMN_WIDTH,
    dataset_label,
    method_color,
    method_label,
    method_marker,
    sort_methods,
)

BAND_ALPHA = 0.18


class FigureDataError(ValueError):
    """The tables hold nothing to plot for the requested selection."""


def select_partition(
    df: pd.DataFrame, dataset: str, partition: str | None, source: str = "table"
) -> tuple[pd.DataFrame, str]:
    """Rows of one dataset and partition; the partition may be omitted when there is one."""
    rows = df[df["dataset"] == dataset]
    if rows.empty:
        found = ", ".join(sorted(map(str, df["dataset"].unique())))
        raise FigureDataError(f"{source}: no rows for dataset {dataset!r} (found: {found})")
    partitions = sorted(map(str, rows["partition"].unique()))
    if partition is None:
        if len(partitions) > 1:
            raise FigureDataError(
                f"{source}: dataset {dataset!r} has partitions {partitions}; choose one"
            )
        partition = partitions[0]
    rows = rows[rows["partition"] == partition]
    if rows.empty:
        raise FigureDataError(
            f"{source}: no rows for dataset {dataset!r}, partition {partition!r} "
            f"(found: {', '.join(partitions)})"
        )
    return rows, partition


def _legend_rank(label: str) -> tuple[float, str]:
    """Legend order: methods in the house order, then local, then majority class."""
    ranks = {method_label(m): i for i, m in enumerate(METHOD_ORDER)}
    ranks[method_label("majority")] = len(METHOD_ORDER) + 1
    if label in ranks:
        return (ranks[label], label)
    return (METHOD_ORDER.index("local") - 0.5, label)  # unknown methods before the baselines


def _legend_below(ax: Axes, title: str) -> None:
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: _legend_rank(labels[i]))
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=2,
        title=title,
        title_fontsize=7,
        handlelength=2.2,
        columnspacing=1.2,
    )


def _baseline_line(ax: Axes, name: str, value: float) -> None:
    """A horizontal baseline (percent) in its fixed colour and line style, if finite."""
    if np.isfinite(value):
        ax.axhline(
            100 * value,
            color=method_color(name),
            linestyle=BASELINE_LINESTYLES[name],
            linewidth=1.0,
            label=method_label(name),
            gid=f"method:{name}",
        )


def _majority(rows: pd.DataFrame) -> float:
    """Majority-class accuracy: per seed (it depends on the split only), then over seeds."""
    return mean_std(rows.groupby("seed")["majority_acc_ca"].mean())[0]


def _diverged_label(label: str, diverged: int) -> str:
    return f"{label} ({diverged} div. left out)" if diverged else label


def _without_diverged(runs: pd.DataFrame, label: str) -> tuple[str, pd.DataFrame]:
    """The legend label (with the count of diverged runs) and the runs that did not diverge
    (tables aggregated before the ``status`` column have none marked)."""
    if "status" not in runs.columns:
        return label, runs
    diverged = runs["status"] == "diverged"
    count = runs.loc[diverged, "seed"].nunique()
    return _diverged_label(label, count), runs[~diverged]


def accuracy_figure(
    curves: pd.DataFrame, dataset: str, tau: int, partition: str | None = None
) -> Figure:
    """Test accuracy vs server updates at one staleness bound: mean and min-max band over seeds.

    One curve per method (headline accuracy: personalized, or global for afl; at each update
    over the seeds that reached it, should a diverged run stop early); the local
    baseline is a dashed curve (its runs at ``tau``, else all its runs), the majority-class
    baseline a dotted horizontal line.
    """
    rows, partition = select_partition(curves, dataset, partition, "curves")
    at_tau = rows[rows["tau"] == tau]
    methods = [m for m in sort_methods(at_tau["method"]) if m != "local"]
    if not methods:
        taus = sorted(int(t) for t in rows["tau"].unique())
        raise FigureDataError(f"curves: no method runs for {dataset!r} at tau={tau} (taus {taus})")
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(SINGLE_COLUMN_WIDTH, 3.0), layout="tight")
        ax = fig.add_subplot()
        for method in methods:
            runs = at_tau[at_tau["method"] == method]
            label, runs = _without_diverged(runs, method_label(method))
            stats = runs.groupby("update")["headline_acc"].agg(["mean", "min", "max"])
            color, gid = method_color(method), f"method:{method}"
            x = stats.index.to_numpy(dtype=float)
            band = ax.fill_between(
                x, 100 * stats["min"], 100 * stats["max"], color=color, alpha=BAND_ALPHA, lw=0
            )
            band.set_gid(gid)
            ax.plot(x, 100 * stats["mean"], color=color, label=label, gid=gid)
        local = rows[rows["method"] == "local"]
        if not local.empty:
            local = local[local["tau"] == tau] if (local["tau"] == tau).any() else local
            mean = local.groupby("update")["headline_acc"].mean()
            ax.plot(
                mean.index.to_numpy(dtype=float),
                100 * mean.to_numpy(),
                color=method_color("local"),
                linestyle=BASELINE_LINESTYLES["local"],
                linewidth=1.0,
                label=method_label("local"),
                gid="method:local",
            )
        _baseline_line(ax, "majority", _majority(at_tau))
        ax.set_xlabel("Server updates")
        ax.set_ylabel("Test accuracy (%)")
        ax.set_title(rf"{dataset_label(dataset)} ({partition}), $\tau_{{\max}} = {tau}$")
        ax.set_xlim(left=0)
        ax.grid(True)
        _legend_below(ax, "mean over seeds; band: min–max")
    return fig


def staleness_figure(final: pd.DataFrame, dataset: str, partition: str | None = None) -> Figure:
    """Final accuracy vs staleness bound, one line per method, error bars ± std over seeds.

    Baselines (local: all its runs, per seed averaged over tau; majority class) are horizontal
    lines.
    """
    rows, partition = select_partition(final, dataset, partition, "final")
    table = summary_table(rows)
    if table.empty:
        raise FigureDataError(f"final: no method runs (other than local) for {dataset!r}")
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(SINGLE_COLUMN_WIDTH, 2.9), layout="tight")
        ax = fig.add_subplot()
        for method in sort_methods(table["method"]):
            sel = table[table["method"] == method].sort_values("tau")
            color, gid = method_color(method), f"method:{method}"
            container = ax.errorbar(
                sel["tau"].to_numpy(dtype=float),
                100 * sel["acc_mean"].to_numpy(),
                yerr=100 * sel["acc_std"].fillna(0.0).to_numpy(),
                color=color,
                marker=method_marker(method),
                capsize=2,
                elinewidth=0.8,
                label=_diverged_label(method_label(method), int(sel["n_diverged"].sum())),
            )
            for artist in container.get_children():
                artist.set_gid(gid)
        _baseline_line(ax, "local", mean_std(local_baseline(rows, dataset, partition))[0])
        _baseline_line(ax, "majority", _majority(rows))
        ax.set_xlabel(r"Staleness bound $\tau_{\max}$ (server updates)")
        ax.set_ylabel("Final test accuracy (%)")
        ax.set_title(f"{dataset_label(dataset)} ({partition})")
        taus = sorted(int(t) for t in table["tau"].unique())
        if max(taus) > 8:  # doubling grids (0, 1, 2, 4, ..., 32) would crowd the low end
            ax.set_xscale("symlog", base=2, linthresh=1, linscale=0.5)
            ax.set_xlim(min(taus) - 0.3, 1.2 * max(taus))
        ax.set_xticks(taus, [str(t) for t in taus])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True)
        _legend_below(ax, "mean ± std over seeds")
    return fig


def partition_figure(counts: pd.DataFrame, title: str | None = None) -> Figure:
    """Clients x classes heat map of training+test sample counts, with a colorbar."""
    class_columns = [c for c in counts.columns if c.startswith("class_")]
    matrix = counts[class_columns].to_numpy(dtype=float)
    num_clients, num_classes = matrix.shape
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(SINGLE_COLUMN_WIDTH, 2.9), layout="tight")
        ax = fig.add_subplot()
        image = ax.imshow(
            matrix,
            aspect="auto",
            cmap="Blues",
            interpolation="nearest",
            vmin=0,
            extent=(-0.5, num_classes - 0.5, num_clients - 0.5, -0.5),
        )
        colorbar = fig.colorbar(image, ax=ax)
        colorbar.set_label("Samples")
        ax.set_xlabel("Class label")
        ax.set_ylabel("Client")
        if num_classes <= 20:
            ax.set_xticks(range(num_classes))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        if title:
            ax.set_title(title)
    return fig
