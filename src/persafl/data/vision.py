"""Image data sets, pooled and standardized (pFedMe).

MNIST and Fashion-MNIST are read from their verified IDX files by :func:`read_idx` (the same
arrays torchvision's MNIST classes read, tests/test_data.py), CIFAR-10 with torchvision's own
class. torchvision is imported only for CIFAR-10: importing it pulls in its models and, through
them, torch's compiler stack, about 1.2 s for each training process (benchmarks/README.md
"bench_process.py").

Train and test splits of the source are pooled, because the federated train/test split is made
per client by :mod:`persafl.partition`. MNIST and Fashion-MNIST are standardized per pixel over
all 70,000 samples (pFedMe); CIFAR-10 per channel over all 60,000 (the usual CIFAR
normalization; per-pixel statistics of colour images mostly encode the mean image).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from persafl.data.base import DataError, Dataset
from persafl.data.sources import FOLDERS, NETWORK_TIMEOUT_S, ensure_idx, socket_timeout

if TYPE_CHECKING:
    from torchvision import datasets

# the pooled splits' files, train first: (images, labels)
IDX_SPLITS = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST files use


def _standardize(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """(x - mean) / std over ``dims``, in place; features that never vary keep std 1 (MNIST's
    border pixels are always 0 and would divide by zero)."""
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return x.sub_(mean).div_(std)


def raw_idx(
    name: str, root: str | Path, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled uint8 images ``[70000, 28, 28]`` (train first) and int64 labels of an IDX set."""
    folder = ensure_idx(name, root, download=download)
    images = [torch.from_numpy(read_idx(folder / files[0], ndim=3)) for files in IDX_SPLITS]
    labels = [torch.from_numpy(read_idx(folder / files[1], ndim=1)) for files in IDX_SPLITS]
    return torch.cat(images), torch.cat(labels).to(torch.int64)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An uncompressed IDX file of unsigned bytes with ``ndim`` dimensions: two zero bytes,
    the type code 0x08, the number of dimensions, each size as a big-endian int32, then the
    values (https://yann.lecun.com/exdb/mnist/). A writable uint8 array of those sizes."""
    raw = path.read_bytes()
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) (header "
            f"{raw[:4].hex() or 'empty'}). Delete it and re-run to fetch it again."
        )
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != math.prod(shape):
        raise DataError(
            f"{path}: header says {shape} values, the file holds {len(raw) - header} "
            "(truncated or corrupt). Delete it and re-run to fetch it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_idx_dataset(name: str, root: str | Path, download: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST: x ``[70000, 1, 28, 28]`` float32 standardized per pixel."""
    if name not in FOLDERS:
        raise ValueError(f"{name!r} is not an IDX data set; expected one of {list(FOLDERS)}")
    images, labels = raw_idx(name, root, download=download)
    x = _standardize(images.to(torch.float32).div_(255.0).unsqueeze(1), dims=(0,))
    return Dataset(name=name, x=x, y=labels, num_classes=10, groups=None)


def _cifar_files(dataset_class: type[datasets.CIFAR10]) -> list[tuple[str, str | None]]:
    """(file name, md5) of every file the class reads, the metadata file included."""
    meta = dataset_class.meta
    return [
        *((f, m) for f, m in dataset_class.train_list + dataset_class.test_list),
        (meta["filename"], meta["md5"]),
    ]


def raw_cifar10(
    root: str | Path,
    download: bool = True,
    dataset_class: type[datasets.CIFAR10] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled uint8 images ``[60000, 3, 32, 32]`` (train first) and int64 labels.

    ``dataset_class`` is torchvision's CIFAR10 (whose md5 checks of every batch file are kept);
    tests pass a subclass with ``md5 = None`` to read a tiny file of the real format.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    dataset_class = dataset_class or datasets.CIFAR10
    folder = Path(root) / dataset_class.base_folder
    files = _cifar_files(dataset_class)
    if all((folder / f).is_file() for f, _ in files):
        for filename, md5 in files:
            if not check_integrity(str(folder / filename), md5):
                raise DataError(
                    f"{folder / filename}: md5 is not the expected {md5} (corrupt or a "
                    f"different file). Delete {folder} and re-run, or extract the original "
                    f"cifar-10-python.tar.gz under {root}."
                )
    elif download:
        try:
            with socket_timeout(NETWORK_TIMEOUT_S):
                dataset_class(str(root), train=True, download=True)
        except Exception as err:
            raise DataError(
                f"{folder}: CIFAR-10 batch files missing and the download failed ({err}). "
                f"CIFAR-10 is not in any package registry: download cifar-10-python.tar.gz from "
                f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it under {root}."
            ) from err
    else:
        raise DataError(
            f"{folder}: CIFAR-10 batch files missing and download is disabled. Extract "
            f"cifar-10-python.tar.gz under {root}."
        )
    parts = [dataset_class(str(root), train=train, download=False) for train in (True, False)]
    images = np.concatenate([p.data for p in parts]).transpose(0, 3, 1, 2)  # HWC -> CHW
    labels = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    return np.ascontiguousarray(images), labels


def load_cifar10(
    root: str | Path,
    download: bool = True,
    dataset_class: type[datasets.CIFAR10] | None = None,
) -> Dataset:
    """CIFAR-10: x ``[60000, 3, 32, 32]`` float32 standardized per channel."""
    images, labels = raw_cifar10(root, download=download, dataset_class=dataset_class)
    x = _standardize(torch.from_numpy(images).to(torch.float32).div_(255.0), dims=(0, 2, 3))
    return Dataset(name="cifar10", x=x, y=torch.from_numpy(labels), num_classes=10, groups=None)
