"""The data set container and the error every data problem is reported with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class DataError(RuntimeError):
    """A data problem a person must fix: the message names the file, what was expected and
    what to do about it."""


@dataclass(frozen=True)
class Dataset:
    """All samples of a data set, pooled (train + test of the source).

    Attributes:
        name: data set name as given to :func:`persafl.data.load_dataset`.
        x: float32 features, ``[N, *feature_shape]``.
        y: int64 labels in ``0..num_classes-1``, ``[N]``.
        num_classes: number of classes.
        groups: natural client id per sample (``synthetic``), else ``None``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    groups: np.ndarray | None

    def __len__(self) -> int:
        return int(self.y.shape[0])
