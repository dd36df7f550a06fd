"""Client jobs of a trace and the two ways of computing them (one by one, or stacked).

A job is one client's ``method.local_update`` in one server update: job ``(k, j)`` is slot ``j``
of update ``k``. Jobs are numbered in trace order (update, then slot), which is also the order
the executor consumes their results in; the backend only decides *when* and *how many at a
time* they are computed, never what they compute: every job draws its batches from
``rng.generator(seed, "batch", k, j)`` and starts from a model fixed by the trace.

One job alone runs the reference gradient (``torch.func.grad``, :func:`models.make_grad_fn`);
a stack of jobs runs the same method code on parameters stacked along a leading client
dimension with :func:`models.make_batched_grad_fn` (batched autograd, no ``vmap``), batches laid
out [Q, S, C, B, ...] so that ``xb[q, s]`` is [C, B, ...].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from persafl.engine.batches import gather, gather_steps, job_indices
from persafl.engine.schedule import Trace
from persafl.methods import Method
from persafl.models import (
    Params,
    activations_per_sample,
    make_batched_grad_fn,
    make_grad_fn,
)

# Default cap on how many scalars (batch features, activations, parameter copies) one stacked
# call handles; larger sets of ready jobs are computed in chunks. 2^26 float32 = 256 MB.
MEMORY_ELEMENTS = 1 << 26
# Bound on the number of jobs computed ahead of time in one go (bounds stored results).
MAX_AHEAD_JOBS = 4096
# Cap on the stacked parameters of one call, counted as CACHE_COPIES live copies of them (start,
# current, new, and ME's anchor / HF's perturbed models): a stacked local step is memory-bound,
# and keeping a chunk's weights within the last-level cache across its Q steps measured
# 1.6-1.9x faster on the 784-100-10 MLP than stacks of 100; with the fused steps, 12-13 clients
# (4 copies) measured best over afl, HF and ME against 8 and 17 (benchmarks/README.md).
# 4M float32 = 16 MB; small models (60-20-10) are not limited by it.
CACHE_ELEMENTS = 4 << 20
CACHE_COPIES = 4
# A stacked chunk's batches of all its local steps are gathered in one copy up to this many
# scalars (4 MB of float32, cache-sized); above, each local step gathers its own rows when it
# needs them (batches.StepBatches): up to 1.3x the steps/s of synchronous rounds of 20
# MNIST-MLP clients with 131 steps each (107 MB up front), while the small chunks of one
# asynchronous run (about 3 jobs of 20 steps: 3.7 MB) were 2-4 % slower per step gathered
# that way (benchmarks/README.md).
STEP_GATHER_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class JobTable:
    """Flat arrays over all jobs of a trace, in trace order."""

    update: np.ndarray  # update index k of each job
    slot: np.ndarray  # position j of the client within its update
    client: np.ndarray
    start: np.ndarray  # server version the client downloaded
    first: np.ndarray  # first[k]: id of update k's first job; first[-1] = number of jobs

    @classmethod
    def from_trace(cls, trace: Trace) -> JobTable:
        sizes = np.array([len(u.clients) for u in trace.updates], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(sizes)])
        update = np.repeat(np.arange(len(sizes)), sizes)
        slot = np.arange(int(first[-1])) - first[update]
        client = np.fromiter((c for u in trace.updates for c in u.clients), dtype=np.int64)
        start = np.fromiter((s for u in trace.updates for s in u.start_versions), dtype=np.int64)
        return cls(update, slot, client, start, first)

    def __len__(self) -> int:
        return int(self.first[-1])

    def of_update(self, k: int) -> range:
        return range(int(self.first[k]), int(self.first[k + 1]))

    def last_use(self) -> dict[int, int]:
        """For each start version, the last update index that has a job starting from it."""
        out: dict[int, int] = {}
        for version, k in zip(self.start.tolist(), self.update.tolist(), strict=True):
            out[version] = k  # updates are in increasing order: the last write wins
        return out


class JobRunner:
    """Computes jobs: draws their batches and runs ``local_update`` one by one or stacked."""

    def __init__(
        self,
        method: Method,
        hp: Mapping,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        train: list[np.ndarray],
        jobs: JobTable,
        seed: int,
        memory_elements: int = MEMORY_ELEMENTS,
    ) -> None:
        self.method, self.hp = method, dict(hp)
        self.grad_fn, self.batched_grad_fn = make_grad_fn(model), make_batched_grad_fn(model)
        self.x, self.y, self.train, self.jobs, self.seed = x, y, train, jobs, seed
        self.steps = int(hp["local_steps"])
        self.batch_size = int(hp["batch_size"])
        self.memory_elements = memory_elements
        self.activations = activations_per_sample(model, tuple(x.shape[1:]))
        # runners with equal keys compute the same step form: their jobs can share a call
        # (fixed for the run: computed once, read on every stacked call)
        hp_items = tuple(sorted((k, repr(v)) for k, v in self.hp.items()))
        self.stack_key = (method.name, hp_items, repr(model), id(x), id(y))

    def indices(self, job: int) -> np.ndarray:
        """Data-set indices [Q, S, B] of ``job``'s batches."""
        return job_indices(
            self.seed,
            int(self.jobs.update[job]),
            int(self.jobs.slot[job]),
            self.train[int(self.jobs.client[job])],
            self.steps,
            self.method.batches_per_step,
            self.batch_size,
        )

    def one(self, job: int, start: Params) -> Params:
        """The reference: ``local_update`` of a single job with ``torch.func.grad``."""
        xb, yb = gather(self.x, self.y, self.indices(job))
        return self.method.local_update(start, xb, yb, self.hp, self.grad_fn)

    def chunk_size(self, params: Params) -> int:
        """Jobs per stacked call so that one call stays within ``memory_elements`` scalars."""
        features = int(np.prod(self.x.shape[1:]))
        batch = self.steps * self.method.batches_per_step * self.batch_size * (features + 1)
        # one gradient's forward activations and their gradients
        batch += 2 * self.batch_size * self.activations
        # parameter copies alive at once in a local step (start, current, grads, temporaries)
        numel = sum(int(v.numel()) for v in params.values())
        by_memory = self.memory_elements // (batch + 8 * numel)
        by_cache = (
            CACHE_ELEMENTS // (CACHE_COPIES * numel) if self.x.device.type == "cpu" else by_memory
        )
        return max(1, min(by_memory, by_cache))

    def ahead_limit(self, params: Params) -> int:
        """Most jobs computed in one go: results stay alive until consumed, so bound them."""
        weights = sum(int(v.numel()) for v in params.values())
        return max(1, min(MAX_AHEAD_JOBS, 4 * self.memory_elements // max(1, weights)))

    def stacked(self, job_ids: list[int], starts: Params) -> Params:
        """``local_update`` of many jobs at once; ``starts`` stacked along dim 0 in job order."""
        return compute_stacked([(self, j) for j in job_ids], starts)


def compute_stacked(pairs: list[tuple[JobRunner, int]], starts: Params) -> Params:
    """``local_update`` of jobs ``(runner, job id)`` of runners with one ``stack_key``.

    ``starts`` are stacked along dim 0 in ``pairs`` order. Chunks follow the first runner's
    :meth:`JobRunner.chunk_size`; each job's batches come from its own runner.
    """
    lead = pairs[0][0]
    size = lead.chunk_size({k: v[0] for k, v in starts.items()})
    outputs: list[Params] = []
    for offset in range(0, len(pairs), size):
        chunk = pairs[offset : offset + size]
        # [Q, S, C, B]: xb[q, s] holds batch (q, s) of every job in the chunk
        indices = np.stack([runner.indices(j) for runner, j in chunk], axis=2)
        # on a CPU a large chunk's local steps gather their own rows (cache-resident,
        # StepBatches); small chunks and a GPU gather everything in one call
        rows = indices.size * int(np.prod(lead.x.shape[1:]))
        per_step = lead.x.device.type == "cpu" and rows > STEP_GATHER_ELEMENTS
        fetch = gather_steps if per_step else gather
        xb, yb = fetch(lead.x, lead.y, indices)
        start = {k: v[offset : offset + len(chunk)] for k, v in starts.items()}
        outputs.append(lead.method.local_update(start, xb, yb, lead.hp, lead.batched_grad_fn))
    if len(outputs) == 1:
        return outputs[0]
    return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}


def finite_rows(params: Params) -> Tensor:
    """Bool [J]: whether each stacked parameter set is entirely finite.

    A sum is non-finite exactly when an entry is NaN or infinite, or when finite entries
    overflow it (|sum| > 3e38, a diverged model too); one reduction per row instead of a
    boolean copy of every parameter (23x faster on the stacked MNIST MLP).
    """
    sums = [v.reshape(v.shape[0], -1).sum(dim=1) for v in params.values()]
    return torch.isfinite(torch.stack(sums)).all(dim=0)


def finite_model(params: Params) -> bool:
    """Whether one (unstacked) parameter set is entirely finite: :func:`finite_rows` of it as a
    stack of one, the same sums, without building the stack (called once per server update)."""
    sums = torch.stack([v.reshape(1, -1).sum(dim=1) for v in params.values()])
    return bool(torch.isfinite(sums).all())


def stack(params: list[Params]) -> Params:
    """Stack parameter dicts along a new leading dimension."""
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def unstack(params: Params, count: int) -> list[Params]:
    """Split stacked parameters into ``count`` dicts (views, no copies)."""
    return [{k: v[i] for k, v in params.items()} for i in range(count)]
