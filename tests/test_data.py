"""Data sets: synthetic generator, IDX verification, CIFAR-10 format, real MNIST/FMNIST."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from persafl.data import DataError, load_dataset, sources
from persafl.data.synthetic import load_synthetic

REPO = Path(__file__).resolve().parents[1]


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_shapes_and_groups() -> None:
    data = load_synthetic(alpha=0.5, beta=0.5, num_clients=7, seed=3)
    n = len(data)
    assert data.x.shape == (n, 60) and data.x.dtype == torch.float32
    assert data.y.shape == (n,) and data.y.dtype == torch.int64
    assert data.num_classes == 10 and 0 <= int(data.y.min()) and int(data.y.max()) < 10
    assert data.groups is not None and data.groups.shape == (n,)
    sizes = np.bincount(data.groups)
    assert len(sizes) == 7 and sizes.min() >= 50 and sizes.max() <= 3000


def test_synthetic_deterministic_in_seed() -> None:
    a = load_synthetic(alpha=1.0, beta=1.0, num_clients=5, seed=0)
    b = load_synthetic(alpha=1.0, beta=1.0, num_clients=5, seed=0)
    c = load_synthetic(alpha=1.0, beta=1.0, num_clients=5, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape != c.x.shape or not torch.equal(a.x, c.x)


def test_synthetic_client_independent_of_client_count() -> None:
    """Client k is drawn from its own stream: adding clients does not change the first ones."""
    small = load_synthetic(alpha=0.5, beta=0.5, num_clients=3, seed=2)
    large = load_synthetic(alpha=0.5, beta=0.5, num_clients=6, seed=2)
    assert torch.equal(small.x, large.x[: len(small)])


def test_synthetic_beta_moves_client_feature_means() -> None:
    """beta is the spread of B_k, the centre of client k's feature mean v_k."""

    def spread(beta: float) -> float:
        data = load_synthetic(alpha=0.0, beta=beta, num_clients=40, seed=0, max_client_samples=60)
        means = [data.x[data.groups == k].mean().item() for k in range(40)]
        return float(np.std(means))

    assert spread(5.0) > 3 * spread(0.0)


def test_synthetic_via_load_dataset_requires_alpha_beta() -> None:
    data = load_dataset("synthetic", "unused", alpha=0.0, beta=0.0, num_clients=2, dim=5)
    assert data.x.shape[1] == 5
    with pytest.raises(ValueError, match="alpha"):
        load_dataset("synthetic", "unused", beta=0.5)


def test_unknown_dataset_and_param() -> None:
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("imagenet", "data")
    with pytest.raises(ValueError, match="unknown parameter"):
        load_dataset("mnist", "data", alpha=1)


# --- IDX verification -------------------------------------------------------------------------


def _fake_raw(root: Path, name: str) -> Path:
    folder = sources.raw_dir(name, root)
    folder.mkdir(parents=True)
    for filename in sources.IDX_FILES:
        (folder / filename).write_bytes(b"not the real file")
    return folder


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_sha256_mismatch_is_a_clear_error(tmp_path: Path, name: str) -> None:
    folder = _fake_raw(tmp_path, name)
    with pytest.raises(DataError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert str(folder / "train-images-idx3-ubyte") in message
    assert sources.RAW_SHA256[name]["train-images-idx3-ubyte"] in message
    assert "Delete" in message
    # The user's file is never overwritten by another source.
    assert (folder / "train-images-idx3-ubyte").read_bytes() == b"not the real file"


def _write_idx(path: Path, values: np.ndarray) -> None:
    """An IDX file of unsigned bytes: 0, 0, type 0x08, ndim, big-endian int32 sizes, values."""
    header = bytes([0, 0, 0x08, values.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in values.shape
    )
    path.write_bytes(header + values.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_reader_reads_what_torchvision_reads(tmp_path: Path, monkeypatch, name) -> None:
    """raw_idx reads the IDX files itself (torchvision's import costs each training process
    about 1.7 s): the pooled images and labels equal torchvision's own classes' arrays."""
    from torchvision import datasets

    from persafl.data import vision

    folder = sources.raw_dir(name, tmp_path)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for (images, labels), n in zip(vision.IDX_SPLITS, (7, 3), strict=True):
        _write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / labels, rng.integers(0, 10, n))
    monkeypatch.setattr(vision, "ensure_idx", lambda name, root, download: folder)
    images, labels = vision.raw_idx(name, tmp_path)
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    parts = [cls(str(tmp_path), train=train, download=False) for train in (True, False)]
    assert torch.equal(images, torch.cat([p.data for p in parts]))
    assert torch.equal(labels, torch.cat([p.targets for p in parts]).to(torch.int64))
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (10, 28, 28) and labels.shape == (10,)


def test_idx_reader_names_a_bad_header_or_a_short_file(tmp_path: Path) -> None:
    from persafl.data.vision import read_idx

    path = tmp_path / "train-labels-idx1-ubyte"
    _write_idx(path, np.arange(5))
    assert read_idx(path, ndim=1).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes with 3"):
        read_idx(path, ndim=3)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"header says \[5\] values, the file holds 4"):
        read_idx(path, ndim=1)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="header empty"):
        read_idx(path, ndim=1)


def test_no_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download is disabled.*Place the uncompressed IDX"):
        load_dataset("mnist", tmp_path, download=False)


def test_registry_failure_names_what_to_do(tmp_path: Path, monkeypatch) -> None:
    """With every source failing, the error lists each failure and where to put the files."""

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("offline")

    monkeypatch.setattr(sources, "_from_torchvision", fail)
    monkeypatch.setattr(sources, "_from_debian", fail)
    with pytest.raises(DataError) as info:
        sources.ensure_idx("fashion_mnist", tmp_path)
    message = str(info.value)
    assert "torchvision download: offline" in message and "registry copy: offline" in message
    assert str(sources.raw_dir("fashion_mnist", tmp_path)) in message


def test_registry_fetch_works_from_a_relative_root(tmp_path: Path, monkeypatch) -> None:
    """A relative data root (the configs' `data_root: data`): every path a registry client is
    handed must exist from that client's own working directory (regression: dpkg-deb was given
    data/.fetch-*/x.deb while running inside data/.fetch-*)."""
    seen: list[bool] = []

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("offline")

    def fake_run(cmd: list[str], cwd: Path) -> None:
        if cmd[:2] == ["apt-get", "download"]:
            (Path(cwd) / f"{sources.DEBIAN_PACKAGE}_0.0~git1-1_all.deb").write_bytes(b"deb")
        elif cmd[0] == "dpkg-deb":
            seen.append((Path(cwd) / cmd[2]).is_file())
            raise RuntimeError("stop after the check")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "_from_torchvision", offline)
    monkeypatch.setattr(sources, "_run", fake_run)
    with pytest.raises(DataError, match="stop after the check"):
        sources.ensure_idx("fashion_mnist", Path("data"))
    assert seen == [True]


def test_verify_file_accepts_matching_hash(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    sources.verify_file(path, sources.sha256_of(path), "")
    with pytest.raises(DataError, match="file not found"):
        sources.verify_file(tmp_path / "missing", "0" * 64, "")


# --- CIFAR-10 in its real format --------------------------------------------------------------


def _write_tiny_cifar(root: Path, per_batch: int = 4) -> np.ndarray:
    """Six pickled batches + batches.meta in torchvision's layout; returns all labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)  # test fixture data only
    labels = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch_labels = rng.integers(0, 10, per_batch).tolist()
        entry = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": batch_labels,
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
        labels += batch_labels
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return np.asarray(labels)


def test_cifar10_tiny_real_format_loads(tmp_path: Path) -> None:
    from torchvision.datasets import CIFAR10

    from persafl.data.vision import load_cifar10

    class UncheckedCIFAR10(CIFAR10):
        """torchvision's CIFAR10 without md5s: the tiny file has the format, not the content."""

        train_list = [[f, None] for f, _ in CIFAR10.train_list]
        test_list = [[f, None] for f, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    labels = _write_tiny_cifar(tmp_path)
    data = load_cifar10(tmp_path, download=False, dataset_class=UncheckedCIFAR10)
    assert data.x.shape == (24, 3, 32, 32) and data.x.dtype == torch.float32
    assert np.array_equal(data.y.numpy(), labels)  # train batches first, then test
    channel_mean = data.x.mean(dim=(0, 2, 3))
    channel_std = data.x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(channel_mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(channel_std, torch.ones(3), atol=1e-4)


def test_cifar10_real_loader_keeps_md5_check(tmp_path: Path) -> None:
    _write_tiny_cifar(tmp_path)
    with pytest.raises(DataError, match="data_batch_1: md5"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)


# --- real MNIST / Fashion-MNIST (fetched once into <repo>/data) -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "mean", "std"), [("mnist", 0.1307, 0.3081), ("fashion_mnist", 0.2860, 0.3530)]
)
def test_real_idx_data(name: str, mean: float, std: float) -> None:
    from persafl.data.vision import raw_idx

    images, labels = raw_idx(name, REPO / "data")  # fetches + verifies the pins if needed
    assert images.shape == (70_000, 28, 28) and labels.shape == (70_000,)
    assert len(labels[:60_000]) == 60_000 and len(labels[60_000:]) == 10_000
    assert sorted(labels.unique().tolist()) == list(range(10))
    train = images[:60_000].to(torch.float64) / 255
    assert train.mean().item() == pytest.approx(mean, abs=5e-4)
    assert train.std().item() == pytest.approx(std, abs=5e-4)
    data = load_dataset(name, REPO / "data", download=False)
    assert data.x.shape == (70_000, 1, 28, 28) and data.x.dtype == torch.float32
    pixel_mean = data.x.mean(dim=0)
    assert pixel_mean.abs().max().item() < 1e-4  # standardized per pixel over all samples


def test_two_fetches_installing_the_same_file_at_once_do_not_break_each_other(
    tmp_path, monkeypatch
):
    """Two workflow jobs fetched Fashion-MNIST at once: one moved the other's shared
    '<file>.part' away and the second install failed. Each install now has its own temp file:
    an install that starts while another is half-way through leaves both complete."""
    source = tmp_path / "source.idx"
    source.write_bytes(b"idx" * 1000)
    target = tmp_path / "raw" / "train-images-idx3-ubyte"
    copy = sources.shutil.copyfile
    nested = {"done": False}

    def interleaved(src, dst):
        copy(src, dst)
        if not nested["done"]:  # the other process installs the same file right now
            nested["done"] = True
            sources._install(source, target)
        return dst

    monkeypatch.setattr(sources.shutil, "copyfile", interleaved)
    sources._install(source, target)
    assert nested["done"] and target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left
