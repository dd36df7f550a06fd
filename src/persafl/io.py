"""Atomic writes of run outputs: a temp file in the same directory, then ``os.replace``.

A reader (the workflow, aggregation) therefore sees either the old file or the complete new
one, never a half-written file, even if the writer is killed. ``summary.json`` is written last
by :mod:`persafl.train`, so its presence marks a complete run.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (same-directory temp file + ``os.replace``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-directory temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_value(value: Any) -> str:
    """One CSV cell: ints as ints, floats by ``repr`` (exact, deterministic), NaN as ``nan``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text with a header; every row must have exactly ``columns`` (no quoting needed)."""
    lines = [",".join(columns)]
    for row in rows:
        if set(row) != set(columns):
            raise ValueError(f"row keys {sorted(row)} differ from columns {list(columns)}")
        lines.append(",".join(format_value(row[c]) for c in columns))
    return "\n".join(lines) + "\n"


def atomic_write_csv(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write rows as CSV atomically."""
    atomic_write_text(path, csv_text(rows, columns))


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON atomically."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
