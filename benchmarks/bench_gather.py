"""Seconds of the whole engine with batches gathered per local step against up front.

``persafl.engine.jobs.compute_stacked`` on a CPU hands ``local_update`` a
:class:`persafl.engine.batches.StepBatches` when a chunk's batches exceed
``jobs.STEP_GATHER_ELEMENTS`` (4 MB): each local step gathers its own rows. Before 2026-12-07
a stacked chunk's batches of all Q steps were always gathered in one copy first. This runs
``engine.executor.run`` (vectorized backend) both ways on the same MNIST-shaped random data
(70,000 rows, 20 clients of Dirichlet(1) sizes, 75 % train, MLP 784-100-10, batch 20), with
the same results (tests/test_step_batches.py), and reports the best of ``--repeats``
alternating timings (evaluation at the start and end only, included in both).

- ``barrier``: synchronous rounds of all 20 clients, Q = 131 local steps per job (the shape
  of bench_pfllib.py's MLP rows: PFLlib's MNIST split in steps of 20);
- ``clock``: the paper config's asynchronous clock, staleness bound 8, Q = 20, 400 updates.

Usage: python benchmarks/bench_gather.py [--schedules barrier clock] [--threads 2]
       [--repeats 3] [--out benchmarks/results]
Writes gather.{md,csv}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import report
import torch

from persafl import methods
from persafl.data import Dataset
from persafl.engine import batches, jobs
from persafl.engine.executor import run
from persafl.engine.schedule import ScheduleConfig, make_trace
from persafl.models import build_model
from persafl.partition import Partition

METHODS = ("afl", "persafl_maml_fo", "persafl_me")
SHAPES = {
    "barrier": (ScheduleConfig("barrier", 0, 2), 131),
    "clock": (ScheduleConfig("clock", 8, 400), 20),
}


def fake_mnist(seed: int = 0) -> tuple[Dataset, Partition]:
    rng = np.random.default_rng(seed)
    n = 70000
    gen = torch.Generator().manual_seed(seed)  # the same data in every process
    x, y = torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    sizes = rng.dirichlet([1.0] * 20) * n
    parts = np.split(rng.permutation(n), np.cumsum(sizes).astype(int)[:-1])
    train = [p[: int(0.75 * len(p))] for p in parts]
    test = [p[int(0.75 * len(p)) :] for p in parts]
    return Dataset("mnist_shaped", x, y, 10, None), Partition(train, test, 10, "fake", {})


def time_both(schedule: str, name: str, data, partition, repeats: int) -> dict:
    cfg, steps = SHAPES[schedule]
    method = methods.get(name)
    hp = methods.resolve_hp(
        method,
        {"local_steps": steps, "batch_size": 20, "local_lr": 0.005, "server_lr": 1.0,
         "personal_lr": 0.005},
    )  # fmt: skip
    model = build_model("mlp", (1, 28, 28), 10)
    trace = make_trace(cfg, 20, seed=0)
    total = sum(len(u.clients) for u in trace.updates) * steps
    seconds: dict[str, list[float]] = {"up front": [], "per step": []}
    for _ in range(repeats):
        for label, fetch in (("up front", batches.gather), ("per step", batches.gather_steps)):
            jobs.gather_steps = fetch  # what compute_stacked calls on a CPU
            start = time.perf_counter()
            run(trace, method, hp, model, data, partition, 0, backend="vectorized",
                eval_every=10**9)  # fmt: skip
            seconds[label].append(time.perf_counter() - start)
    jobs.gather_steps = batches.gather_steps
    before, after = min(seconds["up front"]), min(seconds["per step"])
    return {
        "schedule": schedule, "method": name, "local_steps": total,
        "up_front_steps_per_s": round(total / before), "per_step_steps_per_s": round(total / after),
        "ratio": round(before / after, 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, partition = fake_mnist()
    rows = []
    for schedule in args.schedules:
        for name in args.methods:
            rows.append(time_both(schedule, name, data, partition, args.repeats))
            print(rows[-1], flush=True)
    report.write(
        args.out, "gather", rows, "Batches gathered per local step vs up front",
        f"{args.threads} threads, best of {args.repeats}. Steps/s = client local steps per second.",
        {"schedule": "schedule", "method": "method", "local_steps": "local steps",
         "up_front_steps_per_s": "up front steps/s", "per_step_steps_per_s": "per step steps/s",
         "ratio": "ratio"},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
