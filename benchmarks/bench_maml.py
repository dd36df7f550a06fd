"""Seconds of MAML runs with the fused step (low-rank first layer) against plain descents.

``methods.maml.maml_step`` hands a stacked fully connected model's whole step to
:func:`persafl.engine.fused_maml.make_maml` (the batched ``grad_fn``'s ``maml`` attribute)
since 2026-12-07; before, it was two (FO) or four (HF) fused descents, each building its point
in full. This times both on the same data and reports client local steps per second:

- ``step``: one stacked step of C clients (``--clients``, 13 as in a paper-config chunk), MLP
  784-100-10, batch 20, best of ``--repeats`` means of 50 steps;
- ``group``: ``--runs`` asynchronous runs driven as one group (``persafl.engine.group.drive``,
  as a Snakemake group job does) on MNIST-shaped random data (bench_gather.fake_mnist: 70,000
  rows, 20 clients), the paper config's clock at staleness bound 8, Q = 20, ``--updates``
  server updates, evaluation at the start and end only (included in both).

The two routes give the same values up to float rounding (tests/test_fused.py).
Usage: python benchmarks/bench_maml.py [--threads 1] [--repeats 5] [--runs 5] [--updates 200]
Writes maml.{md,csv} to --out (benchmarks/results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import report
import torch
from bench_gather import fake_mnist

from persafl import methods
from persafl.engine import fused_maml
from persafl.engine.executor import prepare
from persafl.engine.group import drive
from persafl.engine.schedule import ScheduleConfig, make_trace
from persafl.methods import maml
from persafl.models import build_model, init_params, make_batched_grad_fn

METHODS = ("persafl_maml_fo", "persafl_maml_hf")
HP = {"local_steps": 20, "batch_size": 20}  # the paper config's; the rest: method defaults


def routes(model: torch.nn.Module):
    """(label, batched grad_fn) with and without the fused MAML step."""
    fast = make_batched_grad_fn(model)
    plain = make_batched_grad_fn(model)
    del plain.maml  # the step through make_descend's descents, as before 2026-12-07
    return (("descents", plain), ("fused", fast))


def time_step(name: str, clients: int, repeats: int) -> dict:
    hp = methods.resolve_hp(methods.get(name), HP)
    hessian_free = name.endswith("hf")
    model = build_model("mlp", (1, 28, 28), 10)
    params = [init_params(model, s) for s in range(clients)]
    stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(3, clients, 20, 1, 28, 28, generator=gen)
    ys = torch.randint(0, 10, (3, clients, 20), generator=gen)
    best = {}
    for label, grad_fn in routes(model):
        for _ in range(5):
            maml.maml_step(stacked, xs, ys, hp, grad_fn, hessian_free)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(50):
                maml.maml_step(stacked, xs, ys, hp, grad_fn, hessian_free)
            times.append((time.perf_counter() - start) / 50)
        best[label] = clients / min(times)
    return row("step", name, clients, best)


def time_group(name: str, data, partition, runs: int, updates: int, repeats: int) -> dict:
    method = methods.get(name)
    hp = methods.resolve_hp(method, HP)
    model = build_model("mlp", (1, 28, 28), 10)
    cfg = ScheduleConfig("clock", 8, updates)
    traces = [make_trace(cfg, 20, seed=seed) for seed in range(runs)]
    steps = sum(len(u.clients) for t in traces for u in t.updates) * int(hp["local_steps"])
    seconds: dict[str, list[float]] = {"descents": [], "fused": []}
    for _ in range(repeats):
        for label, fuse in (("descents", False), ("fused", True)):
            supports = fused_maml.supports
            if not fuse:  # the batched grad_fn is built inside prepare: hide the fused step
                fused_maml.supports = lambda model: False
            try:
                replays = [
                    prepare(trace, method, hp, model, data, partition, seed, "vectorized",
                            eval_every=updates)
                    for seed, trace in enumerate(traces)
                ]  # fmt: skip
            finally:
                fused_maml.supports = supports
            start = time.perf_counter()
            drive(replays)
            seconds[label].append(time.perf_counter() - start)
    return row("group", name, runs, {k: steps / min(v) for k, v in seconds.items()})


def row(kind: str, name: str, size: int, rates: dict[str, float]) -> dict:
    return {
        "kind": kind, "method": name, "clients_or_runs": size,
        "descents_steps_per_s": round(rates["descents"]),
        "fused_steps_per_s": round(rates["fused"]),
        "ratio": round(rates["fused"] / rates["descents"], 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["step", "group"], choices=["step", "group"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=13)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    if "step" in args.kinds:
        for name in args.methods:
            rows.append(time_step(name, args.clients, args.repeats))
            print(rows[-1], flush=True)
    if "group" in args.kinds:
        data, partition = fake_mnist()
        for name in args.methods:
            rows.append(time_group(name, data, partition, args.runs, args.updates, args.repeats))
            print(rows[-1], flush=True)
    report.write(
        args.out, "maml", rows,
        "MAML steps fused (low-rank first layer) vs through plain descents",
        f"{args.threads} thread(s), best of {args.repeats}. Steps/s = client local steps per "
        f"second; step: one stacked step of {args.clients} clients; group: {args.runs} runs "
        f"of {args.updates} updates (clock, bound 8, Q = 20) driven together.",
        {"kind": "kind", "method": "method", "clients_or_runs": "clients / runs",
         "descents_steps_per_s": "descents steps/s", "fused_steps_per_s": "fused steps/s",
         "ratio": "ratio"},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
