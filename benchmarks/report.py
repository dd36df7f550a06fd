"""The results files a speed script writes: ``STEM.csv`` (the rows) and ``STEM.md`` (a title
with the UTC time, the machine and torch, a note, and the rows as a table)."""

from __future__ import annotations

import csv
import datetime as dt
import platform
from pathlib import Path

import torch


def write(out: Path, stem: str, rows: list[dict], title: str, note: str, columns: dict) -> None:
    """Write ``out/STEM.csv`` and ``out/STEM.md``; ``columns``: row key -> table heading (the
    keys the table shows, in order; the CSV keeps every key)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}"
    lines = [
        f"# {title} ({stamp})",
        "",
        f"{machine}, {note}",
        "",
        "| " + " | ".join(columns.values()) + " |",
        "|---|---|" + "---:|" * (len(columns) - 2),
    ]
    lines += ["| " + " | ".join(str(r[k]) for k in columns) + " |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
