"""Figures: what they draw, reproducible bytes, and one colour per method across figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from persafl.figures import main
from persafl.plotting import (
    FigureDataError,
    accuracy_figure,
    partition_figure,
    staleness_figure,
)
from persafl.style import METHOD_COLORS, method_color

METHODS = ("afl", "persafl_maml_fo", "persafl_maml_hf", "persafl_me", "local")
UPDATES = (0, 10, 20)


def make_curves(datasets: tuple[str, ...] = ("mnist",), partition: str = "patho") -> pd.DataFrame:
    """A curves.csv-shaped table: headline = 0.1*method_index + 0.01*seed + update/100."""
    rows = []
    for dataset in datasets:
        for m_index, method in enumerate(METHODS):
            for tau in (0, 4):
                for seed in range(3):
                    for update in UPDATES:
                        acc = 0.1 * m_index + 0.01 * seed + update / 100 - 0.01 * tau
                        rows.append(
                            {
                                "dataset": dataset,
                                "partition": partition,
                                "method": method,
                                "tau": tau,
                                "seed": seed,
                                "update": update,
                                "status": "completed",
                                "headline_acc": acc,
                                "global_acc_ca": np.nan if method == "local" else acc - 0.05,
                                "majority_acc_ca": 0.3 + 0.1 * seed,
                            }
                        )
    return pd.DataFrame(rows)


def make_final(curves: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run (what final.csv holds)."""
    keys = ["dataset", "partition", "method", "tau", "seed"]
    return curves.sort_values("update").groupby(keys, as_index=False).last()


def make_counts() -> pd.DataFrame:
    return pd.DataFrame(
        {"client": [0, 1, 2], "class_0": [10, 0, 3], "class_1": [0, 20, 4], "class_2": [5, 0, 0]}
    )


def method_colors(fig: Figure) -> dict[str, str]:
    """gid 'method:NAME' -> colour of every line in the figure (one colour per method)."""
    found: dict[str, set[str]] = {}
    for line in fig.axes[0].get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("method:"):
            found.setdefault(gid.removeprefix("method:"), set()).add(to_hex(line.get_color()))
    assert all(len(c) == 1 for c in found.values()), found
    return {name: colors.pop() for name, colors in found.items()}


def line_by_gid(fig: Figure, gid: str):
    return next(line for line in fig.axes[0].get_lines() if line.get_gid() == gid)


def test_accuracy_figure_draws_mean_band_and_baselines() -> None:
    curves = make_curves()
    fig = accuracy_figure(curves, "mnist", tau=4)
    me = line_by_gid(fig, "method:persafl_me")
    # seeds add 0.00, 0.01, 0.02 -> mean +0.01; method index 3; tau 4 -> -0.04
    expected = [100 * (0.3 + 0.01 + u / 100 - 0.04) for u in UPDATES]
    np.testing.assert_allclose(me.get_ydata(), expected)
    np.testing.assert_allclose(me.get_xdata(), UPDATES)
    band = next(c for c in fig.axes[0].collections if c.get_gid() == "method:persafl_me")
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(100 * (0.3 - 0.04)) and ys.max() == pytest.approx(
        100 * (0.3 + 0.02 + 0.2 - 0.04)
    )
    local = line_by_gid(fig, "method:local")
    assert local.get_linestyle() == "--"
    majority = line_by_gid(fig, "method:majority")
    assert majority.get_linestyle() == ":"
    np.testing.assert_allclose(majority.get_ydata(), [40.0, 40.0])  # mean of 0.3, 0.4, 0.5
    ax = fig.axes[0]
    assert "updates" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "A-FL",
        "PersA-FL MAML (FO)",
        "PersA-FL MAML (HF)",
        "PersA-FL ME",
        "Local",
        "Majority class",
    ]
    assert "min–max" in ax.get_legend().get_title().get_text()


def test_staleness_figure_error_bars_and_pooled_local_baseline() -> None:
    final = make_final(make_curves())
    fig = staleness_figure(final, "mnist")
    afl = line_by_gid(fig, "method:afl")
    np.testing.assert_allclose(afl.get_xdata(), [0, 4])
    np.testing.assert_allclose(afl.get_ydata(), [100 * (0.01 + 0.2), 100 * (0.01 + 0.2 - 0.04)])
    # local: per seed averaged over tau 0 and 4, then over seeds: 0.4 + 0.01 + 0.2 - 0.02
    local = line_by_gid(fig, "method:local")
    np.testing.assert_allclose(local.get_ydata(), [100 * 0.59] * 2)
    assert "tau" in fig.axes[0].get_xlabel()


def test_same_method_same_colour_in_every_figure() -> None:
    curves = make_curves()
    accuracy = method_colors(accuracy_figure(curves, "mnist", tau=0))
    staleness = method_colors(staleness_figure(make_final(curves), "mnist"))
    assert set(accuracy) == set(METHODS) | {"majority"}
    assert accuracy == staleness
    assert accuracy == {m: to_hex(method_color(m)) for m in accuracy}
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)  # colours are distinct
    assert method_color("new_method") == method_color("new_method")


def test_partition_heat_map_shows_the_counts() -> None:
    fig = partition_figure(make_counts(), title="mnist")
    ax, colorbar_ax = fig.axes
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), make_counts().iloc[:, 1:])
    assert ax.get_xlabel() == "Class label" and ax.get_ylabel() == "Client"
    assert colorbar_ax.get_ylabel() == "Samples"


def test_selection_errors_are_explicit() -> None:
    curves = pd.concat([make_curves(), make_curves(partition="iid")])
    with pytest.raises(FigureDataError, match="partitions"):
        accuracy_figure(curves, "mnist", tau=0)
    with pytest.raises(FigureDataError, match="cifar10"):
        accuracy_figure(curves, "cifar10", tau=0)
    with pytest.raises(FigureDataError, match="tau=7"):
        accuracy_figure(curves, "mnist", tau=7, partition="iid")


def render_all(tables: Path, out: Path) -> list[Path]:
    """Run the three CLI commands; return every file written."""
    commands = [
        f"accuracy --curves {tables}/curves.csv --dataset mnist --tau 4",
        f"staleness --final {tables}/final.csv --dataset mnist",
        f"partition --counts {tables}/partition_mnist.csv",
    ]
    for command in commands:
        figure = command.split()[0]
        assert main([*command.split(), "--out", str(out / f"fig_{figure}_mnist.pdf")]) == 0
    return sorted(out.iterdir())


@pytest.fixture()
def tables(tmp_path: Path) -> Path:
    directory = tmp_path / "tables"
    directory.mkdir()
    curves = make_curves(datasets=("mnist", "synthetic"))
    curves.to_csv(directory / "curves.csv", index=False)
    make_final(curves).to_csv(directory / "final.csv", index=False)
    make_counts().to_csv(directory / "partition_mnist.csv", index=False)
    return directory


def test_cli_renders_pdf_and_png_byte_identically(tables: Path, tmp_path: Path) -> None:
    first = render_all(tables, tmp_path / "a")
    second = render_all(tables, tmp_path / "b")
    names = [p.name for p in first]
    assert len(names) == 6 and {p.suffix for p in first} == {".pdf", ".png"}
    for one, two in zip(first, second, strict=True):
        assert one.read_bytes()[:4] in (b"%PDF", b"\x89PNG") and one.stat().st_size > 1000
        assert one.read_bytes() == two.read_bytes(), one.name
    # a fresh interpreter (as a rerun of the workflow) gives the same bytes too
    out = tmp_path / "c" / "fig_accuracy_mnist.pdf"
    cmd = [
        sys.executable,
        "-m",
        "persafl.figures",
        "accuracy",
        "--curves",
        str(tables / "curves.csv"),
        "--dataset",
        "mnist",
        "--tau",
        "4",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.read_bytes() == (tmp_path / "a" / "fig_accuracy_mnist.pdf").read_bytes()
    assert (
        out.with_suffix(".png").read_bytes()
        == (tmp_path / "a" / out.with_suffix(".png").name).read_bytes()
    )


def test_cli_errors_name_the_file(tables: Path, tmp_path: Path, capsys) -> None:
    curves = pd.read_csv(tables / "curves.csv").drop(columns="headline_acc")
    broken = tmp_path / "broken.csv"
    curves.to_csv(broken, index=False)
    args = ["accuracy", "--dataset", "mnist", "--tau", "4", "--out", str(tmp_path / "f.pdf")]
    assert main([*args, "--curves", str(broken)]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "headline_acc" in err
    assert main([*args, "--curves", str(tmp_path / "absent.csv")]) == 1
    assert "absent.csv" in capsys.readouterr().err
    bad_out = ["--curves", str(tables / "curves.csv"), "--out", str(tmp_path / "f.png")]
    assert main([*args[:-2], *bad_out]) == 1
    assert "expected a .pdf" in capsys.readouterr().err


def test_final_table_as_html_for_the_report(tmp_path):
    """The report shows table_final inline (issue 16, item 16): an HTML table of every row."""
    from pathlib import Path

    import pandas as pd

    from persafl.figures import main

    source = Path(__file__).resolve().parents[1] / "results" / "tables" / "table_final.csv"
    out = tmp_path / "table_final.html"
    assert main(["table", "--table", str(source), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("<tr>") == len(pd.read_csv(source)) + 1
    assert "<th>Accuracy (%)</th>" in text and "±" in text
