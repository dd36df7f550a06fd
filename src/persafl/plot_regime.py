"""fig_regime_<dataset>: accuracy and win rate vs training samples per client (issue 14).

Drawn from ``results/tables/regime/dataset~D/summary.csv`` (:mod:`persafl.regime`) only. One
column per label skew; top row: client-averaged final test accuracy vs samples per client (log
x, at each cap's mean train size, so "all" sits at the clients' real size), one line per method
and baseline, a band of ± one std over seeds, and the crossover where local training overtakes
A-FL's global model marked; bottom row: the win rate (share of clients whose accuracy exceeds
max(local, A-FL global) of the same client).
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from persafl.plotting import BAND_ALPHA, FigureDataError
from persafl.regime import skew_order
from persafl.style import (
    DOUBLE_COLUMN_WIDTH,
    RC_PARAMS,
    dataset_label,
    method_color,
    method_label,
    method_marker,
    sort_methods,
)

SUMMARY_COLUMNS = (
    "dataset",
    "skew",
    "cap",
    "n_train_mean",
    "method",
    "acc_mean",
    "acc_std",
    "win_rate",
)
# baselines: (label, colour, line style, marker)
BASELINE_STYLES = {
    "afl": ("A-FL global", method_color("afl"), "-", "o"),
    "local": ("Local", method_color("local"), "--", "v"),
    "afl_finetune": ("FedAvg + FT", "#CC79A7", "-.", "P"),
    "afl_masked": ("Label-masked global", "#56B4E9", ":", "x"),
    "majority": ("Majority class", "#000000", ":", None),
}


def _style(method: str) -> tuple[str, str, str, str | None]:
    if method in BASELINE_STYLES:
        return BASELINE_STYLES[method]
    return method_label(method), method_color(method), "-", method_marker(method)


def skew_title(skew: str) -> str:
    """``pathological-2`` -> "Pathological, 2 labels"; ``dirichlet-0.1`` -> "Dirichlet α = 0.1"."""
    scheme, _, value = skew.partition("-")
    if scheme == "pathological":
        return f"Pathological, {value} labels per client"
    if scheme == "dirichlet":
        return f"Dirichlet $\\alpha$ = {value}"
    return skew


def _crossover(local: pd.DataFrame, afl: pd.DataFrame) -> float | None:
    """Samples per client (log-interpolated) where local's mean accuracy first rises above
    A-FL's, or None when it never crosses within the caps."""
    both = local.merge(afl, on="cap", suffixes=("_l", "_g")).sort_values("n_train_mean_l")
    x = np.log(both["n_train_mean_l"].to_numpy())
    gap = (both["acc_mean_l"] - both["acc_mean_g"]).to_numpy()
    for i in range(1, len(gap)):
        if gap[i - 1] <= 0 < gap[i]:
            frac = -gap[i - 1] / (gap[i] - gap[i - 1])
            return float(math.exp(x[i - 1] + frac * (x[i] - x[i - 1])))
    return None


def regime_figure(summary: pd.DataFrame, dataset: str) -> Figure:
    rows = summary[summary["dataset"] == dataset]
    if rows.empty:
        raise FigureDataError(f"regime summary: no rows for data set {dataset!r}")
    skews = sorted(dict.fromkeys(rows["skew"]), key=skew_order)
    personalized = sort_methods([m for m in rows["method"].unique() if m not in BASELINE_STYLES])
    order = [*personalized, "afl", "local", "afl_finetune", "afl_masked", "majority"]
    methods = [m for m in order if m in set(rows["method"])]
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(DOUBLE_COLUMN_WIDTH, 4.9), layout="constrained")
        axes = fig.subplots(
            2, len(skews), sharex="col", squeeze=False, gridspec_kw={"height_ratios": [1.6, 1.0]}
        )
        for col, skew in enumerate(skews):
            block = rows[rows["skew"] == skew]
            top, bottom = axes[0, col], axes[1, col]
            for method in methods:
                sel = block[block["method"] == method].sort_values("n_train_mean")
                if sel.empty:
                    continue
                label, color, style, marker = _style(method)
                x = sel["n_train_mean"].to_numpy(float)
                mean = 100 * sel["acc_mean"].to_numpy(float)
                std = 100 * sel["acc_std"].fillna(0.0).to_numpy(float)
                top.plot(
                    x,
                    mean,
                    color=color,
                    linestyle=style,
                    marker=marker,
                    label=label,
                    gid=f"method:{method}",
                )
                top.fill_between(
                    x, mean - std, mean + std, color=color, alpha=BAND_ALPHA, linewidth=0
                )
                if method != "majority" and np.isfinite(sel["win_rate"]).any():
                    bottom.plot(
                        x,
                        100 * sel["win_rate"].to_numpy(float),
                        color=color,
                        linestyle=style,
                        marker=marker,
                        gid=f"method:{method}",
                    )
            cross = None
            if {"local", "afl"} <= set(block["method"]):
                cross = _crossover(
                    block[block["method"] == "local"], block[block["method"] == "afl"]
                )
            note = None
            if cross is None and {"local", "afl"} <= set(block["method"]):
                local = block[block["method"] == "local"].set_index("cap")["acc_mean"]
                afl = block[block["method"] == "afl"].set_index("cap")["acc_mean"]
                gap = (local - afl).dropna()
                note = (
                    "no crossover: local above A-FL at every size"
                    if gap.gt(0).all()
                    else "no crossover: local never above A-FL"
                    if gap.le(0).all()
                    else "no single crossover"
                )
                # above the plot area, under the title: inside it, it collided with the curves
                top.text(
                    0.5,
                    1.015,
                    note,
                    transform=top.transAxes,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#555555",
                )
            for ax in (top, bottom):
                if cross is not None:
                    ax.axvline(
                        cross,
                        color="#777777",
                        linestyle=(0, (1, 2)),
                        linewidth=0.9,
                        label="local overtakes A-FL" if ax is top else None,
                    )
                ax.set_xscale("log")
                caps = block.drop_duplicates("cap").sort_values("n_train_mean")
                ax.xaxis.set_major_locator(FixedLocator(caps["n_train_mean"].to_numpy(float)))
                ax.set_xticklabels([c if c == "all" else c for c in caps["cap"]])
                ax.xaxis.set_minor_locator(NullLocator())
                ax.grid(True)
            top.set_title(skew_title(skew), pad=14)  # room for a note under every title
            bottom.set_ylim(-3, 103)
            bottom.set_xlabel("Training samples per client")
            if col == 0:
                top.set_ylabel("Test accuracy (%)")
                bottom.set_ylabel("Win rate (%)")
        legend: dict[str, object] = {}  # every method of any panel, once
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="outside lower center",
            ncol=5,
            title=f"{dataset_label(dataset)}: client-averaged final test accuracy, mean ± std "
            "over seeds.\nWin rate: share of clients above max(local, A-FL global) of the same "
            'client. "all": uncapped, at the clients\' mean size.',
            title_fontsize=7,
        )
    return fig
