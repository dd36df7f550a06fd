"""Partition files: ``<name>.npz`` (ragged index arrays as concatenation + offsets, no
pickles), ``<name>.json`` (scheme, params, samples and classes per client) and the clients x
classes counts CSV of the heat map. Every file is written atomically (:mod:`persafl.io`).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from persafl.data.base import DataError
from persafl.io import atomic_write_bytes, atomic_write_text
from persafl.partition import Partition, class_counts


def _ragged(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(concatenation, offsets) of a list of int arrays, offsets[i]:offsets[i+1] = arrays[i]."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    return flat, offsets


def partition_stats(partition: Partition, labels: np.ndarray | None = None) -> dict:
    """The JSON summary: scheme, params, samples (and classes, given labels) per client."""
    stats: dict[str, Any] = {
        "scheme": partition.scheme,
        "params": partition.params,
        "num_clients": partition.num_clients,
        "num_classes": partition.num_classes,
        "train_samples": [len(a) for a in partition.train],
        "test_samples": [len(a) for a in partition.test],
    }
    if labels is not None:
        stats["classes_per_client"] = (class_counts(partition, labels) > 0).sum(1).tolist()
    return stats


def save_partition(
    partition: Partition, path: str | Path, labels: np.ndarray | None = None
) -> None:
    """Write ``path`` (.npz) and the stats JSON beside it (``path`` with suffix .json)."""
    path = Path(path)
    train, train_offsets = _ragged(partition.train)
    test, test_offsets = _ragged(partition.test)
    arrays = {
        "train": train,
        "train_offsets": train_offsets,
        "test": test,
        "test_offsets": test_offsets,
        "num_classes": np.int64(partition.num_classes),
        "scheme": np.str_(partition.scheme),
        "params": np.str_(json.dumps(partition.params)),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    stats = json.dumps(partition_stats(partition, labels), indent=2)
    atomic_write_text(path.with_suffix(".json"), stats + "\n")


def load_partition(path: str | Path) -> Partition:
    """Read a partition written by :func:`save_partition`; a missing or corrupt file raises a
    :class:`DataError` naming it."""
    path = Path(path)
    remedy = "Re-create it with `python -m persafl.partition --config RUN.yaml --out FILE`."
    if not path.is_file():
        raise DataError(f"{path}: partition file not found. {remedy}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}

        def split(key: str) -> list[np.ndarray]:
            flat, offsets = arrays[key], arrays[f"{key}_offsets"]
            if offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
                raise ValueError(f"offsets of '{key}' do not match its {len(flat)} indices")
            return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

        train, test = split("train"), split("test")
        if len(train) != len(test):
            raise ValueError(f"{len(train)} train but {len(test)} test clients")
        return Partition(
            train=train,
            test=test,
            num_classes=int(arrays["num_classes"]),
            scheme=str(arrays["scheme"]),
            params=json.loads(str(arrays["params"])),
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a valid partition file ({err}). {remedy}") from err


def write_counts_csv(counts: np.ndarray, path: str | Path) -> None:
    """``client, class_0, ..., class_{C-1}``: one row per client (for the heat map)."""
    header = ",".join(["client"] + [f"class_{c}" for c in range(counts.shape[1])])
    rows = [",".join(str(v) for v in [i, *row]) for i, row in enumerate(counts.tolist())]
    atomic_write_text(path, "\n".join([header, *rows]) + "\n")
