"""A run's test samples laid out for evaluation, gathered once and shared within a group.

Clients are evaluated in stacks of similar test-set size (:mod:`persafl.engine.eval_stacks`):
a stack of n clients is padded to its longest test set L and masked. Two layouts of the same
samples serve the two kinds of forward pass, each gathered on first use and kept while it fits
in ``CACHE_ELEMENTS`` scalars (else gathered anew per evaluation):

- ``padded(stack)`` [n, L, ...]: per-client models (personalized, ``local``), whose batched
  forward needs one length per stack. Padding repeats the client's first test index (index 0
  of the data set for a client without test samples) and is masked out.
- ``rows()`` [R, ...]: the server model, one model for all clients, needs only the real
  samples: each stack's unmasked positions plus each client's first position (so that a client
  without test samples still has its one padded row), all stacks in one tensor, so that the
  forward passes do not follow the stacks (a stack under ``SMALL_ROWS`` padded samples is left
  out and keeps its own forward pass). :meth:`TestSets.spread` puts a stack's logits back
  into its padded layout, each padded position a copy of its client's first row: every entry
  of the padded logits is then the one a forward pass over the padded stack gives (a row's
  logits do not depend on the other rows of a matrix product of 8 rows or more: checked bit
  for bit by tests/test_test_sets.py), and the masked statistics that follow are unchanged.
  On MNIST's 2-label split the server's forward passes shrink from 21,308 padded samples in 4
  stacks to 17,502 real ones; Synthetic's 8 stacks become one tensor.

The runs of a group that hold the same partition (every staleness bound of a seed) evaluate the
same samples: :func:`shared` hands them one :class:`TestSets` from the group's cache, so the
gathered tensors exist once per partition instead of once per run.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, Sequence

import numpy as np
import torch
from torch import Tensor

from persafl.engine import eval_stacks
from persafl.engine.batches import gather

# Upper bound on the scalars (features and activations) of one evaluation stack (64M floats).
CHUNK_ELEMENTS = 1 << 26
# A stack with fewer padded samples than this keeps its own forward pass over its padded layout
# (and is left out of ``rows()``): a matrix product of fewer than 8 rows takes another path in
# MKL, whose logits differ from the same rows' in a larger product in the last bit (measured:
# 1-5 rows differ, 8-1,151 agree), so tiny stacks compute exactly what they computed before.
SMALL_ROWS = 64
# A layout's gathered samples are kept when they fit in this many scalars (2^27 float32 = 512
# MB): gathering them anew cost more than the test forward pass itself (MNIST, 17,500 test
# samples: 90 ms gather vs 55 ms forward on one core).
CACHE_ELEMENTS = 1 << 27


class TestSets:
    """The test samples of ``test`` (data-set indices per client) in evaluation stacks."""

    def __init__(self, x: Tensor, y: Tensor, test: Sequence[np.ndarray], per_sample: int) -> None:
        self.x, self.y = x, y
        self.counts = np.array([len(t) for t in test], dtype=np.int64)
        self.stacks = eval_stacks.plan_stacks(
            self.counts, per_sample, CHUNK_ELEMENTS, eval_stacks.MAX_WASTE
        )
        self.stack_ids = [torch.from_numpy(ids).to(x.device) for ids in self.stacks]
        # Stats come out in stack order; this puts them back in client order.
        self.unstack = np.argsort(np.concatenate(self.stacks), kind="stable")
        self.index: list[np.ndarray] = []  # padded data-set indices [n, L] per stack
        self.mask: list[Tensor] = []  # [n, L] True at real samples
        self.labels: list[Tensor] = []  # padded labels [n, L]
        rows: list[np.ndarray] = []  # data-set indices of each stack's part of the rows layout
        # the row of ``rows()`` at each padded position (None: a small stack, not in rows())
        self.source: list[Tensor | slice | None] = []
        start = 0
        for ids in self.stacks:
            length = eval_stacks.padded_length(self.counts, ids)
            padded = np.zeros((len(ids), length), dtype=np.int64)
            for row, client in enumerate(ids.tolist()):
                if len(test[client]):
                    padded[row, : len(test[client])] = test[client]
                    padded[row, len(test[client]) :] = test[client][0]
            real = np.arange(length)[None, :] < self.counts[ids][:, None]
            keep = real.copy()
            keep[:, 0] = True
            position = start + np.cumsum(keep.ravel()) - 1  # row of each kept position
            first = np.repeat(position.reshape(keep.shape)[:, 0], length)
            self.index.append(padded)
            self.mask.append(torch.from_numpy(real).to(x.device))
            flat = torch.from_numpy(padded.ravel()).to(y.device)
            self.labels.append(y.index_select(0, flat).view(padded.shape))
            if padded.size < SMALL_ROWS:
                self.source.append(None)
                continue
            rows.append(padded.ravel()[keep.ravel()])
            self.source.append(  # a slice where the stack has no padding
                slice(start, start + padded.size)
                if keep.all()
                else torch.from_numpy(np.where(keep.ravel(), position, first)).to(x.device)
            )
            start += len(rows[-1])
        self.row_index = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        features = int(np.prod(x.shape[1:]))
        self._padded = self._keep(sum(i.size for i in self.index) * features)
        self._rows = self._keep(self.row_index.size * features)

    @staticmethod
    def _keep(elements: int) -> dict[int, Tensor] | None:
        return {} if elements <= CACHE_ELEMENTS else None

    def padded(self, stack: int) -> Tensor:
        """Features [n, L, ...] of ``stack``, padded."""
        return self._gather(self._padded, stack, self.index[stack])

    def rows(self) -> Tensor:
        """Features [R, ...] of every stack's real samples (and of empty clients' one pad), the
        stacks one after the other."""
        return self._gather(self._rows, 0, self.row_index)

    def _gather(self, kept: dict[int, Tensor] | None, stack: int, index: np.ndarray) -> Tensor:
        if kept is not None and stack in kept:
            return kept[stack]
        features = gather(self.x, self.y, index)[0]
        if kept is not None:
            kept[stack] = features
        return features

    def spread(self, stack: int, logits: Tensor) -> Tensor:
        """Logits [n, L, K] of ``stack``'s padded layout from the logits [R, K] of
        :meth:`rows`."""
        source = self.source[stack]
        if source is None:
            raise ValueError(f"stack {stack} is small: it has no rows in rows()")
        part = logits[source] if isinstance(source, slice) else logits.index_select(0, source)
        return part.unflatten(0, self.index[stack].shape)


def shared(
    cache: MutableMapping | None,
    x: Tensor,
    y: Tensor,
    test: Sequence[np.ndarray],
    per_sample: int,
) -> TestSets:
    """The :class:`TestSets` of ``test`` on ``x``, from ``cache`` when a run of the group with
    the same test indices made it already (``cache`` None: a private one)."""
    if cache is None:
        return TestSets(x, y, test, per_sample)
    digest = hashlib.sha256()
    for indices in test:
        array = np.ascontiguousarray(indices, dtype=np.int64)
        digest.update(len(array).to_bytes(8, "little"))
        digest.update(array.tobytes())
    key = (id(x), id(y), per_sample, digest.hexdigest())
    if key not in cache:
        cache[key] = TestSets(x, y, test, per_sample)
    return cache[key]
