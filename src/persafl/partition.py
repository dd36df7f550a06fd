"""Heterogeneous client partitions and the per-client stratified train/test split.

``partition_dataset(labels, groups, scheme, num_clients, seed, test_fraction, **params)``
assigns every sample to exactly one client and then to that client's train or test split.
Schemes (pure functions of the labels and a generator):

- ``natural``: the data set's own clients (``Dataset.groups``, e.g. synthetic).
- ``iid``: a uniform random split into equal sizes.
- ``pathological`` (``classes_per_client`` k): pFedMe / McMahan style label shards; client u
  holds classes u, u+1, ..., u+k-1 (mod C), and each class is shared by its holders in
  unequal, log-normally drawn shares with at least one sample each, so every client has exactly
  k distinct classes.
- ``dirichlet`` (``dirichlet_alpha``, ``min_samples=10``): label skew of Hsu et al. (2019) as
  implemented in NIID-Bench (Li et al., 2022): per class, proportions ~ Dir(alpha), clients
  already above the mean size get no more; the whole draw is repeated (same generator stream)
  until every client has at least ``min_samples`` samples.
- ``quantity`` (``quantity_sigma``, ``min_samples=10``): log-normal client sizes, labels iid.

The split then sends, per client and class, round(test_fraction * n) samples in total to test,
each class within one sample of its exact share (largest remainders), so a client's test labels
follow its train labels.

``max_train_samples`` (optional, any scheme) then caps every client's TRAIN split at that many
samples, stratified the same way (:func:`cap_train`: each class within one sample of its share
of the cap, drawn by ``generator(seed, "cap", client)``); the test split stays whole, so one
base partition swept over caps differs only in how much each client trains on.

Files (:mod:`persafl.partition_io`): ``save_partition`` writes ``<name>.npz`` and
``<name>.json`` (scheme, params, samples and classes per client).
CLI: ``python -m persafl.partition --config run.yaml --out partition.npz`` also writes
``partition_counts.csv`` (``client, class_0, ..., class_{C-1}``); every file atomically.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persafl.data.base import DataError
from persafl.rng import generator

SCHEMES = ("natural", "iid", "pathological", "dirichlet", "quantity")
# Per scheme: required parameters and optional ones with their defaults.
SCHEME_PARAMS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "natural": ((), {}),
    "iid": ((), {}),
    "pathological": (("classes_per_client",), {}),
    "dirichlet": (("dirichlet_alpha",), {"min_samples": 10}),
    "quantity": (("quantity_sigma",), {"min_samples": 10}),
}
PATHOLOGICAL_SIZE_SIGMA = 0.5  # spread of the unequal class shares (pathological)
DIRICHLET_MAX_TRIES = 1000


@dataclass(frozen=True)
class Partition:
    """Per-client sorted index arrays into ``Dataset.x``; ``params`` holds the resolved scheme
    parameters, ``seed`` and ``test_fraction``."""

    train: list[np.ndarray]
    test: list[np.ndarray]
    num_classes: int
    scheme: str
    params: dict = field(default_factory=dict)

    @property
    def num_clients(self) -> int:
        return len(self.train)


def _split_sizes(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integer sizes summing to ``total``, each >= ``minimum``, proportional to ``weights`` for
    the rest (largest-remainder rounding, so the result is exact and deterministic)."""
    count = len(weights)
    rest = total - minimum * count
    if rest < 0:
        raise ValueError(f"cannot give {count} parts at least {minimum} of {total} samples each")
    exact = rest * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: rest - sizes.sum()]] += 1
    return sizes + minimum


def _iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(len(labels)), num_clients)


def _quantity(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    quantity_sigma: float,
    min_samples: int = 10,
) -> list[np.ndarray]:
    weights = rng.lognormal(0.0, quantity_sigma, size=num_clients)
    sizes = _split_sizes(len(labels), weights, min_samples)
    return np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1])


def _pathological(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    classes_per_client: int,
    num_classes: int,
) -> list[np.ndarray]:
    k = classes_per_client
    if not 1 <= k <= num_classes:
        raise ValueError(f"pathological: classes_per_client must be in 1..{num_classes}, got {k}")
    if num_clients + k - 1 < num_classes:
        raise ValueError(
            f"pathological: {num_clients} clients x {k} consecutive classes leave classes "
            f"unassigned; need num_clients + classes_per_client - 1 >= {num_classes}"
        )
    holders: list[list[int]] = [[] for _ in range(num_classes)]
    for client in range(num_clients):
        for j in range(k):
            holders[(client + j) % num_classes].append(client)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        weights = rng.lognormal(0.0, PATHOLOGICAL_SIZE_SIGMA, size=len(holders[c]))
        if len(members) < len(holders[c]):
            raise ValueError(
                f"pathological: class {c} has {len(members)} samples for {len(holders[c])} clients"
            )
        sizes = _split_sizes(len(members), weights, 1)
        for client, chunk in zip(holders[c], np.split(members, np.cumsum(sizes)[:-1]), strict=True):
            parts[client].append(chunk)
    return [np.concatenate(p) for p in parts]


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    dirichlet_alpha: float,
    num_classes: int,
    min_samples: int = 10,
) -> list[np.ndarray]:
    if dirichlet_alpha <= 0:
        raise ValueError(f"dirichlet: dirichlet_alpha must be > 0, got {dirichlet_alpha}")
    if min_samples * num_clients > len(labels):
        raise ValueError(f"dirichlet: {len(labels)} samples < {num_clients} x {min_samples}")
    cap = len(labels) / num_clients
    for _ in range(DIRICHLET_MAX_TRIES):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in range(num_classes):
            members = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(num_clients, dirichlet_alpha))
            # NIID-Bench's balancing: clients already at the mean size get nothing more.
            props = props * np.array([len(p) < cap for p in parts])
            if props.sum() == 0:
                props = np.full(num_clients, 1.0 / num_clients)
            cuts = (np.cumsum(props / props.sum()) * len(members)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_samples:
            return [np.asarray(p, dtype=np.int64) for p in parts]
    raise ValueError(
        f"dirichlet: no draw in {DIRICHLET_MAX_TRIES} tries gave every client >= {min_samples} "
        f"samples; lower min_samples or num_clients, or raise dirichlet_alpha"
    )


def _natural(groups: np.ndarray | None, num_clients: int) -> list[np.ndarray]:
    if groups is None:
        raise ValueError("natural: this data set has no natural clients (groups is None)")
    groups = np.asarray(groups)
    found = int(groups.max()) + 1
    if found != num_clients or len(np.unique(groups)) != found:
        raise ValueError(
            f"natural: the data set has groups 0..{found - 1} ({len(np.unique(groups))} "
            f"distinct) but num_clients is {num_clients}; set num_clients to the data set's"
        )
    return [np.flatnonzero(groups == g) for g in range(num_clients)]


def stratified_split(
    indices: np.ndarray, labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's ``indices`` into sorted (train, test), stratified by label."""
    client_labels = labels[indices]
    classes, counts = np.unique(client_labels, return_counts=True)
    n_test = int(np.floor(test_fraction * len(indices) + 0.5))
    if len(indices) == 0:
        return indices.copy(), indices.copy()
    test_sizes = _split_sizes(n_test, counts.astype(np.float64), 0)
    train, test = [], []
    for c, n_c_test in zip(classes, test_sizes, strict=True):
        members = rng.permutation(indices[client_labels == c])
        test.append(members[:n_c_test])
        train.append(members[n_c_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def cap_train(
    indices: np.ndarray, labels: np.ndarray, cap: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``cap`` of one client's train ``indices`` (sorted), stratified by label.

    Class c keeps its share ``cap * n_c / n`` of the cap (largest remainders, so within one
    sample of it) as a random subset: the capped client sees the same label mix as uncapped.
    The per-class permutations do not depend on ``cap``, so a smaller cap's subset of a class
    is a prefix of a larger cap's.
    """
    if len(indices) <= cap:
        return indices.copy()
    client_labels = labels[indices]
    classes, counts = np.unique(client_labels, return_counts=True)
    perms = [rng.permutation(indices[client_labels == c]) for c in classes]
    keep = _split_sizes(cap, counts.astype(np.float64), 0)
    return np.sort(np.concatenate([p[:k] for p, k in zip(perms, keep, strict=True)]))


def partition_dataset(
    labels: np.ndarray,
    groups: np.ndarray | None,
    scheme: str,
    num_clients: int,
    seed: int,
    test_fraction: float = 0.25,
    num_classes: int | None = None,
    max_train_samples: int | None = None,
    **scheme_params: float,
) -> Partition:
    """Assign every sample to one client's train or test split (see the module docstring).

    ``num_classes`` defaults to ``max(labels) + 1``; pass the data set's own count so that a
    class absent from the labels still has its column in :func:`class_counts`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if scheme not in SCHEME_PARAMS:
        raise ValueError(f"unknown partition scheme {scheme!r}; expected one of {list(SCHEMES)}")
    required, optional = SCHEME_PARAMS[scheme]
    missing = sorted(set(required) - set(scheme_params))
    unknown = sorted(set(scheme_params) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(
            f"{scheme} partition: missing parameter(s) {missing}, unknown {unknown}; "
            f"expected {list(required)} and optionally {optional}"
        )
    scheme_params = {**optional, **scheme_params}
    rng = generator(seed, f"partition-{scheme}")
    if scheme == "natural":
        clients = _natural(groups, num_clients)
    elif scheme == "iid":
        clients = _iid(labels, num_clients, rng)
    elif scheme == "quantity":
        clients = _quantity(labels, num_clients, rng, **scheme_params)
    elif scheme == "pathological":
        clients = _pathological(labels, num_clients, rng, num_classes=num_classes, **scheme_params)
    else:
        clients = _dirichlet(labels, num_clients, rng, num_classes=num_classes, **scheme_params)
    train, test = [], []
    for client, indices in enumerate(clients):
        tr, te = stratified_split(indices, labels, test_fraction, generator(seed, "split", client))
        train.append(tr)
        test.append(te)
    empty = [client for client, tr in enumerate(train) if len(tr) == 0]
    if empty:  # training would fail on them; say so here, briefly (no list of thousands)
        raise ValueError(
            f"{scheme}: {len(empty)} of {num_clients} clients (e.g. client {empty[0]}) get no "
            f"training samples from {len(labels)} samples; lower num_clients"
        )
    params = {**scheme_params, "seed": seed, "test_fraction": test_fraction}
    if max_train_samples is not None:
        if max_train_samples < 1:
            raise ValueError(f"max_train_samples must be >= 1, got {max_train_samples}")
        train = [
            cap_train(tr, labels, max_train_samples, generator(seed, "cap", client))
            for client, tr in enumerate(train)
        ]
        params["max_train_samples"] = int(max_train_samples)
    return Partition(train=train, test=test, num_classes=num_classes, scheme=scheme, params=params)


def class_counts(partition: Partition, labels: np.ndarray) -> np.ndarray:
    """``[clients, classes]`` sample counts (train + test) per client and class."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.stack(
        [
            np.bincount(labels[np.concatenate([tr, te])], minlength=partition.num_classes)
            for tr, te in zip(partition.train, partition.test, strict=True)
        ]
    )


def build_partition(config: dict[str, Any], data: Any) -> Partition:
    """The partition a resolved run config asks for (its ``partition`` section and ``seed``).

    ``partition.num_clients: null`` means the data set's natural client count. Shared by the
    partition CLI and :mod:`persafl.train`, so both build the same partition from one config.
    """
    part_cfg = config["partition"]
    num_clients = part_cfg["num_clients"]
    if num_clients is None:
        if data.groups is None:
            raise ValueError(
                f"num_clients is unset, but data set {data.name!r} has no natural clients; "
                f"set partition.num_clients to an integer >= 1"
            )
        num_clients = len(np.unique(data.groups))
    return partition_dataset(
        data.y.numpy(),
        data.groups,
        part_cfg["scheme"],
        num_clients,
        config["seed"],
        test_fraction=part_cfg["test_fraction"],
        num_classes=data.num_classes,
        max_train_samples=part_cfg.get("max_train_samples"),
        **part_cfg["params"],
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m persafl.partition --config run.yaml --out partition.npz``."""
    parser = argparse.ArgumentParser(prog="python -m persafl.partition", description=__doc__)
    parser.add_argument("--config", required=True, help="run config (YAML)")
    parser.add_argument("--out", required=True, help="partition .npz to write")
    args = parser.parse_args(argv)
    from persafl.config import ConfigError, load_run_config
    from persafl.data import load_dataset
    from persafl.partition_io import save_partition, write_counts_csv

    try:
        config = load_run_config(args.config)
        data_cfg = config["dataset"]
        section = "dataset"  # which config section a ValueError below is about
        data = load_dataset(data_cfg["name"], data_cfg["root"], **data_cfg["params"])
        labels = data.y.numpy()
        section = "partition"
        partition = build_partition(config, data)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {args.config}: config section '{section}': {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    save_partition(partition, out, labels=labels)
    write_counts_csv(class_counts(partition, labels), out.with_name(f"{out.stem}_counts.csv"))
    print(f"{partition.scheme}: {partition.num_clients} clients, {len(labels)} samples -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
