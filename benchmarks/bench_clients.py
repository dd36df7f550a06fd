"""Client local-update throughput: vectorized (stacked clients) against a Python loop.

For every (workload, method, number of clients) this times ``method.local_update`` two ways in
the same process, on the same data:

- vectorized: ``method.local_update`` on C stacked clients with
  ``models.make_batched_grad_fn`` (batched autograd: linear layers as ``baddbmm``, convolutions
  as one grouped convolution; the executor's vectorized backend), each client with its own
  parameter copy (the asynchronous case: clients start from different server versions), in
  chunks of at most ``chunk`` clients when memory requires it;
- sequential: a Python loop calling ``method.local_update`` once per client with
  ``models.make_grad_fn`` (``torch.func.grad``; the executor's sequential backend).

The two paths alternate ``--repeats`` times per cell (so both see the same machine load); each
round gives a path ``--budget / --repeats`` seconds (at least one client job or one chunk) and
the median rate over the rounds is reported. When not all clients fit in a round's budget, the
rate is extrapolated per local step from the clients that ran (marked in the table): at 1000
clients the sequential loop always is.

One "local step" is one outer update of the method (afl: 1 gradient; MAML FO: 2; MAML HF: 4;
ME: K=inner_steps gradients on one batch). FLOPs per step are counted with
``torch.utils.flop_counter.FlopCounterMode`` on ONE client's ``local_update`` with one local step
(matmul/conv FLOPs of forward and backward; element-wise ops are not counted). For the MLP this
equals 2*B*(params of layer 1) for the forward, the same for the weight gradient, and 3x the
forward for the last layer, i.e. about 4*B*params per gradient; for the CNN the convolutions
dominate (2*H_out*W_out*C_out*C_in*k^2 per sample and pass). The achieved GFLOP/s of both paths
use that single-client count (useful work), compared with the machine's float32 matmul rate.

Data: random tensors shaped like MNIST (1x28x28, 10 classes), batch 20. Workloads: ``mlp``
(784-100-10, pFedMe's MNIST MLP) and ``cnn`` (conv32-conv64-fc512-fc10, FedAvgCNN).

Usage: python benchmarks/bench_clients.py [--clients 20 100 1000] [--methods ...]
       [--workloads mlp cnn] [--threads 2] [--budget 10] [--quick] [--profile]
Writes benchmarks/results/clients.{csv,md} (or --out DIR).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from engine_cells import engine_lines, run_engine_cells
from workloads import BATCH_SIZE, INPUT_SHAPE, NUM_CLASSES, WORKLOADS, sync

METHODS = ("afl", "persafl_maml_fo", "persafl_maml_hf", "persafl_me")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 100, 1000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--workloads", nargs="+", default=["mlp_synthetic", "mlp", "cnn"], choices=list(WORKLOADS)
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--local-steps", type=int, default=20, help="Q per MLP client job")
    parser.add_argument(
        "--local-steps-cnn", type=int, default=2, help="Q per CNN job (0.5-2.5 GFLOP a step)"
    )
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds per path and cell, over all repeats"
    )
    parser.add_argument(
        "--mem-gb", type=float, default=2.0, help="memory for one vectorized chunk (data+work)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating rounds per cell (median reported)"
    )
    parser.add_argument(
        "--engine",
        nargs="*",
        default=[],
        choices=["barrier", "delay", "clock"],
        help="also time persafl.engine.executor.run (both backends) on these schedules "
        "(clock: the paper config's virtual clock, exponential speeds, policy drop)",
    )
    parser.add_argument(
        "--engine-runs",
        type=int,
        nargs="+",
        default=[1],
        help="runs trained together (cross-run stacking, persafl.engine.group): each number "
        "above 1 adds a vectorized row of that many runs (seeds) in one process",
    )
    parser.add_argument(
        "--engine-repeats",
        type=int,
        default=1,
        help="interleaved rounds of every engine path per cell (median, min and max reported)",
    )
    parser.add_argument("--engine-clients", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--engine-workloads", nargs="+", default=["mlp"], choices=list(WORKLOADS))
    parser.add_argument("--engine-jobs", type=int, default=200, help="client jobs per engine run")
    parser.add_argument("--staleness-bound", type=int, default=8, help="for --engine delay")
    parser.add_argument("--skip-kernel", action="store_true", help="only the --engine part")
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="torch.set_flush_denormal(True) (subnormal floats become 0); no effect was "
        "measured on this random data, kept to rule the slow path out",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="vectorized path through batched autograd only (no persafl.engine.fused steps)",
    )
    parser.add_argument(
        "--chunk", type=int, default=0, help="clients per stacked call (default: as the executor)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes to check the script")
    parser.add_argument("--profile", action="store_true", help="torch.profiler top ops per path")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tag", default="clients", help="output file stem")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.local_steps, args.local_steps_cnn, args.budget = [4, 8], 2, 1, 1.0
        args.engine_clients, args.engine_jobs = [4, 8], 16
        args.tag = args.tag + "_quick"
    return args


def machine_info(threads: int) -> dict[str, str]:
    import torch

    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "threads": str(threads),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def matmul_gflops(n: int = 2048, seconds: float = 2.0, device: str = "cpu") -> float:
    """Best float32 ``torch.mm`` rate of an n x n product over ~``seconds``: the ceiling."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    sync(device)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def flops_per_step(method, hp, grad_fn, params, input_shape=INPUT_SHAPE) -> float:
    """Matmul/conv FLOPs of one local step of ONE client (FlopCounterMode, fwd + bwd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    s, device = method.batches_per_step, next(iter(params.values())).device
    x = torch.randn(1, s, BATCH_SIZE, *input_shape, device=device)
    y = torch.randint(0, NUM_CLASSES, (1, s, BATCH_SIZE), device=device)
    with FlopCounterMode(display=False) as counter:
        method.local_update(params, x, y, {**hp, "local_steps": 1}, grad_fn)
    return float(counter.get_total_flops())


def chunk_size(workload: str, method, local_steps: int, clients: int, mem_gb: float) -> int:
    """Clients per stacked call so data + activations stay under ``mem_gb`` (a rough estimate)."""
    data = local_steps * method.batches_per_step * BATCH_SIZE * 784 * 4
    # Live intermediates of one gradient per client: ~80 KB/sample for the CNN (conv1 output
    # 32x24x24 plus its ReLU/pool copies), small for the MLP; x3 for parameter copies and slack.
    work = BATCH_SIZE * (3 * 80_000 * 4 if workload == "cnn" else 4 * 784 * 4) + 3 * 2_400_000
    return max(1, min(clients, int(mem_gb * 2**30 // (data + work))))


def time_vectorized(fn, stacked, x, y, clients: int, chunk: int, budget: float):
    """Run chunks of ``chunk`` clients until all ran or ``budget`` passed: (clients, secs)."""
    done, start = 0, time.perf_counter()
    while done < clients and (done == 0 or time.perf_counter() - start < budget):
        out = fn(stacked, x, y)
        next(iter(out.values())).sum().item()  # make sure the work happened
        done += chunk
    return done, time.perf_counter() - start


def time_sequential(update, params, x, y, clients: int, budget: float):
    """Loop over clients (data cycles through a pool) until all ran or ``budget`` passed."""
    pool = x.shape[0]
    done, start = 0, time.perf_counter()
    while done < clients and (done == 0 or time.perf_counter() - start < budget):
        out = update(params, x[done % pool], y[done % pool])
        done += 1
    next(iter(out.values())).sum().item()  # on a GPU: wait for the queued work
    return done, time.perf_counter() - start


def measure(batched, update, params, x, y, clients, chunk, budget, repeats):
    """Alternate the two paths ``repeats`` times (both see the same machine load); per path
    the median rate in clients/s over the rounds, the clients timed in one round, and the
    spread (min, max) of the rates."""
    stacked = {k: v.expand(chunk, *v.shape).clone() for k, v in params.items()}
    # stacked layout (docs/design.md): xb [Q, S, C, B, *feat], yb [Q, S, C, B]
    x_vec, y_vec = x.movedim(0, 2).contiguous(), y.movedim(0, 2).contiguous()
    batched({k: v[:2] for k, v in stacked.items()}, x_vec[:, :, :2], y_vec[:, :, :2])  # warm-up
    update(params, x[0], y[0])  # warm-up
    rates: dict[str, list[float]] = {"vectorized": [], "sequential": []}
    timed: dict[str, int] = {}
    for _ in range(repeats):
        for path in rates:
            if path == "vectorized":
                done, secs = time_vectorized(batched, stacked, x_vec, y_vec, clients, chunk, budget)
            else:
                done, secs = time_sequential(update, params, x, y, clients, budget)
            rates[path].append(done / secs)
            timed[path] = done
    return {path: (statistics.median(r), timed[path], min(r), max(r)) for path, r in rates.items()}


def profile_top(fn, *args, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*args)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from persafl import methods as registry
    from persafl.models import build_model, init_params, make_batched_grad_fn, make_grad_fn

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    info = machine_info(torch.get_num_threads())
    info["flush_denormal"] = str(args.flush_denormal)
    load_before = os.getloadavg()
    mm_size = 512 if args.quick else (8192 if args.device.startswith("cuda") else 2048)
    peak = matmul_gflops(mm_size, 0.5 if args.quick else 2.0, args.device)
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(args.device)
    info["device"], info["fused"] = args.device, str(not args.no_fuse)
    print(f"machine: {info}; load {load_before}; float32 mm ceiling {peak:.1f} GFLOP/s", flush=True)
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    flops_of: dict[tuple[str, str], float] = {}
    for workload in args.workloads:
        name_, shape_, kw_ = WORKLOADS[workload]
        model = build_model(name_, shape_, NUM_CLASSES, **kw_).to(args.device)
        grad_fn = make_grad_fn(model)
        batched_grad_fn = make_batched_grad_fn(model, fuse=not args.no_fuse)
        params = init_params(model, 0, device=args.device)
        steps = args.local_steps_cnn if workload == "cnn" else args.local_steps
        for name in args.methods:
            method = registry.get(name)
            hp = registry.resolve_hp(method, {"local_steps": steps})
            flops = flops_of[(workload, name)] = flops_per_step(method, hp, grad_fn, params, shape_)
            if args.skip_kernel:
                continue

            def update(p, xb, yb, method=method, hp=hp, grad_fn=grad_fn):
                return method.local_update(p, xb, yb, hp, grad_fn)

            def batched(p, xb, yb, method=method, hp=hp, grad_fn=batched_grad_fn):
                return method.local_update(p, xb, yb, hp, grad_fn)

            for clients in args.clients:
                chunk = chunk_size(workload, method, steps, clients, args.mem_gb)
                # the executor's cache cap (persafl.engine.jobs.JobRunner.chunk_size), as it runs
                from persafl.engine.jobs import CACHE_COPIES, CACHE_ELEMENTS

                numel = sum(int(v.numel()) for v in params.values())
                if args.device == "cpu":
                    chunk = max(1, min(chunk, CACHE_ELEMENTS // (CACHE_COPIES * numel)))
                chunk = min(args.chunk, clients) if args.chunk else chunk
                shape = (chunk, steps, method.batches_per_step, BATCH_SIZE)
                x = torch.randn(*shape, *shape_, generator=gen).to(args.device)
                y = torch.randint(0, NUM_CLASSES, shape, generator=gen).to(args.device)
                results = measure(
                    batched,
                    update,
                    params,
                    x,
                    y,
                    clients,
                    chunk,
                    args.budget / args.repeats,
                    args.repeats,
                )
                for path, (clients_per_s, done, low, high) in results.items():
                    steps_per_s = clients_per_s * steps
                    rows.append(
                        {
                            "workload": workload,
                            "method": name,
                            "clients": clients,
                            "local_steps": steps,
                            "path": path,
                            "chunk": chunk if path == "vectorized" else 1,
                            "clients_timed": done,
                            "extrapolated": done < clients,
                            "repeats": args.repeats,
                            "steps_per_s": steps_per_s,
                            "steps_per_s_min": low * steps,
                            "steps_per_s_max": high * steps,
                            "grads_per_s": steps_per_s * method.grads_per_step(hp),
                            "mflop_per_step": flops / 1e6,
                            "gflops": steps_per_s * flops / 1e9,
                        }
                    )
                vec, seq = rows[-2]["steps_per_s"], rows[-1]["steps_per_s"]
                print(
                    f"{workload:4s} {name:16s} n={clients:5d} chunk={chunk:4d} "
                    f"vec {vec:9.1f} steps/s ({rows[-2]['gflops']:6.1f} GFLOP/s)  "
                    f"seq {seq:9.1f} steps/s ({rows[-1]['gflops']:6.1f} GFLOP/s)  "
                    f"ratio {vec / seq:6.2f}",
                    flush=True,
                )
                if args.profile:
                    sub = {k: v.expand(chunk, *v.shape) for k, v in params.items()}
                    xv, yv = x.movedim(0, 2).contiguous(), y.movedim(0, 2).contiguous()
                    print("--- vectorized profile ---\n" + profile_top(batched, sub, xv, yv))
                    one = profile_top(update, params, x[0], y[0])
                    print("--- sequential profile (1 client) ---\n" + one)
    if args.engine:
        run_engine_cells(args, rows, flops_of)
    load_after = os.getloadavg()
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    for row in rows:
        row.update(date=stamp, **info, mm_size=mm_size, mm_gflops=peak)
        row["pct_of_mm"] = 100.0 * row["gflops"] / peak
        row["load_before"] = " ".join(f"{v:.2f}" for v in load_before)
        row["load_after"] = " ".join(f"{v:.2f}" for v in load_after)
    return rows


def write(rows: list[dict], args: argparse.Namespace) -> None:
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / f"{args.tag}.csv", index=False, float_format="%.4g")
    keys = ["workload", "method", "clients"]
    vec = frame[frame.path == "vectorized"].set_index(keys)
    seq = frame[frame.path == "sequential"].set_index(keys)
    first = frame.iloc[0]
    lines = [
        f"# Client local-update throughput ({first.date})",
        "",
        f"Machine: {first.cpu}, {first.cores} cores, torch {first.torch}, "
        f"{first.threads} threads, flush denormal {first.flush_denormal}; load average "
        f"(1/5/15 min) before {first.load_before}, "
        f"after {first.load_after}. Float32 matmul ceiling ({first.mm_size}^2 torch.mm): "
        f"{first.mm_gflops:.1f} GFLOP/s.",
        "",
        f"Random MNIST-shaped data, batch {BATCH_SIZE}, Q = {args.local_steps} (MLP) / "
        f"{args.local_steps_cnn} (CNN) local steps per client job, median of {first.repeats} "
        "alternating rounds. Steps/s = client local "
        "steps per second (all clients together). GFLOP/s "
        "counts useful matmul/conv FLOPs of one client (FlopCounterMode). `*`: the sequential "
        "loop ran out of its time budget and its rate is extrapolated per step; `+`: same for "
        "the vectorized chunks.",
        "",
        "| workload | method | clients | chunk | MFLOP/step | vectorized steps/s | "
        "sequential steps/s | ratio | vec GFLOP/s | seq GFLOP/s | vec % of mm |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in vec.index:
        v, s = vec.loc[key], seq.loc[key]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {int(v.chunk)} | {v.mflop_per_step:.1f} | "
            f"{v.steps_per_s:.1f}{'+' if v.extrapolated else ''} | "
            f"{s.steps_per_s:.1f}{'*' if s.extrapolated else ''} | "
            f"{v.steps_per_s / s.steps_per_s:.2f} | {v.gflops:.1f} | {s.gflops:.1f} | "
            f"{v.pct_of_mm:.0f} |"
        )
    engine = frame[frame.path.str.startswith("engine-")]
    if len(engine):
        lines += engine_lines(engine)
    (args.out / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / (args.tag + '.csv')} and .md")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Pin the thread pools before torch is imported (OpenMP reads these at start-up).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    write(run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
