"""Partition feasibility from the sweep config alone, checked before any job runs.

The partition schemes (:mod:`persafl.partition`) fail on impossible requests only once the
data are loaded; the workflow calls :func:`check_partition` for every configured partition at
start-up, with what is known of each data set without loading it (sample count or its upper
bound, classes, natural clients), so an impossible sweep stops before the first job with one
line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Samples (train + test pooled) and classes of the image data sets.
IMAGE_SETS: dict[str, tuple[int, int]] = {
    "mnist": (70_000, 10),
    "fashion_mnist": (70_000, 10),
    "cifar10": (60_000, 10),
}
# persafl.data.synthetic's defaults: clients, classes, the cap on one client's samples.
SYNTHETIC_DEFAULTS = {"num_clients": 100, "num_classes": 10, "max_client_samples": 3000}
MIN_SAMPLES = 10  # quantity and dirichlet give every client at least this many (partition.py)


def dataset_facts(name: str, params: Mapping[str, Any]) -> tuple[int, int, int | None]:
    """(most samples the data set can have, classes, natural clients or None)."""
    if name == "synthetic":
        p = {**SYNTHETIC_DEFAULTS, **params}
        return p["num_clients"] * p["max_client_samples"], p["num_classes"], p["num_clients"]
    samples, classes = IMAGE_SETS.get(name, (10**12, 10**6))  # unknown: no bound
    return samples, classes, None


def check_partition(dataset: str, params: Mapping[str, Any], name: str, part: Mapping) -> None:
    """Raise ``ValueError`` (one line, naming the key) if ``part`` cannot be built."""
    key = f"datasets.{dataset}.partitions.{name}"
    samples, classes, natural = dataset_facts(dataset, params)
    scheme, clients = part["scheme"], part["num_clients"]
    scheme_params = part.get("params") or {}
    if scheme == "natural":
        if natural is None:
            raise ValueError(f"{key}.scheme: {dataset} has no natural clients; use iid or another")
        if clients != natural:
            raise ValueError(
                f"{key}.num_clients: got {clients}, but {dataset} has {natural} natural clients "
                f"(datasets.{dataset}.params.num_clients); set them equal"
            )
        return
    need = MIN_SAMPLES if scheme in ("quantity", "dirichlet") else 1
    if clients * need > samples:
        raise ValueError(
            f"{key}.num_clients: {clients} clients x {need} sample(s) each exceed the at most "
            f"{samples} samples of {dataset}; lower num_clients"
        )
    if scheme == "pathological":
        k = scheme_params.get("classes_per_client")
        if k is not None and not 1 <= k <= classes:
            raise ValueError(
                f"{key}.params.classes_per_client: got {k}, expected 1..{classes} ({dataset} "
                f"has {classes} classes)"
            )
        if k is not None and clients + k - 1 < classes:
            raise ValueError(
                f"{key}: {clients} clients x {k} consecutive classes leave classes unassigned; "
                f"need num_clients + classes_per_client - 1 >= {classes}"
            )
