"""Driving replays: one run, or a group of runs whose client jobs share stacked calls.

Each run's :class:`persafl.engine.executor.Replay` is a generator: where it needs client jobs
computed it yields a :class:`Request` (the jobs whose start model is already known, with their
start parameters) and waits for the new parameters. :func:`drive` advances every replay of a
group to its next request, then answers all pending requests of the same step form (same
method, hyperparameters, model and data tensor) with ONE stacked ``local_update`` call
(:func:`persafl.engine.jobs.compute_stacked`, chunked to the cache as for one run), and repeats.

Within an asynchronous run only the jobs whose start version exists can be stacked (about 3.6
per call at bound 8 with 20 clients); a group of R runs stacks about R times more. What a job
computes never depends on its neighbours in a stack (its batches come from its own run's seed,
update and slot; every stacked kernel works client by client), so a run's results are the same
alone or in a group (tests/test_group.py).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from tqdm import tqdm

from persafl.engine.jobs import JobRunner, compute_stacked
from persafl.models import Params

if TYPE_CHECKING:
    from persafl.engine.executor import RunResult


@dataclass
class Request:
    """Jobs of one run to compute: ``starts`` stacked along dim 0 in ``job_ids`` order."""

    runner: JobRunner
    job_ids: list[int]
    starts: Params


class Steppable(Protocol):
    num_updates: int
    result: RunResult

    def steps(self) -> Generator[Request, Params, RunResult]: ...


def answer(requests: Sequence[Request]) -> list[Params]:
    """New parameters for every request: requests of one step form share stacked calls."""
    forms: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        forms.setdefault(request.runner.stack_key, []).append(i)
    out: list[Params | None] = [None] * len(requests)
    for members in forms.values():
        pairs = [(requests[i].runner, j) for i in members for j in requests[i].job_ids]
        starts = {
            name: _cat([requests[i].starts[name] for i in members])
            for name in requests[members[0]].starts
        }
        new = compute_stacked(pairs, starts)
        offset = 0
        for i in members:
            count = len(requests[i].job_ids)
            out[i] = {name: value[offset : offset + count] for name, value in new.items()}
            offset += count
    return out  # type: ignore[return-value]


def _cat(tensors: list[Any]) -> Any:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def drive(replays: Sequence[Steppable], progress: bool = False) -> list[RunResult]:
    """Run every replay to its end, answering their requests together; results in order."""
    results: list[RunResult | None] = [None] * len(replays)
    generators = [replay.steps() for replay in replays]
    pending: dict[int, Request] = {}
    total = sum(replay.num_updates for replay in replays)
    bar = tqdm(total=total, file=sys.stderr, disable=not progress, unit="upd", leave=False)
    done = 0

    def advance(i: int, value: Params | None) -> None:
        try:
            pending[i] = generators[i].send(value)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)

    try:
        for i in range(len(replays)):
            advance(i, None)
        while pending:
            order = sorted(pending)
            answers = answer([pending[i] for i in order])
            for i, new in zip(order, answers, strict=True):
                advance(i, new)
            applied = sum(replay.result.updates_applied for replay in replays)
            bar.update(applied - done)
            done = applied
    finally:
        bar.close()
    return results  # type: ignore[return-value]
