"""Accuracy curves on three x-axes: server updates, virtual time, client computation.

A run's ``metrics.csv`` has one row per evaluation with ``update``, ``time`` (virtual clock)
and ``grad_evals_total`` (gradient evaluations of every client job that finished, applied or
dropped; :mod:`persafl.engine.executor`). Comparing runs at an equal number of server updates
hides what a tight staleness bound costs: the work it throws away and the time it waits. The
functions here put curves of different runs on one common grid of any of the three axes, so
that seeds can be averaged and runs compared at equal time or equal computation.

Pure functions (arrays or data frames in, arrays or data frames out); no I/O.
Interpolation is linear between evaluations and undefined (NaN) outside a run's range: a
curve is never extrapolated past its last evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# x-axis column -> its label in figures and tables
AXES: dict[str, str] = {
    "update": "Server updates",
    "time": "Virtual time (mean job times)",
    "grad_evals_total": "Client gradient evaluations\n(incl. dropped work)",
}


def on_grid(x: Sequence[float], y: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """The curve through the points ``(x[i], y[i])`` (``x`` non-decreasing), read at ``grid``.

    Linear between consecutive points, NaN outside ``[x[0], x[-1]]``. Where ``x`` repeats a
    value (two evaluations at one virtual instant) the later point wins, so a step is kept.
    """
    xs, ys, at = (np.asarray(v, dtype=float) for v in (x, y, grid))
    if xs.ndim != 1 or xs.shape != ys.shape or xs.size == 0:
        raise ValueError(f"on_grid: x and y must be equal-length 1-d arrays, got {xs.shape}, "
                         f"{ys.shape}")
    if np.any(np.diff(xs) < 0):
        raise ValueError("on_grid: x must be non-decreasing (curves are in evaluation order)")
    # keep the last point of each run of equal x (np.interp needs increasing x)
    keep = np.append(xs[1:] != xs[:-1], True)
    xs, ys = xs[keep], ys[keep]
    out = np.interp(at, xs, ys) if xs.size > 1 else np.where(at == xs[0], ys[0], np.nan)
    out = np.asarray(out, dtype=float)
    out[(at < xs[0]) | (at > xs[-1])] = np.nan
    return out


def crossing(x: Sequence[float], y: Sequence[float], target: float) -> float:
    """The first x where the piecewise-linear curve ``(x, y)`` reaches ``target``; NaN if never.

    Exact on the curve :func:`on_grid` draws: the crossing inside the first segment that
    reaches the target, or ``x[0]`` when the curve starts at or above it.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    reached = np.flatnonzero(ys >= target)
    if reached.size == 0:
        return float("nan")
    i = int(reached[0])
    if i == 0 or not np.isfinite(ys[i - 1]):
        return float(xs[i])
    share = (target - ys[i - 1]) / (ys[i] - ys[i - 1])
    return float(xs[i - 1] + share * (xs[i] - xs[i - 1]))


def common_grid(curves: pd.DataFrame, axis: str, points: int, by: Sequence[str] = ("seed",),
                start: float = 0.0) -> np.ndarray:
    """``points`` evenly spaced values of ``axis`` from ``start`` to the shortest run's end.

    A run is a group of ``by``; ending at the shortest run's last value means every run is
    defined on the whole grid (no mean over a shrinking set of seeds).
    """
    if axis not in AXES:
        raise ValueError(f"axis: got {axis!r}, expected one of {list(AXES)}")
    ends = curves.groupby(list(by))[axis].max()
    return np.linspace(start, float(ends.min()), points)


def mean_curve(curves: pd.DataFrame, axis: str, value: str, grid: Sequence[float],
               by: Sequence[str] = ("seed",)) -> pd.DataFrame:
    """Each run's ``value`` on ``grid`` of ``axis`` (runs: groups of ``by``), then the mean,
    min and max over runs: columns ``x, mean, min, max, n`` (``n`` runs defined there)."""
    rows = []
    for _, run in curves.groupby(list(by), sort=True):
        run = run.sort_values(["update"], kind="mergesort")
        rows.append(on_grid(run[axis].to_numpy(), run[value].to_numpy(), grid))
    stacked = np.vstack(rows) if rows else np.full((0, len(grid)), np.nan)
    defined = np.isfinite(stacked)
    with np.errstate(invalid="ignore"), _quiet():
        return pd.DataFrame({
            "x": np.asarray(grid, dtype=float),
            "mean": np.nanmean(stacked, axis=0),
            "min": np.nanmin(stacked, axis=0),
            "max": np.nanmax(stacked, axis=0),
            "n": defined.sum(axis=0),
        })


def value_at(curves: pd.DataFrame, axis: str, value: str, at: float,
             by: Sequence[str] = ("seed",)) -> pd.Series:
    """Each run's ``value`` at ``axis == at`` (linear between evaluations; NaN past its end)."""
    out = {}
    for key, run in curves.groupby(list(by), sort=True):
        run = run.sort_values(["update"], kind="mergesort")
        out[key] = float(on_grid(run[axis].to_numpy(), run[value].to_numpy(), [at])[0])
    return pd.Series(out, dtype=float)


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings inside a block (all-NaN columns)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
