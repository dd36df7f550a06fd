"""Figures of the staleness and time study (issue 13), from its aggregated tables only.

- :func:`axes_figure` (``fig_axes_D``): one setting's bounds on three x-axes, side by side:
  server updates, virtual time, client gradient evaluations including dropped work; one row
  per method. Each line is the seed mean on a common grid of that axis (:mod:`persafl.timeaxis`).
- :func:`time_figure` (``fig_time_D``): accuracy vs virtual time, synchronous rounds against
  asynchronous bounds, one column per speed distribution, one row per method.
- :func:`bounds_figure` (``fig_bounds_D``): from ``table_bounds.csv``: achieved staleness, drops,
  the server step adapted to the bound, and accuracy vs bound at equal updates, equal virtual
  time and equal computation, one line per setting.

Pure functions: tables in, a matplotlib Figure out (saving is :mod:`persafl.figures`' job).
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from persafl.plotting import FigureDataError
from persafl.style import (
    DOUBLE_COLUMN_WIDTH,
    RC_PARAMS,
    dataset_label,
    method_label,
    sort_methods,
)
from persafl.timeaxis import AXES, common_grid, mean_curve

GRID_POINTS = 201
XLABELS = {
    "update": "Server updates",
    "time": "Virtual time (mean job times)",
    "grad_evals_total": "Client gradient evaluations\n(thousands, incl. dropped work)",
}
# settings of the bounds figure, in legend order, and their colours (Okabe-Ito, distinct from
# nothing else in the figure: methods are told apart by line style there)
SETTING_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
METHOD_STYLES = {"afl": "-", "persafl_me": "--", "persafl_maml_fo": "-.", "persafl_maml_hf": ":"}


def _rows(table: pd.DataFrame, dataset: str, source: str) -> pd.DataFrame:
    rows = table[table["dataset"] == dataset]
    if rows.empty:
        raise FigureDataError(f"{source}: no rows for dataset {dataset!r}")
    if "status" in rows.columns:
        rows = rows[rows["status"] != "diverged"]
    return rows


def _bound_colors(taus: list[int]) -> dict[int, tuple]:
    cmap = colormaps["viridis"]
    span = max(1, len(taus) - 1)
    return {tau: cmap(0.9 * i / span) for i, tau in enumerate(sorted(taus))}


def _accuracy_limits(values: list[np.ndarray]) -> tuple[float, float]:
    """y-limits (percent) that show where the curves differ: from a little below the lowest
    curve's value a quarter of the way in, to a little above the best value."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    late = np.concatenate([v[len(v) // 4:][np.isfinite(v[len(v) // 4:])] for v in values])
    top = 100 * float(finite.max())
    low = 100 * float(late.min()) if late.size else 100 * float(finite.min())
    return max(0.0, low - 0.15 * (top - low)), top + 0.08 * (top - low)


def axes_figure(curves: pd.DataFrame, dataset: str, setting: str) -> Figure:
    """Every bound of ``setting`` on the three x-axes (columns), one row per method."""
    rows = _rows(curves, dataset, "curves")
    rows = rows[rows["setting"] == setting]
    if rows.empty:
        raise FigureDataError(f"curves: no runs of setting {setting!r} for {dataset!r}")
    methods = sort_methods(rows["method"])
    taus = sorted(int(t) for t in rows["tau"].unique())
    colors = _bound_colors(taus)
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(DOUBLE_COLUMN_WIDTH, 1.2 + 1.9 * len(methods)),
                     layout="constrained")
        grid = fig.subplots(len(methods), len(AXES), squeeze=False, sharey="row")
        for r, method in enumerate(methods):
            drawn = []
            for c, axis in enumerate(AXES):
                ax = grid[r][c]
                scale = 1e-3 if axis == "grad_evals_total" else 1.0  # thousands
                for tau in taus:
                    runs = rows[(rows["method"] == method) & (rows["tau"] == tau)]
                    xs = common_grid(runs, axis, GRID_POINTS)
                    mean = mean_curve(runs, axis, "headline_acc", xs)
                    ax.plot(scale * mean["x"], 100 * mean["mean"], color=colors[tau], lw=1.0,
                            label=str(tau), gid=f"tau:{tau}")
                    drawn.append(mean["mean"].to_numpy())
                ax.set_xlim(left=0)
                ax.grid(True)
                if r == len(methods) - 1:
                    ax.set_xlabel(XLABELS[axis])
                if c == 0:
                    ax.set_ylabel(f"{method_label(method)}\ntest accuracy (%)")
            grid[r][0].set_ylim(*_accuracy_limits(drawn))
        label = str(rows["label"].iloc[0])
        for c, title in enumerate(("at equal server updates", "at equal virtual time",
                                   "at equal client computation")):
            grid[0][c].set_title(title)
        fig.suptitle(f"{dataset_label(dataset)}: {label}; seed mean", fontsize=9)
        handles, labels = grid[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(taus),
                   title=r"staleness bound $\tau_{\max}$", title_fontsize=7)
    return fig


def time_figure(curves: pd.DataFrame, dataset: str) -> Figure:
    """Accuracy vs virtual time: synchronous rounds (black, dashed) and the asynchronous
    clock with policy drop at each of its bounds, per speed distribution (columns)."""
    rows = _rows(curves, dataset, "curves")
    sync = rows[rows["sync"].astype(bool)]
    speeds = list(dict.fromkeys(sync["speed"]))
    if not speeds:
        raise FigureDataError(f"curves: no synchronous runs for {dataset!r}")
    clock = rows[(rows["model"] == "clock") & (rows["policy"] == "drop")]
    # the setting of each speed without an adapted step (its own server_lr column is constant)
    plain = clock.groupby("setting")["server_lr"].nunique() == 1
    clock = clock[clock["setting"].isin(plain[plain].index)]
    methods = sort_methods(rows["method"])
    shared = sorted(set.intersection(*[set(clock[clock["speed"] == s]["tau"]) for s in speeds]))
    colors = _bound_colors(shared)
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(DOUBLE_COLUMN_WIDTH, 1.2 + 1.9 * len(methods)),
                     layout="constrained")
        grid = fig.subplots(len(methods), len(speeds), squeeze=False, sharey="row")
        for r, method in enumerate(methods):
            drawn = []
            for c, speed in enumerate(speeds):
                ax = grid[r][c]
                asynchronous = clock[(clock["method"] == method) & (clock["speed"] == speed)]
                end = 0.0
                for tau in shared:
                    runs = asynchronous[asynchronous["tau"] == tau]
                    xs = common_grid(runs, "time", GRID_POINTS)
                    mean = mean_curve(runs, "time", "headline_acc", xs)
                    ax.plot(mean["x"], 100 * mean["mean"], color=colors[tau], lw=1.0,
                            label=rf"async, $\tau_{{\max}}$ = {tau}")
                    drawn.append(mean["mean"].to_numpy())
                    end = max(end, float(xs[-1]))
                here = sync[(sync["method"] == method) & (sync["speed"] == speed)]
                for runs in (g for _, g in here.groupby("clients_per_round")):
                    xs = common_grid(runs, "time", GRID_POINTS)
                    mean = mean_curve(runs, "time", "headline_acc", xs)
                    keep = mean["x"] <= end
                    per_round = int(runs["clients_per_round"].iloc[0])
                    ax.plot(mean["x"][keep], 100 * mean["mean"][keep], color="black",
                            ls=SYNC_STYLES[per_round == max(sync["clients_per_round"])],
                            lw=1.2, label=f"sync, {per_round} clients per round")
                    drawn.append(mean["mean"][keep].to_numpy())
                ax.set_xlim(0, end)
                ax.grid(True)
                if r == 0:
                    ax.set_title(SPEED_TITLES.get(speed, speed))
                if r == len(methods) - 1:
                    ax.set_xlabel(AXES["time"])
                if c == 0:
                    ax.set_ylabel(f"{method_label(method)}\ntest accuracy (%)")
            grid[r][0].set_ylim(*_accuracy_limits(drawn))
        fig.suptitle(f"{dataset_label(dataset)}: synchronous vs asynchronous on one virtual "
                     "clock (policy drop); seed mean", fontsize=9)
        labelled = {}
        for ax in grid[0]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                labelled.setdefault(label, handle)
        fig.legend(list(labelled.values()), list(labelled), loc="outside lower center",
                   ncol=min(len(labelled), 4))
    return fig


SYNC_STYLES = {False: "--", True: ":"}  # sampled rounds dashed; full participation dotted
SPEED_TITLES = {
    "exponential": "exponential job times",
    "lognormal": "log-normal job times",
    "stragglers": "20 % stragglers, 10x slower",
    "constant": "equal job times",
}


def bounds_figure(table: pd.DataFrame, dataset: str) -> Figure:
    """Panels from table_bounds: staleness, drops, adapted step, accuracy at three budgets."""
    rows = _rows(table, dataset, "table_bounds")
    asynchronous = rows[rows["tau"].notna()]
    # synchronous rounds have no bound; delay sampling has no clock (its time is the update)
    settings = [s for s in dict.fromkeys(asynchronous["setting"]) if not s.startswith("sync")]
    clocked = set(rows[rows["model"] == "clock"]["setting"])
    adapted = [s for s in settings if asynchronous[asynchronous["setting"] == s]["server_lr"]
               .nunique() > 1 or asynchronous[asynchronous["setting"] == s]["server_lr"]
               .max() < asynchronous["server_lr"].max()]
    plain = [s for s in settings if s not in adapted]
    colors = {s: SETTING_COLORS[i % len(SETTING_COLORS)] for i, s in enumerate(plain)}
    methods = sort_methods(rows["method"])
    taus = sorted(int(t) for t in asynchronous["tau"].unique())
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(DOUBLE_COLUMN_WIDTH, 5.6), layout="constrained")
        axes = fig.subplots(2, 3)
        first = rows[rows["method"] == methods[0]]  # traces do not depend on the method
        ax = axes[0][0]
        ax.plot(taus, taus, color="0.6", lw=0.8, ls=":", label="bound (= max)")
        for s in plain:
            sel = first[first["setting"] == s].sort_values("tau")
            ax.plot(sel["tau"], sel["staleness_mean"], color=colors[s], marker="o")
            ax.plot(sel["tau"], sel["staleness_p95"], color=colors[s], marker="^", ls="--",
                    lw=0.9)
        ax.set_title("(a) achieved staleness")
        ax.set_ylabel("staleness (updates)")
        ax.legend(handles=[Line2D([], [], color="0.3", marker="o", label="mean"),
                           Line2D([], [], color="0.3", marker="^", ls="--", label="p95"),
                           Line2D([], [], color="0.6", ls=":", label="max = bound")],
                  loc="upper left")
        ax = axes[0][1]
        for s in [s for s in plain if s in clocked]:
            sel = first[first["setting"] == s].sort_values("tau")
            policy_wait = (sel["policy"] == "wait").all()
            values = sel["idle_share"] if policy_wait else sel["dropped_share"]
            ax.plot(sel["tau"], 100 * values, color=colors[s], marker="o",
                    ls=":" if policy_wait else "-")
        ax.set_title("(b) dropped / idle share")
        ax.legend(handles=[Line2D([], [], color="0.3", marker="o", label="jobs dropped"),
                           Line2D([], [], color="0.3", marker="o", ls=":",
                                  label="client time idle (wait)")], loc="lower left")
        ax.set_ylabel("share (%)")
        ax.set_ylim(bottom=0)
        ax = axes[0][2]
        base = plain[0]
        for method in methods:
            for s, color in ((base, "0.1"), *((a, "0.6") for a in adapted)):
                sel = rows[(rows["setting"] == s) & (rows["method"] == method)].sort_values("tau")
                if sel.empty:
                    continue
                step = "server_lr 1" if s == base else r"server_lr $1/\sqrt{1+\tau}$"
                ax.plot(sel["tau"], 100 * sel["acc_updates_mean"], color=color, marker="o",
                        ms=2.5, ls=METHOD_STYLES.get(method, "-"),
                        label=f"{method_label(method)}, {step}")
        ax.set_title("(c) server step (exp., drop)")
        ax.set_ylabel("test accuracy at equal updates (%)")
        ax.legend(loc="lower left")
        for c, (column, title) in enumerate((
            ("acc_updates_mean", "(d) at equal server updates"),
            ("acc_time_mean", "(e) at equal virtual time"),
            ("acc_compute_mean", "(f) at equal computation"),
        )):
            ax = axes[1][c]
            for s in plain if c == 0 else [s for s in plain if s in clocked]:
                for method in methods:
                    sel = rows[(rows["setting"] == s) & (rows["method"] == method)]
                    sel = sel.sort_values("tau")
                    ax.plot(sel["tau"], 100 * sel[column], color=colors[s], marker="o",
                            ms=2.5, ls=METHOD_STYLES.get(method, "-"), lw=1.0)
            ax.set_title(title)
            if c == 0:
                ax.set_ylabel("test accuracy (%)")
        for ax in axes.flat:
            ax.set_xscale("symlog", base=2, linthresh=1, linscale=0.5)
            ax.set_xticks(taus, [str(t) for t in taus])
            ax.set_xlim(min(taus) - 0.3, 1.2 * max(taus))
            ax.minorticks_off()
            ax.grid(True)
        for ax in axes[1]:
            ax.set_xlabel(r"staleness bound $\tau_{\max}$")
        labels = {s: rows[rows["setting"] == s]["label"].iloc[0] for s in plain}
        handles = [Line2D([], [], color=colors[s], marker="o", label=labels[s]) for s in plain]
        handles += [Line2D([], [], color="0.3", ls=METHOD_STYLES.get(m, "-"),
                           label=method_label(m)) for m in methods]
        fig.legend(handles=handles, loc="outside lower center", ncol=4)
        fig.suptitle(f"{dataset_label(dataset)}: what a staleness bound does (seed means; (e), "
                     "(f): clock settings, at each setting's shortest run)", fontsize=9)
    return fig
