"""The executor: replays a schedule trace with a method, and evaluates along the way.

Server methods (everything but ``local``): the server keeps ``x_k`` and every older version a
pending job still starts from (version ``v`` is freed after the last update with a job starting
at ``v``). Update ``k`` with clients ``c_j`` and start versions ``s_j`` computes
``delta_j = x_{s_j} - local_update(x_{s_j}, batches(k, j))`` and applies
``x_{k+1} = x_k - server_lr * sum_j w_j delta_j`` (PersA-FL, Toghani, Lee, Uribe 2022; w_j = 1/K
by default, sample or staleness weights: :mod:`persafl.engine.server`).

``local``: no server. Each client keeps its own model (all start from the run's initial
model, ``init_params(model, seed)``); its job in update ``k`` trains that
model from its current value (staleness does not apply); the update's order only decides when
a client's new model becomes visible to evaluation.

Backends (same results, up to float rounding of batched kernels):

- ``sequential``: one job at a time, when its update is processed: the reference.
- ``vectorized``: when update ``k`` needs a job not yet computed, every job whose start model
  is already known (server: start version <= k; local: the next job of each client) is
  computed in one stacked call (parameters stacked along a client dimension, batched autograd,
  chunked by memory, at most ``MAX_AHEAD_JOBS``), and results are then consumed in trace order.

Divergence: if a job's new parameters, the server model or an evaluation loss is non-finite,
the run stops with status ``diverged`` and a message (it is a result, not a crash).
Gradient evaluations: ``grad_evals`` counts the applied jobs, ``grads_per_step(hp) * Q`` each;
``grad_evals_dropped`` the jobs that finished but were never applied (dropped as too stale, or
the unsampled jobs of a ``train_all`` round: ``Trace.cumulative()["discarded"]``), at the same
price (their batches are not drawn here: a discarded job's result does not matter, its cost
does); ``grad_evals_total`` is their sum, the compute the clients spent. Jobs still running at
the last update are in neither. ``staleness_p95`` is the 95th percentile of the staleness of
every job applied so far.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Generator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from persafl.data import Dataset
from persafl.engine.evaluate import Evaluation, Evaluator
from persafl.engine.group import Request, drive
from persafl.engine.jobs import (
    MAX_AHEAD_JOBS,
    MEMORY_ELEMENTS,
    JobRunner,
    JobTable,
    finite_model,
    finite_rows,
    stack,
    unstack,
)
from persafl.engine.schedule import Trace
from persafl.engine.server import ServerRule
from persafl.methods import Method
from persafl.models import Params, init_params

if TYPE_CHECKING:
    from persafl.partition import Partition

BACKENDS = ("auto", "vectorized", "sequential")
ROW_PREFIX = (
    "update", "time", "grad_evals", "staleness_mean", "staleness_max", "dropped",
    "grad_evals_dropped", "grad_evals_total", "staleness_p95",
)  # fmt: skip


@dataclass
class RunResult:
    """What a run produced: metrics rows, the last evaluation, status and final models."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    last: Evaluation | None = None
    status: str = "completed"
    message: str = ""
    server: Params | None = None
    own: list[Params] | None = None
    updates_applied: int = 0
    grad_evals: int = 0
    compute_calls: int = 0  # local_update calls (stacked or not): shows how much was batched
    eval_seconds: float = 0.0  # wall time spent evaluating (its share of a run is reported)


class _Stop(Exception):
    """Raised inside the loop when the run diverges."""


def resolve_backend(model: nn.Module, device: torch.device) -> str:
    """``auto``: stack clients, except convolutional models on a CPU.

    Stacked convolutions (one grouped convolution over all clients) measured 1.2-4x slower than
    a per-client loop on a CPU, where a convolution's cost is arithmetic, not call overhead
    (benchmarks/README.md); linear models gain from stacking everywhere.
    """
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "sequential" if has_conv and device.type == "cpu" else "vectorized"


def run(
    trace: Trace,
    method: Method,
    hp: Mapping[str, Any],
    model: nn.Module,
    data: Dataset,
    partition: Partition,
    seed: int,
    backend: str = "auto",
    eval_every: int = 50,
    callback: Callable[[dict[str, Any]], None] | None = None,
    *,
    progress: bool = False,
    **options: Any,
) -> RunResult:
    """Replay ``trace`` with ``method`` on ``data`` split by ``partition`` (.train / .test).

    ``options`` are :func:`prepare`'s keywords (``device``, ``init``, ``max_ahead_jobs``,
    ``memory_elements``). ``callback(row)`` is called after each evaluation; ``progress``
    shows a tqdm bar on stderr. One run alone is a group of one
    (:func:`persafl.engine.group.drive`).
    """
    replay = prepare(
        trace, method, hp, model, data, partition, seed, backend, eval_every, callback, **options
    )
    return drive([replay], progress=progress)[0]


def prepare(
    trace: Trace,
    method: Method,
    hp: Mapping[str, Any],
    model: nn.Module,
    data: Dataset,
    partition: Partition,
    seed: int,
    backend: str = "auto",
    eval_every: int = 50,
    callback: Callable[[dict[str, Any]], None] | None = None,
    *,
    device: torch.device | str = "cpu",
    init: Params | None = None,
    max_ahead_jobs: int = MAX_AHEAD_JOBS,
    memory_elements: int = MEMORY_ELEMENTS,
    x: Tensor | None = None,
    y: Tensor | None = None,
    eval_cache: MutableMapping | None = None,
) -> Replay:
    """Check the inputs and set up one run's replay (arguments as :func:`run`).

    The data are moved to ``device`` once; ``model`` is moved there too. ``init`` defaults to
    ``init_params(model, seed)``. ``x``, ``y``: the data already on ``device`` (a group shares
    one copy); default ``data.x``/``data.y`` moved there. ``eval_cache``: a dict shared by a
    group's replays, in which runs with the same test indices share their gathered test samples
    (:mod:`persafl.engine.test_sets`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: got {backend!r}, expected one of {list(BACKENDS)}")
    train, test = list(partition.train), list(partition.test)
    if len(train) != trace.num_clients:
        raise ValueError(
            f"the partition has {len(train)} clients but the trace has {trace.num_clients}"
        )
    empty = [client for client, indices in enumerate(train) if len(indices) == 0]
    if empty:
        raise ValueError(
            f"client(s) {empty} have no training samples: every client needs some to train "
            "and to personalize; use a partition with a minimum client size"
        )
    if eval_every < 1:
        raise ValueError(f"eval_every: got {eval_every!r}, expected an integer >= 1")
    if x is None or y is None:
        x, y = data.x.to(device), data.y.to(device)
    model = model.to(x.device)
    if backend == "auto":
        backend = resolve_backend(model, x.device)
    if init is None:
        init = init_params(model, seed, device=x.device)
    params = {name: value.to(x.device) for name, value in init.items()}
    jobs = JobTable.from_trace(trace)
    runner = JobRunner(method, hp, model, x, y, train, jobs, seed, memory_elements)
    evaluator = Evaluator(model, method, hp, x, y, train, test, seed, eval_cache)
    return Replay(
        trace, method, hp, runner, jobs, evaluator, backend, max_ahead_jobs,
        params, eval_every, callback,
    )


class Replay:
    """One run's replay of its trace, as a generator of compute requests.

    :meth:`steps` walks the trace; where a job must be computed with the vectorized backend it
    yields a :class:`persafl.engine.group.Request` (the jobs whose start model is known, and
    their start parameters) and receives the new parameters. The driver
    (:func:`persafl.engine.group.drive`) answers the requests of many replays with one stacked
    call; the sequential backend computes its jobs in place and yields nothing.
    """

    def __init__(
        self,
        trace: Trace,
        method: Method,
        hp: Mapping[str, Any],
        runner: JobRunner,
        jobs: JobTable,
        evaluator: Evaluator,
        backend: str,
        max_ahead_jobs: int,
        params: Params,
        every: int,
        callback: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.trace, self.method, self.runner, self.jobs = trace, method, runner, jobs
        self.evaluator, self.backend, self.max_ahead = evaluator, backend, max_ahead_jobs
        self.params, self.every, self.callback = params, every, callback
        self.local = method.name == "local"
        self.server = ServerRule.from_hp(hp, [len(t) for t in runner.train])
        self.grads_per_job = int(method.grads_per_step(hp)) * int(hp["local_steps"])
        self.results: dict[int, Params] = {}  # computed, not yet consumed: delta or new model
        self.finite: dict[int, bool] = {}
        self.cumulative = trace.cumulative()
        self.result = RunResult()

    @property
    def num_updates(self) -> int:
        return len(self.trace.updates)

    # ----- the loop -----
    def steps(self) -> Generator[Request, Params, RunResult]:
        """Replay the trace; yields compute requests, returns the run's result."""
        params, n = self.params, self.num_updates
        if self.local:
            self.own = [dict(params) for _ in range(self.trace.num_clients)]
            self.latest = [dict(params) for _ in range(self.trace.num_clients)]
            self.chains = self._chains()
        else:
            self.versions = {0: params}
            self.last_use = self.jobs.last_use()
            self.order = np.lexsort((np.arange(len(self.jobs)), self.jobs.start))
            self.next_ready, self.ready = 0, []
        try:
            self._evaluate(0)
            for k in range(n):
                yield from self._step(k)
                self.result.updates_applied = k + 1
                self.result.grad_evals += self.grads_per_job * len(self.jobs.of_update(k))
                if (k + 1) % self.every == 0 or k + 1 == n:
                    self._evaluate(k + 1)
        except _Stop as stop:
            self.result.status, self.result.message = "diverged", str(stop)
        if self.local:
            self.result.own = self.own
        else:
            self.result.server = self.versions[self.result.updates_applied]
        return self.result

    def _step(self, k: int) -> Generator[Request, Params, None]:
        ids = list(self.jobs.of_update(k))
        if self.local:
            for job in ids:  # slot order: a client twice in one update chains its jobs
                if job not in self.results:
                    yield from self._compute_local(job)
                self._check(job, k)
                self.own[int(self.jobs.client[job])] = self.results.pop(job)
            return
        for job in ids:
            if job not in self.results:
                yield from self._compute_server(job, k)
            self._check(job, k)
        deltas = [self.results.pop(job) for job in ids]
        clients = [int(self.jobs.client[job]) for job in ids]
        staleness = [k - int(self.jobs.start[job]) for job in ids]
        new = self.server.apply(self.versions[k], deltas, clients, staleness)  # engine/server.py
        if not finite_model(new):
            raise _Stop(f"diverged at update {k}: the server model became non-finite")
        self.versions[k + 1] = new
        for version in [v for v in self.versions if v <= k and self.last_use.get(v, -1) <= k]:
            del self.versions[version]  # no pending job starts from it any more

    def _check(self, job: int, k: int) -> None:
        if not self.finite.pop(job):
            client = int(self.jobs.client[job])
            raise _Stop(
                f"diverged at update {k}: client {client}'s local update produced non-finite "
                "parameters (try smaller local_lr / personal_lr / server_lr)"
            )

    # ----- computing jobs -----
    def _compute_server(self, job: int, k: int) -> Generator[Request, Params, None]:
        """Compute ``job`` (of update ``k``), and with the vectorized backend all ready jobs."""
        self.result.compute_calls += 1
        if self.backend == "sequential":
            start = self.versions[int(self.jobs.start[job])]
            new = self.runner.one(job, start)
            delta = {name: start[name] - new[name] for name in start}
            self.results[job] = delta
            self.finite[job] = bool(finite_rows(stack([new])).all())
            return
        # Jobs become ready once their start version exists (start <= k).
        while self.next_ready < len(self.order):
            candidate = int(self.order[self.next_ready])
            if self.jobs.start[candidate] > k:
                break
            heapq.heappush(self.ready, candidate)
            self.next_ready += 1
        limit = min(self.max_ahead, self.runner.ahead_limit(self.versions[k]))
        batch = [heapq.heappop(self.ready) for _ in range(min(limit, len(self.ready)))]
        # The smallest ready ids are the current update's (earlier ones are consumed).
        assert job in batch, "the executor computes ready jobs in trace order"
        starts = stack([self.versions[int(self.jobs.start[j])] for j in batch])
        new = yield Request(self.runner, batch, starts)
        flags = finite_rows(new).tolist()
        deltas = unstack({name: starts[name] - new[name] for name in starts}, len(batch))
        for j, delta, flag in zip(batch, deltas, flags, strict=True):
            self.results[j], self.finite[j] = delta, flag

    def _chains(self) -> list[list[int]]:
        """Per client, its job ids in trace order (local: each job continues the previous)."""
        chains: list[list[int]] = [[] for _ in range(self.trace.num_clients)]
        for job, client in enumerate(self.jobs.client.tolist()):
            chains[client].append(job)
        for chain in chains:
            chain.reverse()  # pop() from the end gives the next job
        return chains

    def _compute_local(self, job: int) -> Generator[Request, Params, None]:
        """Compute ``job``; vectorized: also the next job of every other client."""
        self.result.compute_calls += 1
        if self.backend == "sequential":
            client = int(self.jobs.client[job])
            self.chains[client].pop()
            new = self.runner.one(job, self.own[client])
            self.results[job], self.finite[job] = new, bool(finite_rows(stack([new])).all())
            return
        limit = min(self.max_ahead, self.runner.ahead_limit(self.latest[0]))
        heads = sorted(chain[-1] for chain in self.chains if chain)[:limit]
        assert job in heads, "a client's jobs are computed in order"
        clients = [int(self.jobs.client[j]) for j in heads]
        for client in clients:
            self.chains[client].pop()
        new = yield Request(self.runner, heads, stack([self.latest[c] for c in clients]))
        flags = finite_rows(new).tolist()
        for j, client, params, flag in zip(
            heads, clients, unstack(new, len(heads)), flags, strict=True
        ):
            self.results[j], self.finite[j], self.latest[client] = params, flag, params

    # ----- evaluation -----
    def _evaluate(self, u: int) -> None:
        """Evaluate after ``u`` updates and append a metrics row (timed)."""
        started = time.perf_counter()
        try:
            self._evaluate_untimed(u)
        finally:
            self.result.eval_seconds += time.perf_counter() - started

    def _evaluate_untimed(self, u: int) -> None:
        if self.local:
            evaluation = self.evaluator.evaluate(u, None, stack(self.own))
        else:
            evaluation = self.evaluator.evaluate(u, self.versions[u])
        if not evaluation.finite:
            raise _Stop(f"diverged at update {u}: a test loss is non-finite")
        cum = self.cumulative
        dropped_evals = self.grads_per_job * int(cum["discarded"][u - 1]) if u else 0
        applied = int(cum["applied_jobs"][u - 1]) if u else 0
        row: dict[str, Any] = {
            "update": u,
            "time": float(self.trace.updates[u - 1].time) if u else 0.0,
            "grad_evals": self.result.grad_evals,
            "staleness_mean": float(cum["staleness_mean"][u - 1]) if u else float("nan"),
            "staleness_max": int(cum["staleness_max"][u - 1]) if u else 0,
            "dropped": int(cum["dropped"][u - 1]) if u else 0,
            "grad_evals_dropped": dropped_evals,
            "grad_evals_total": self.result.grad_evals + dropped_evals,
            "staleness_p95": self.trace.staleness_quantile(0.95, applied) if u else float("nan"),
            **evaluation.metrics,
        }
        self.result.rows.append(row)
        self.result.last = evaluation
        if self.callback is not None:
            self.callback(row)
