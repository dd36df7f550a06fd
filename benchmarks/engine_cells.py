"""bench_clients.py's ``--engine`` part: ``persafl.engine.executor.run`` on random data.

Per (workload, method, number of clients) and schedule it times one run with each backend and,
for every ``--engine-runs`` R > 1, a group of R runs driven together. The paths of a cell are
measured ``--engine-repeats`` times in interleaved order (every schedule and path once per
repeat), so that paths compared with each other saw the same machine load; rows give the median
with the minimum and maximum, and the per-repeat rates (``steps_per_s_all``).

The markdown's second table answers the issue's question "asynchronous at least as fast per
client step as synchronous rounds": per cell, the asynchronous group against synchronous rounds
of one run and of a group, as the ratio of medians and the range of the ratios of the rates
measured in the same repeat (adjacent in time).
"""

from __future__ import annotations

import math
import statistics
import time

from workloads import NUM_CLASSES, WORKLOADS, sync

ASYNC_SCHEDULES = ("clock", "delay")


def engine_rate(workload, method, hp, clients, schedule, backend, args, runs=1):
    """Time ``engine.executor.run`` on random data: (client steps/s, jobs per stacked call).

    Each client holds 200 random training samples and 2 test samples. A one-update, one-step
    run warms up first; the timed span is the replay of ``runs`` traces (seeds 0..runs-1)
    driven together (:func:`persafl.engine.group.drive`: one run alone, or a group whose jobs
    share stacked calls), minus their two evaluations each (update 0 and the last), timed
    again afterwards with the executor's ``Evaluator``.
    """
    import numpy as np
    import torch

    from persafl.data import Dataset
    from persafl.engine.evaluate import Evaluator
    from persafl.engine.executor import prepare
    from persafl.engine.executor import run as run_engine
    from persafl.engine.group import drive
    from persafl.engine.schedule import ScheduleConfig, make_trace
    from persafl.models import build_model
    from persafl.partition import Partition

    per_train, per_test = 200, 2
    gen = torch.Generator().manual_seed(1)
    n = clients * (per_train + per_test)
    data = Dataset(
        "random",
        torch.randn(n, *WORKLOADS[workload][1], generator=gen),
        torch.randint(0, NUM_CLASSES, (n,), generator=gen),
        NUM_CLASSES,
        None,
    )
    starts = np.arange(clients) * (per_train + per_test)
    partition = Partition(
        [np.arange(a, a + per_train) for a in starts],
        [np.arange(a + per_train, a + per_train + per_test) for a in starts],
        NUM_CLASSES,
        "random",
    )
    if schedule == "barrier":
        updates = max(1, args.engine_jobs // clients)
        cfg = ScheduleConfig(model="barrier", staleness_bound=0, num_updates=updates)
    else:
        updates = args.engine_jobs
        cfg = ScheduleConfig(
            model=schedule, staleness_bound=args.staleness_bound, num_updates=updates
        )
    traces = [make_trace(cfg, clients, seed=seed) for seed in range(runs)]
    name_, shape_, kw_ = WORKLOADS[workload]
    model = build_model(name_, shape_, NUM_CLASSES, **kw_)
    warm = make_trace(ScheduleConfig("barrier", 0, 1), clients, seed=0)
    device = args.device
    run_engine(
        warm, method, {**hp, "local_steps": 1}, model, data, partition, 0, backend, device=device
    )
    x, y = data.x.to(device), data.y.to(device)
    replays = [
        prepare(
            trace, method, hp, model, data, partition, seed, backend, eval_every=updates,
            device=device, x=x, y=y,
        )
        for seed, trace in enumerate(traces)
    ]  # fmt: skip
    start = time.perf_counter()
    results = drive(replays)
    sync(device)
    seconds = time.perf_counter() - start
    evaluator = Evaluator(model, method, hp, x, y, partition.train, partition.test, 0)
    start = time.perf_counter()
    evaluator.evaluate(updates, results[0].server)
    evaluator.evaluate(0, results[0].server)
    seconds -= runs * (time.perf_counter() - start)
    jobs = sum(len(u.clients) for trace in traces for u in trace.updates)
    calls = max(1, results[0].compute_calls)  # a group's calls coincide: one run's count
    if seconds <= 0:  # tiny runs (--quick): the evaluations' noise exceeds the training time
        return math.nan, jobs / calls
    return jobs * int(hp["local_steps"]) / seconds, jobs / calls


def _paths(args) -> list[tuple[str, str, int]]:
    """(schedule, backend, runs) of one cell, in the order each repeat measures them."""
    groups = [r for r in args.engine_runs if r > 1]
    return [
        (schedule, backend, runs)
        for schedule in args.engine
        for backend, runs in [("vectorized", 1), ("sequential", 1)]
        + [("vectorized", r) for r in groups]
    ]


def run_engine_cells(args, rows, flops_of) -> None:
    """Append one row per (cell, schedule, path) to ``rows``; ``--engine-repeats`` rounds."""
    from persafl import methods as registry

    repeats = max(1, int(getattr(args, "engine_repeats", 1)))
    for workload in args.engine_workloads:
        steps = args.local_steps_cnn if workload == "cnn" else args.local_steps
        for name in args.methods:
            method = registry.get(name)
            hp = registry.resolve_hp(method, {"local_steps": steps})
            flops = flops_of.get((workload, name), math.nan)
            for clients in args.engine_clients:
                rates: dict[tuple[str, str, int], list[float]] = {}
                per_call: dict[tuple[str, str, int], float] = {}
                for repeat in range(repeats):
                    for path in _paths(args):
                        schedule, backend, runs = path
                        rate, calls = engine_rate(
                            workload, method, hp, clients, schedule, backend, args, runs
                        )
                        rates.setdefault(path, []).append(rate)
                        per_call[path] = calls
                        print(
                            f"engine {schedule:7s} {workload:4s} {name:16s} n={clients:5d} "
                            f"{backend:10s} runs {runs:3d} repeat {repeat + 1}/{repeats}: "
                            f"jobs/call {calls:6.1f}  {rate:9.1f} steps/s",
                            flush=True,
                        )
                for (schedule, backend, runs), measured in rates.items():
                    values = [v for v in measured if math.isfinite(v)] or [math.nan]
                    rate = statistics.median(values)
                    label = backend if runs == 1 else f"group{runs}"
                    rows.append(
                        {
                            "workload": workload,
                            "method": name,
                            "clients": clients,
                            "local_steps": steps,
                            "path": f"engine-{schedule}-{label}",
                            "chunk": round(per_call[(schedule, backend, runs)], 1),
                            "clients_timed": args.engine_jobs * runs,
                            "extrapolated": False,
                            "repeats": repeats,
                            "steps_per_s": rate,
                            "steps_per_s_min": min(values),
                            "steps_per_s_max": max(values),
                            "steps_per_s_all": " ".join(f"{v:.1f}" for v in values),
                            "grads_per_s": rate * method.grads_per_step(hp),
                            "mflop_per_step": flops / 1e6,
                            "gflops": rate * flops / 1e9,
                        }
                    )


def _rates(row) -> list[float]:
    """Per-repeat rates of a row (older CSVs: the median alone)."""
    text = row.get("steps_per_s_all", "")
    if isinstance(text, str) and text.strip():
        return [float(v) for v in text.split()]
    return [float(row["steps_per_s"])]


def _range(values) -> str:
    low, high = min(values), max(values)
    return f"{low:,.0f}" if round(low) == round(high) else f"{low:,.0f}-{high:,.0f}"


def engine_lines(engine) -> list[str]:
    """Markdown of the ``engine-*`` rows: the per-path table and the async/sync comparison."""
    engine = engine.assign(
        schedule=engine.path.str.split("-").str[1], backend=engine.path.str.split("-").str[2]
    )
    if "steps_per_s_all" not in engine:
        engine = engine.assign(steps_per_s_all="")
    repeats = int(engine.repeats.max())
    lines = [
        "",
        "## persafl.engine.executor.run, both backends",
        "",
        "Random data, 200 training samples per client; `barrier`: synchronous rounds of all "
        "clients (the vectorized backend computes each round as one stacked batch); `delay`: "
        "one client per update, staleness uniform in 0..bound (a job can only be computed "
        "once its start version exists, so batches are small); `clock`: the paper "
        "config's virtual clock (exponential speeds, policy drop). `group R`: R runs "
        "(seeds) trained in one process, their jobs in shared stacked calls "
        "(persafl.engine.group); its rate counts the steps of all R runs. Evaluation "
        f"excluded. Median of {repeats} interleaved repeats (min-max in brackets where "
        "more than one).",
        "",
        "| schedule | workload | method | clients | jobs per compute call | vectorized steps/s "
        "| sequential steps/s | ratio | group | group jobs per call | group steps/s "
        "| group / one run | vec GFLOP/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ["schedule", "workload", "method", "clients"]

    def rate(row) -> str:
        text = f"{row.steps_per_s:.1f}"
        values = _rates(row)
        return text + (f" ({_range(values)})" if len(values) > 1 else "")

    for (schedule, workload, method, clients), cell in engine.groupby(keys, sort=False):
        v = cell[cell.backend == "vectorized"].iloc[0]
        s = cell[cell.backend == "sequential"].iloc[0]
        groups = cell[cell.backend.str.startswith("group")]
        for _, g in groups.iterrows() if len(groups) else [(None, None)]:
            group = (
                f"{g.backend[5:]} | {g.chunk:.1f} | {rate(g)} | {g.steps_per_s / v.steps_per_s:.2f}"
                if g is not None
                else "- | - | - | -"
            )
            lines.append(
                f"| {schedule} | {workload} | {method} | {clients} | {v.chunk:.1f} | "
                f"{rate(v)} | {rate(s)} | "
                f"{v.steps_per_s / s.steps_per_s:.2f} | {group} | {v.gflops:.1f} |"
            )
    return lines + comparison_lines(engine)


def comparison_lines(engine) -> list[str]:
    """Asynchronous groups against synchronous rounds of the same method, per client step."""
    out = []
    for (workload, method, clients), cell in engine.groupby(
        ["workload", "method", "clients"], sort=False
    ):
        sync = cell[cell.schedule == "barrier"]
        for schedule in ASYNC_SCHEDULES:
            fast = cell[(cell.schedule == schedule) & cell.backend.str.startswith("group")]
            for _, a in fast.iterrows():
                for label, other in [
                    ("one run", sync[sync.backend == "vectorized"]),
                    (f"group of {a.backend[5:]}", sync[sync.backend == a.backend]),
                ]:
                    if not len(other):
                        continue
                    b = other.iloc[0]
                    mine, theirs = _rates(a), _rates(b)
                    paired = [
                        m / t
                        for m, t in zip(mine, theirs, strict=False)
                        if len(mine) == len(theirs) and math.isfinite(m / t)
                    ]
                    spread = f"{min(paired):.2f}-{max(paired):.2f}" if len(paired) > 1 else "-"
                    out.append(
                        f"| {workload} | {method} | {clients} | {schedule}, group of "
                        f"{a.backend[5:]} | barrier, {label} | {a.steps_per_s:,.0f} | "
                        f"{b.steps_per_s:,.0f} | **{a.steps_per_s / b.steps_per_s:.2f}** | "
                        f"{spread} |"
                    )
    if not out:
        return []
    return [
        "",
        "## Asynchronous against synchronous, per client step",
        "",
        "Ratio of the medians; the range is over the ratios of rates measured in the same "
        "repeat (adjacent in time, same load).",
        "",
        "| workload | method | clients | asynchronous | synchronous | async steps/s "
        "| sync steps/s | ratio | per-repeat ratios |",
        "|---|---|---:|---|---|---:|---:|---:|---|",
        *out,
    ]
