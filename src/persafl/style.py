"""The house look of every figure and table: method colours and labels, fonts, sizes.

One fixed map from method name to (label, colour) is shared by all figures and tables, so a
method has the same colour in the accuracy curves, the staleness plot and any later figure.
Colours are the Okabe-Ito colour-blind-safe palette. This module imports no matplotlib: the
tables (formatted here too) use the labels without pulling in a plotting backend.

Fonts: DejaVu Serif, which ships with matplotlib, so that a figure renders byte-identically on
any machine (a system Times would differ between machines).
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np
import pandas as pd

METHOD_LABELS: dict[str, str] = {
    "afl": "A-FL",
    "persafl_maml_fo": "PersA-FL MAML (FO)",
    "persafl_maml_hf": "PersA-FL MAML (HF)",
    "persafl_me": "PersA-FL ME",
    "local": "Local",
    "majority": "Majority class",
}

DATASET_LABELS: dict[str, str] = {
    "synthetic": "Synthetic",
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
}

METHOD_COLORS: dict[str, str] = {
    "afl": "#0072B2",  # blue
    "persafl_maml_fo": "#E69F00",  # orange
    "persafl_maml_hf": "#009E73",  # bluish green
    "persafl_me": "#D55E00",  # vermillion
    "local": "#555555",  # dark grey (baseline, dashed)
    "majority": "#000000",  # black (baseline, dotted)
}

METHOD_MARKERS: dict[str, str] = {
    "afl": "o",
    "persafl_maml_fo": "s",
    "persafl_maml_hf": "^",
    "persafl_me": "D",
}

# Colours for methods outside the map, chosen by a stable hash of the name (crc32, not hash():
# the same across processes), so that even an unknown method keeps its colour across figures.
_EXTRA_COLORS = ("#CC79A7", "#56B4E9", "#F0E442", "#882255", "#44AA99", "#999933")

# Order of methods in legends and tables; methods not listed follow, alphabetically.
METHOD_ORDER: tuple[str, ...] = ("afl", "persafl_maml_fo", "persafl_maml_hf", "persafl_me", "local")

BASELINE_LINESTYLES: dict[str, str] = {"local": "--", "majority": ":"}

SINGLE_COLUMN_WIDTH = 3.4  # inches
DOUBLE_COLUMN_WIDTH = 7.0  # inches
PNG_DPI = 200

RC_PARAMS: dict[str, Any] = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
    "savefig.dpi": PNG_DPI,
    # Determinism: TrueType embedding (journals accept it), fixed hash salt for SVG ids, no
    # timestamps; see also the metadata passed to savefig in persafl.figures.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "persafl",
    "svg.fonttype": "none",
    "path.simplify": True,
}


def method_label(method: str) -> str:
    """Display label of a method (or baseline), falling back to the raw name."""
    return METHOD_LABELS.get(method, method)


def dataset_label(dataset: str) -> str:
    """Display name of a dataset, falling back to the raw name."""
    return DATASET_LABELS.get(dataset, dataset)


def method_color(method: str) -> str:
    """Fixed colour of a method; unknown names get a stable colour from their crc32."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _EXTRA_COLORS[zlib.crc32(method.encode("utf-8")) % len(_EXTRA_COLORS)]


def method_marker(method: str) -> str:
    """Marker of a method in line plots (a circle for unknown methods)."""
    return METHOD_MARKERS.get(method, "o")


def method_sort_key(method: str) -> tuple[int, str]:
    """Sort key putting known methods in :data:`METHOD_ORDER`, the rest after, alphabetically."""
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), method)
    return (len(METHOD_ORDER), method)


def sort_methods(methods: list[str] | Any) -> list[str]:
    """Methods in legend/table order."""
    return sorted({str(m) for m in methods}, key=method_sort_key)


# ------------------------------------------------------------------ table formatting


def format_percent(mean: float, std: float) -> str:
    """``"85.3 ± 1.2"`` from fractions; ``"85.3"`` without a std, ``"–"`` without a mean."""
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(std):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


_DISPLAY_HEADER = ["Dataset", "Partition", "Method", "τ_max", "Accuracy (%)", "Global (%)"]
_DISPLAY_HEADER += ["Local (%)", "Majority (%)", "Best (%)", "Seeds"]


def _display_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in table.itertuples(index=False):
        seeds = f"{r.n_seeds}" + (f" ({r.n_diverged} div.)" if r.n_diverged else "")
        rows.append(
            [
                dataset_label(str(r.dataset)),
                str(r.partition),
                str(r.method_label),
                str(r.tau),
                format_percent(r.acc_mean, r.acc_std),
                format_percent(r.global_acc_mean, r.global_acc_std),
                format_percent(r.local_acc_mean, r.local_acc_std),
                format_percent(r.majority_acc_mean, r.majority_acc_std),
                # tables aggregated before best-over-rounds existed have no such column
                format_percent(
                    getattr(r, "best_acc_mean", float("nan")),
                    getattr(r, "best_acc_std", float("nan")),
                ),
                seeds,
            ]
        )
    return rows


def format_markdown(table: pd.DataFrame) -> str:
    """The final table as a Markdown pipe table (percent, mean ± std over seeds)."""
    lines = ["| " + " | ".join(_DISPLAY_HEADER) + " |"]
    lines.append("|" + "|".join(["---"] * 3 + ["---:"] * 7) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in _display_rows(table)]
    note = (
        "\nAccuracy: personalized (client-averaged) test accuracy at the last evaluation "
        "(final); A-FL: global. Best: the maximum over evaluations (the statistic pFedMe "
        "reports; it selects on the test set). Mean ± std over seeds. Local: method `local`; "
        "Majority: majority-class baseline. [adapt on TEST: leaky]: pFedMe's Per-FedAvg "
        "evaluation, adapting on test batches (comparison only).\n"
    )
    return "\n".join(lines) + "\n" + note + _hp_note(table)


def _hp_note(table: pd.DataFrame) -> str:
    """Each (dataset, method)'s hyperparameters, as its runs' configs set them (tuned where the
    config tunes: paper_figures/manifest.json names the config); empty for older tables."""
    if "hp" not in table:
        return ""
    rows = table.assign(hp=table["hp"].map(lambda v: v if isinstance(v, str) else ""))
    if not rows["hp"].str.len().any():
        return ""
    lines = ["\nHyperparameters of the runs (each row's bounds share them):\n"]
    for (dataset, label), hp in rows.groupby(["dataset", "method_label"], sort=False)["hp"]:
        values = " | ".join(v for v in dict.fromkeys(hp) if v)
        lines.append(f"- {DATASET_LABELS.get(dataset, dataset)}, {label}: {values or '-'}")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    escaped = re.sub(r"([_%&#$])", r"\\\1", text)
    return escaped.replace("±", r"$\pm$").replace("–", "--")


def format_latex(table: pd.DataFrame) -> str:
    """The final table as a booktabs LaTeX tabular (needs \\usepackage{booktabs})."""
    header = [_latex_escape(h) for h in _DISPLAY_HEADER]
    header[3] = r"$\tau_{\max}$"
    lines = [r"\begin{tabular}{lllrrrrrrr}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(map(_latex_escape, row)) + r" \\" for row in _display_rows(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def format_html(table: pd.DataFrame) -> str:
    """The final table as a small HTML page (what the Snakemake report shows inline)."""
    from html import escape

    def cells(tag: str, row: list[str]) -> str:
        return "<tr>" + "".join(f"<{tag}>{escape(c)}</{tag}>" for c in row) + "</tr>"

    body = "\n".join(cells("td", row) for row in _display_rows(table))
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>table_final</title>\n'
        "<style>table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
        "td,th{border-bottom:1px solid #ccc;padding:2px 8px}td:nth-child(n+4){text-align:right}"
        "</style></head><body>\n<table>\n"
        + cells("th", _DISPLAY_HEADER)
        + "\n"
        + body
        + "\n</table>\n<p>Accuracy: personalized (client-averaged) test accuracy; A-FL: global. "
        "Mean ± std over seeds; diverged runs are left out and counted (div.). Local: method "
        "<code>local</code>; Majority: majority-class baseline.</p>\n</body></html>\n"
    )
