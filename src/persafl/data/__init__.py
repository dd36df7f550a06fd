"""Data sets: ``load_dataset(name, root, **params) -> Dataset`` (see docs/design.md).

Names: ``synthetic`` (FedProx's Synthetic(alpha, beta), generated from its seed, no files),
``mnist``, ``fashion_mnist`` (IDX files fetched and verified by :mod:`persafl.data.sources`),
``cifar10`` (torchvision's loader, md5-checked). Every data problem raises :class:`DataError`.
"""

from __future__ import annotations

from pathlib import Path

from persafl.data.base import DataError, Dataset

DATASETS = ("synthetic", "mnist", "fashion_mnist", "cifar10")

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset"]


def load_dataset(name: str, root: str | Path, **params: object) -> Dataset:
    """Load data set ``name`` (files under ``root``) with its parameters.

    - ``synthetic``: ``alpha``, ``beta`` (required), ``num_clients=100``, ``dim=60``,
      ``num_classes=10``, ``seed=0`` (data seed), ``max_client_samples=3000``; root is unused.
    - ``mnist``, ``fashion_mnist``, ``cifar10``: ``download=True`` (False: only files already
      under root are used).
    """
    if name not in DATASETS:  # before its parameters: they mean nothing for an unknown set
        raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")
    # Imported here so that `synthetic` runs without importing torchvision.
    if name == "synthetic":
        from persafl.data.synthetic import load_synthetic

        allowed = {"alpha", "beta", "num_clients", "dim", "num_classes", "seed"}
        allowed.add("max_client_samples")
        missing = sorted({"alpha", "beta"} - set(params))
        unknown = sorted(set(params) - allowed)
        if missing or unknown:
            raise ValueError(
                f"synthetic: missing parameter(s) {missing}, unknown {unknown}; "
                f"allowed: {sorted(allowed)}"
            )
        return load_synthetic(**params)  # type: ignore[arg-type]
    allowed = {"download"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {sorted(unknown)}; allowed: {allowed}")
    download = bool(params.get("download", True))
    if name in ("mnist", "fashion_mnist"):
        from persafl.data.vision import load_idx_dataset

        return load_idx_dataset(name, root, download=download)
    if name == "cifar10":
        from persafl.data.vision import load_cifar10

        return load_cifar10(root, download=download)
    raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")
