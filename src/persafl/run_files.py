"""The files of one finished run, and the record that lets a reader trust them.

:func:`write_run_outputs` writes ``metrics.csv`` and ``clients.csv`` (atomically), then, last,
``summary.json`` with a ``files`` entry: per file its data row count and sha256. The presence of
``summary.json`` marks a complete run; :func:`verify_run_files` lets aggregation check that the
files beside it are the ones it describes (a truncated or edited ``metrics.csv`` stops
aggregation, naming the run, instead of entering the tables).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from persafl.io import atomic_write_bytes, atomic_write_json, csv_text

METRICS_FILE = "metrics.csv"
CLIENTS_FILE = "clients.csv"
SUMMARY_FILE = "summary.json"


class RunFilesError(Exception):
    """A run's files do not match what its summary.json records; the message names the run."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_record(data: bytes) -> dict[str, Any]:
    """``{"rows": data rows (lines after the header), "sha256": hex digest}`` of a CSV's bytes."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return {"rows": max(lines - 1, 0), "sha256": sha256_bytes(data)}


def write_run_outputs(
    out_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    client_rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    *,
    metrics_columns: Sequence[str],
    client_columns: Sequence[str],
) -> dict[str, Any]:
    """Write one run's ``metrics.csv``, ``clients.csv`` and, last, ``summary.json``.

    ``summary.json`` is ``summary`` plus ``files: {name: {rows, sha256}}`` for the two CSVs.
    Returns the summary as written.
    """
    out = Path(out_dir)
    files: dict[str, Any] = {}
    for name, table, columns in (
        (METRICS_FILE, rows, metrics_columns),
        (CLIENTS_FILE, client_rows, client_columns),
    ):
        data = csv_text(table, columns).encode("utf-8")
        atomic_write_bytes(out / name, data)
        files[name] = file_record(data)
    written = {**summary, "files": files}
    atomic_write_json(out / SUMMARY_FILE, written)
    return written


def verify_run_files(run_dir: str | Path, summary: Mapping[str, Any]) -> None:
    """Check the CSVs beside ``summary.json`` against its ``files`` record.

    Raises :class:`RunFilesError` naming the run and what to do (rerun it) when the record is
    missing, a file is missing, or its row count or sha256 differs.
    """
    run_dir = Path(run_dir)
    fix = f"delete {run_dir / SUMMARY_FILE} and rerun the workflow to train this run again"
    files = summary.get("files")
    if not isinstance(files, Mapping):
        raise RunFilesError(
            f"run {run_dir}: summary.json records no file checksums (written by an older "
            f"persafl?); {fix}"
        )
    for name in (METRICS_FILE, CLIENTS_FILE):
        record = files.get(name)
        path = run_dir / name
        if not isinstance(record, Mapping):
            raise RunFilesError(f"run {run_dir}: summary.json records no checksum of {name}; {fix}")
        if not path.is_file():
            raise RunFilesError(f"run {run_dir}: {name} is missing; {fix}")
        actual = file_record(path.read_bytes())
        if actual["rows"] != record.get("rows"):
            raise RunFilesError(
                f"run {run_dir}: {name} has {actual['rows']} rows, summary.json records "
                f"{record.get('rows')} (truncated or edited); {fix}"
            )
        if actual["sha256"] != record.get("sha256"):
            raise RunFilesError(
                f"run {run_dir}: {name} differs from the sha256 summary.json records "
                f"(edited or corrupted); {fix}"
            )
