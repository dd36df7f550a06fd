"""The results paragraph quoted in README.md and docs/results.md: the same text in both, and
every accuracy it quotes is one of the committed tables' numbers.

    python -m persafl.quoted [--root .]     # exit 1 and say what differs

The paragraph sits between :data:`BEGIN` and :data:`END` in each of :data:`TARGETS`. A quoted
accuracy is a number followed by ``%`` (``97.7 %``); it must equal, at the precision written,
a number of one of :data:`TABLES` (fractions are read as percentages too: 0.977 is 97.7).
Differences in points are derived, not quoted from a table, and are not checked here; the
claims block (persafl.claims) computes those.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

BEGIN = "<!-- in-short:begin (the same paragraph in README.md and docs/results.md) -->"
END = "<!-- in-short:end -->"
TARGETS = ("README.md", "docs/results.md")
TABLES = (
    "paper_figures/table_final.csv",
    "paper_figures/table_bounds.csv",
    "paper_figures/table_time.csv",
    "paper_figures/table_tuning.csv",
    "paper_figures/table_anchor.csv",
    "results/tables/regime/dataset~*/summary.csv",
    "benchmarks/hvp_control/table.csv",
    "benchmarks/hvp_control/tuned/table.csv",
)
PERCENT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?) ?%")


def paragraph(text: str, where: str) -> str:
    """The text between the markers; a ValueError naming ``where`` without exactly one pair."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{where}: needs exactly one {BEGIN!r} ... {END!r} paragraph")
    return text.split(BEGIN)[1].split(END)[0].strip()


def quoted(text: str) -> list[str]:
    """The numbers written before a ``%`` sign, as written."""
    return PERCENT.findall(text)


def _forms(value: float) -> set[str]:
    """How a table value may be quoted: as is and as a percentage of a fraction, at 0 and 1
    decimals."""
    forms = set()
    for scaled in (value, 100 * value):
        forms.update({f"{scaled:.1f}", f"{scaled:.0f}"})
    return forms


def table_numbers(root: Path) -> set[str]:
    """Every numeric cell of the committed tables, in every form :func:`_forms` allows."""
    known: set[str] = set()
    for pattern in TABLES:
        for path in sorted(root.glob(pattern)):
            numbers = pd.read_csv(path).select_dtypes("number")
            for value in numbers.to_numpy().ravel():
                if pd.notna(value):
                    known |= _forms(float(value))
    return known


def problems(root: Path) -> list[str]:
    """What is wrong with the quoted paragraph: missing, different between the targets, or
    quoting an accuracy that no committed table holds."""
    texts = {}
    for target in TARGETS:
        path = root / target
        try:
            texts[target] = paragraph(path.read_text(), target)
        except (OSError, ValueError) as err:
            return [str(err)]
    found = []
    first, *rest = TARGETS
    found += [
        f"{t} and {first} quote different paragraphs" for t in rest if texts[t] != texts[first]
    ]
    known = table_numbers(root)
    found += [
        f"{first}: {number} % is in no committed table"
        for number in quoted(texts[first])
        if number not in known
    ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persafl.quoted", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root")
    args = parser.parse_args(argv)
    found = problems(args.root)
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
