"""Partitions: coverage, heterogeneity, determinism, stratified split, files and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from persafl.data import DataError
from persafl.partition import (
    Partition,
    class_counts,
    main,
    partition_dataset,
    stratified_split,
)
from persafl.partition_io import load_partition, save_partition
from persafl.rng import generator

NUM_CLASSES = 10
# A label vector with unequal class sizes, like a real data set (fixed, test-only stream).
LABELS = generator(0, "test-labels").choice(
    NUM_CLASSES, size=3000, p=np.linspace(1, 2, NUM_CLASSES) / np.linspace(1, 2, NUM_CLASSES).sum()
)
GROUPS = np.repeat(np.arange(12), 250)

SCHEMES = [
    ("iid", {}),
    ("natural", {}),
    ("pathological", {"classes_per_client": 2}),
    ("dirichlet", {"dirichlet_alpha": 0.3}),
    ("quantity", {"quantity_sigma": 1.0}),
]


def _make(scheme: str, params: dict, seed: int = 0, **kw: object) -> Partition:
    return partition_dataset(LABELS, GROUPS, scheme, 12, seed, **kw, **params)


@pytest.mark.parametrize(("scheme", "params"), SCHEMES)
def test_every_sample_exactly_once(scheme: str, params: dict) -> None:
    part = _make(scheme, params)
    assert part.num_clients == 12 and part.num_classes == NUM_CLASSES
    everything = np.concatenate(part.train + part.test)
    assert len(everything) == len(LABELS)  # disjoint ...
    assert np.array_equal(np.sort(everything), np.arange(len(LABELS)))  # ... and complete
    for train, test in zip(part.train, part.test, strict=True):
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, no repeats
        assert len(train) > 0 and len(test) > 0


@pytest.mark.parametrize(("scheme", "params"), SCHEMES)
def test_same_seed_same_partition_other_seed_differs(scheme: str, params: dict) -> None:
    a, b, c = _make(scheme, params, 5), _make(scheme, params, 5), _make(scheme, params, 6)
    assert all(
        np.array_equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test, strict=True)
    )
    assert not all(
        len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a.test, c.test, strict=True)
    )


@pytest.mark.parametrize("k", [1, 2, 3, 7, 10])
def test_pathological_exactly_k_classes(k: int) -> None:
    part = partition_dataset(LABELS, None, "pathological", 15, 0, classes_per_client=k)
    counts = class_counts(part, LABELS)
    assert np.all((counts > 0).sum(axis=1) == k)
    assert counts.sum() == len(LABELS)
    sizes = counts.sum(axis=1)
    assert sizes.min() < sizes.max()  # unequal sizes (pFedMe style)


def test_pathological_rejects_uncoverable_settings() -> None:
    with pytest.raises(ValueError, match="unassigned"):
        partition_dataset(LABELS, None, "pathological", 3, 0, classes_per_client=2)
    with pytest.raises(ValueError, match="classes_per_client"):
        partition_dataset(LABELS, None, "pathological", 20, 0, classes_per_client=11)


def _mean_tv_to_global(part: Partition) -> float:
    """Mean total variation distance between each client's label distribution and the global."""
    counts = class_counts(part, LABELS).astype(float)
    local = counts / counts.sum(axis=1, keepdims=True)
    overall = np.bincount(LABELS, minlength=NUM_CLASSES) / len(LABELS)
    return float(0.5 * np.abs(local - overall).sum(axis=1).mean())


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    skewed = _mean_tv_to_global(_make("dirichlet", {"dirichlet_alpha": 0.1}))
    mild = _mean_tv_to_global(_make("dirichlet", {"dirichlet_alpha": 100.0}))
    iid = _mean_tv_to_global(_make("iid", {}))
    assert skewed > 0.4 and mild < 0.1 and iid < 0.1
    assert skewed > 4 * mild


def test_dirichlet_minimum_samples() -> None:
    part = _make("dirichlet", {"dirichlet_alpha": 0.05, "min_samples": 60})
    assert min(len(a) + len(b) for a, b in zip(part.train, part.test, strict=True)) >= 60
    with pytest.raises(ValueError, match="samples"):
        _make("dirichlet", {"dirichlet_alpha": 0.1, "min_samples": 1000})


def test_quantity_sizes_spread_with_sigma_labels_iid() -> None:
    def size_cv(sigma: float) -> float:
        sizes = class_counts(_make("quantity", {"quantity_sigma": sigma}), LABELS).sum(axis=1)
        return float(sizes.std() / sizes.mean())

    assert size_cv(2.0) > 3 * size_cv(0.1)
    part = _make("quantity", {"quantity_sigma": 2.0, "min_samples": 30})
    assert min(len(a) + len(b) for a, b in zip(part.train, part.test, strict=True)) >= 30


def test_natural_follows_groups_and_checks_count() -> None:
    part = _make("natural", {})
    for g in range(12):
        assert np.array_equal(
            np.sort(np.concatenate([part.train[g], part.test[g]])), np.flatnonzero(GROUPS == g)
        )
    with pytest.raises(ValueError, match="num_clients"):
        partition_dataset(LABELS, GROUPS, "natural", 10, 0)
    with pytest.raises(ValueError, match="no natural clients"):
        partition_dataset(LABELS, None, "natural", 12, 0)


def test_scheme_parameter_errors() -> None:
    with pytest.raises(ValueError, match="missing parameter.*dirichlet_alpha"):
        _make("dirichlet", {})
    with pytest.raises(ValueError, match="unknown.*alpha"):
        _make("iid", {"alpha": 1})
    with pytest.raises(ValueError, match="unknown partition scheme"):
        _make("shards", {})


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_stratified_split_keeps_label_proportions(fraction: float) -> None:
    part = _make("dirichlet", {"dirichlet_alpha": 0.5}, test_fraction=fraction)
    for train, test in zip(part.train, part.test, strict=True):
        n = len(train) + len(test)
        assert len(test) == int(np.floor(fraction * n + 0.5))
        total = np.bincount(LABELS[np.concatenate([train, test])], minlength=NUM_CLASSES)
        test_counts = np.bincount(LABELS[test], minlength=NUM_CLASSES)
        assert np.all(np.abs(test_counts - fraction * total) < 1.0)  # within rounding


def test_stratified_split_single_client_exact() -> None:
    labels = np.array([0] * 8 + [1] * 4)
    train, test = stratified_split(np.arange(12), labels, 0.25, generator(0, "t"))
    assert np.bincount(labels[test]).tolist() == [2, 1]
    assert np.bincount(labels[train]).tolist() == [6, 3]


def test_save_load_round_trip(tmp_path: Path) -> None:
    part = _make("pathological", {"classes_per_client": 3}, seed=4)
    path = tmp_path / "partition.npz"
    save_partition(part, path, labels=LABELS)
    loaded = load_partition(path)
    assert loaded.scheme == "pathological" and loaded.num_classes == NUM_CLASSES
    assert loaded.params == {"classes_per_client": 3, "seed": 4, "test_fraction": 0.25}
    for a, b in zip(part.train + part.test, loaded.train + loaded.test, strict=True):
        assert np.array_equal(a, b)
    stats = json.loads((tmp_path / "partition.json").read_text())
    assert stats["classes_per_client"] == [3] * 12
    assert sum(stats["train_samples"]) + sum(stats["test_samples"]) == len(LABELS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_load_missing_or_corrupt_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="partition file not found"):
        load_partition(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{bad}: not a valid partition file"):
        load_partition(bad)
    np.savez(tmp_path / "partial.npz", train=np.arange(3))
    with pytest.raises(DataError, match="partial.npz"):
        load_partition(tmp_path / "partial.npz")


# The CLI reads a whole run config; the sections it does not use only need to be valid.
SCHEDULE = {"model": "delay", "staleness_bound": 2, "num_updates": 5}


def test_cli_writes_npz_json_and_counts(tmp_path: Path) -> None:
    config = {
        "seed": 1,
        "dataset": {
            "name": "synthetic",
            "root": str(tmp_path),
            "params": {"alpha": 0.5, "beta": 0.5, "num_clients": 6},
        },
        "partition": {"scheme": "natural", "num_clients": 6, "test_fraction": 0.25, "params": {}},
        "schedule": SCHEDULE,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "p" / "partition.npz"
    assert main(["--config", str(tmp_path / "run.yaml"), "--out", str(out)]) == 0
    part = load_partition(out)
    assert part.num_clients == 6 and part.scheme == "natural"
    counts = pd.read_csv(out.with_name("partition_counts.csv"))
    assert list(counts.columns) == ["client"] + [f"class_{c}" for c in range(10)]
    assert len(counts) == 6
    stats = json.loads(out.with_name("partition.json").read_text())
    assert counts.iloc[:, 1:].to_numpy().sum() == sum(
        stats["train_samples"] + stats["test_samples"]
    )


def test_cli_bad_scheme_params_is_a_clear_error(tmp_path: Path, capsys) -> None:
    config = {
        "dataset": {"name": "synthetic", "params": {"alpha": 0.5, "beta": 0.5, "num_clients": 6}},
        "partition": {"scheme": "dirichlet", "num_clients": 6, "params": {"alpha": 0.1}},
        "schedule": SCHEDULE,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "p.npz")]) == 1
    err = capsys.readouterr().err
    assert "run.yaml" in err and "partition" in err and "dirichlet_alpha" in err
    assert not (tmp_path / "p.npz").exists()


def test_cli_dataset_errors_name_the_dataset_section(tmp_path: Path, capsys) -> None:
    config = {
        "dataset": {"name": "synthetic", "params": {"alpha": 0.5, "beta": 0.5, "gamma": 1}},
        "schedule": SCHEDULE,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "p.npz")]) == 1
    err = capsys.readouterr().err
    assert "config section 'dataset'" in err and "gamma" in err


def test_cli_default_num_clients_is_the_natural_count(tmp_path: Path) -> None:
    config = {
        "dataset": {"name": "synthetic", "params": {"alpha": 0, "beta": 0, "num_clients": 4}},
        "partition": {"scheme": "iid", "num_clients": None},
        "schedule": SCHEDULE,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "p.npz")]) == 0
    assert load_partition(tmp_path / "p.npz").num_clients == 4


def test_num_classes_keeps_absent_classes_as_columns() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    part = partition_dataset(labels, None, "iid", 2, 0, num_classes=5)
    assert class_counts(part, labels).shape == (2, 5)
    with pytest.raises(ValueError, match="labels must lie"):
        partition_dataset(labels, None, "iid", 2, 0, num_classes=1)
