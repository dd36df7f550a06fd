"""Speed against PFLlib (github.com/TsingZ0/PFLlib): FedAvg, Per-FedAvg, pFedMe; MNIST, 20 clients.

Runs the user's PFLlib checkout unmodified (``system/main.py``, in a separate Python given by
``--pfllib-python``) and then our engine (``engine.executor.run``, barrier schedule = synchronous
rounds with full participation, both backends) on the SAME partition: PFLlib's shipped
``dataset/MNIST`` (20 clients, Dirichlet alpha 0.1, 75 % train per client, pixels normalized
to [-1, 1]), read from its ``train/<i>.npz`` / ``test/<i>.npz`` files into persafl's
``Dataset`` + ``Partition``. Nothing of PFLlib is copied or built here.

Models (``--model``): PFLlib's ``-m CNN`` (FedAvgCNN conv32-conv64-fc512-fc10) = our ``cnn``,
and PFLlib's ``-m DNN`` on MNIST (fc 784-100 + ReLU + fc 100-10, pFedMe's MLP) = our ``mlp``
(hidden 100; PFLlib's DNN ends in log_softmax before its CrossEntropyLoss, a second
normalization that changes nothing of the cost, none of the arithmetic shapes).

Mapping (PFLlib flag -> ours):
- common: ``-m CNN|DNN -nc 20 -jr 1 -lbs 20 -lr 0.005 -ls 1 -dev cpu``; ``-eg`` beyond the last
  round so PFLlib evaluates only in round 0, which is excluded from its timing (we subtract our
  one evaluation likewise).
- FedAvg: PFLlib ``-algo FedAvg``: floor(n_i / 20) SGD steps of 1 gradient per round. Ours:
  ``afl`` with server_lr 1 (in barrier rounds with full participation this is FedAvg).
- Per-FedAvg: PFLlib ``-algo PerAvg`` is the first-order variant (grad on batch 1, SGD step,
  grad on batch 2 at the adapted point, applied to the restored model) with alpha = beta = lr;
  its server calls ``client.train()`` twice per round, each one epoch over batches of 2B, so a
  client does 2 * floor(n_i / 40) local steps of 2 gradients per round. Ours:
  ``persafl_maml_fo`` (same step) and ``persafl_maml_hf`` (4 gradients per step) with
  personal_lr = local_lr = 0.005.
- pFedMe: PFLlib ``-algo pFedMe -lrp 0.01 -lam 15 -K 5 -bt 1`` (personal optimizer weight
  decay 0.001 built in): floor(n_i / 20) steps of K = 5 gradients per round. Ours:
  ``persafl_me`` with personal_lr 0.01, moreau_lambda 15, inner_steps 5, weight_decay 0.001.
- Our engine gives every client the same Q local steps per round (fixed-shape jobs for vmap):
  Q = PFLlib's total steps per round / 20 (rounded), so a round does about the same total
  work; the tables count each system's own steps.

``--fraction f`` < 1 keeps the first f of every client's samples (written as a new data set
``dataset/MNIST_persafl_f<f>`` inside the checkout, same npz format), to fit a slow machine.

Usage: python benchmarks/bench_pfllib.py --pfllib /path/to/PFLlib
       [--pfllib-python /path/to/venv/bin/python] [--model cnn|mlp|both] [--rounds 2]
       [--threads 2] [--fraction 1.0] [--algorithms FedAvg PerAvg pFedMe]
Writes benchmarks/results/pfllib.{md,csv}; rows of a (model, algorithm) not run this time are
kept from the previous csv with their own date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

CLIENTS, BATCH, LR = 20, 20, 0.005
ALGORITHMS = ("FedAvg", "PerAvg", "pFedMe")
PFLLIB_MODEL = {"cnn": "CNN", "mlp": "DNN"}
OURS = {
    "FedAvg": ["afl"],
    "PerAvg": ["persafl_maml_fo", "persafl_maml_hf"],
    "pFedMe": ["persafl_me"],
}
PFEDME = {"personal_lr": 0.01, "moreau_lambda": 15.0, "inner_steps": 5, "weight_decay": 0.001}
LAUNCH = (
    "import sys, runpy, torch; torch.set_num_threads(int(sys.argv[1])); "
    "sys.argv = ['main.py'] + sys.argv[2:]; runpy.run_path('main.py', run_name='__main__')"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pfllib", type=Path, required=True, help="PFLlib checkout")
    parser.add_argument("--pfllib-python", default=sys.executable, help="Python with its deps")
    parser.add_argument("--model", choices=("cnn", "mlp", "both"), default="both")
    parser.add_argument(
        "--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS), metavar="ALGO"
    )
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (after round 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each client's data")
    parser.add_argument("--skip-pfllib", action="store_true", help="only our engine")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def read_client(path: Path):
    import numpy as np

    with open(path, "rb") as handle:
        data = np.load(handle, allow_pickle=True)["data"].tolist()
    return data["x"], data["y"]


def prepare_dataset(root: Path, fraction: float) -> str:
    """The PFLlib data set name to use: ``MNIST`` or a subset written beside it."""
    import numpy as np

    source = root / "dataset" / "MNIST"
    for split in ("train", "test"):
        missing = [i for i in range(CLIENTS) if not (source / split / f"{i}.npz").exists()]
        if missing:
            raise SystemExit(
                f"{source / split} lacks client files {missing}: run PFLlib's "
                "dataset/generate_MNIST.py (noniid, dir, 20 clients) first"
            )
    if fraction >= 1.0:
        return "MNIST"
    name = f"MNIST_persafl_f{fraction:g}"
    target = root / "dataset" / name
    for split in ("train", "test"):
        (target / split).mkdir(parents=True, exist_ok=True)
        for i in range(CLIENTS):
            x, y = read_client(source / split / f"{i}.npz")
            keep = max(2 * BATCH, math.ceil(fraction * len(y)))
            with open(target / split / f"{i}.npz", "wb") as handle:
                np.savez_compressed(handle, data={"x": x[:keep], "y": y[:keep]})
    (target / "config.json").write_text((source / "config.json").read_text())
    return name


def steps_per_round(root: Path, name: str) -> dict[str, int]:
    """PFLlib's local steps per round, all clients together (its DataLoaders drop_last)."""
    sizes = [
        len(read_client(root / "dataset" / name / "train" / f"{i}.npz")[1]) for i in range(CLIENTS)
    ]
    return {
        "FedAvg": sum(n // BATCH for n in sizes),
        "PerAvg": sum(2 * (n // (2 * BATCH)) for n in sizes),  # train() twice, batches of 2B
        "pFedMe": sum(n // BATCH for n in sizes),
    }


def run_pfllib(
    args: argparse.Namespace, name: str, algo: str, model_name: str
) -> tuple[list[float], str]:
    """Run PFLlib's main.py; per-round wall times (its own 'time cost' lines) and the log."""
    flags = ["-data", name, "-m", PFLLIB_MODEL[model_name], "-algo", algo]
    flags += ["-gr", str(args.rounds), "-jr", "1"]
    flags += ["-nc", str(CLIENTS), "-lbs", str(BATCH), "-lr", str(LR), "-ls", "1"]
    flags += ["-dev", "cpu", "-eg", str(args.rounds + 1000)]
    if algo == "pFedMe":
        flags += ["-lrp", str(PFEDME["personal_lr"]), "-lam", "15", "-K", "5", "-bt", "1"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    command = [args.pfllib_python, "-c", LAUNCH, str(args.threads), *flags]
    print("PFLlib:", " ".join(flags), flush=True)
    done = subprocess.run(
        command, cwd=args.pfllib / "system", env=env, capture_output=True, text=True, check=False
    )
    log = done.stdout + done.stderr
    times = [float(t) for t in re.findall(r"-+ time cost -+ ([0-9.eE+-]+)", log)]
    if done.returncode != 0 or len(times) != args.rounds + 1:
        raise SystemExit(f"PFLlib {algo} failed (exit {done.returncode}):\n{log[-3000:]}")
    return times[1:], log


def load_partition(root: Path, name: str):
    """PFLlib's per-client npz files as persafl's Dataset (pooled) + Partition (indices)."""
    import numpy as np
    import torch

    from persafl.data import Dataset
    from persafl.partition import Partition

    xs, ys, train, test, offset = [], [], [], [], 0
    for split, out in (("train", train), ("test", test)):
        for i in range(CLIENTS):
            x, y = read_client(root / "dataset" / name / split / f"{i}.npz")
            xs.append(x)
            ys.append(y)
            out.append(np.arange(offset, offset + len(y)))
            offset += len(y)
    data = Dataset(
        name, torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), 10, None
    )
    return data, Partition(train, test, 10, "pfllib", {"source": f"PFLlib dataset/{name}"})


def run_ours(data, partition, model_name: str, method_name: str, q: int, rounds: int, backend: str):
    """Seconds per round of our barrier engine, evaluation excluded, and the run status.

    A one-round, one-step run first warms up (first-call costs of vmap/grad); the timed run
    goes from the callback of its update-0 evaluation to that of its last evaluation, minus
    the cost of one evaluation timed again afterwards with the executor's own ``Evaluator``.
    """
    from persafl import methods
    from persafl.engine.evaluate import Evaluator
    from persafl.engine.executor import run
    from persafl.engine.schedule import ScheduleConfig, make_trace
    from persafl.models import build_model

    method = methods.get(method_name)
    hp = {"local_steps": q, "batch_size": BATCH, "local_lr": LR, "server_lr": 1.0}
    if method_name == "persafl_me":
        hp.update(PFEDME)
    else:
        hp["personal_lr"] = LR  # PFLlib's PerAvg: alpha = beta = lr
    hp = methods.resolve_hp(method, hp)
    model = build_model(model_name, (1, 28, 28), 10)  # mlp: hidden 100 = PFLlib's DNN
    warm = make_trace(ScheduleConfig("barrier", 0, 1), CLIENTS, seed=0)
    run(warm, method, {**hp, "local_steps": 1}, model, data, partition, seed=0, backend=backend)
    trace = make_trace(ScheduleConfig("barrier", 0, rounds), CLIENTS, seed=0)
    stamps: list[float] = []
    result = run(
        trace, method, hp, model, data, partition, seed=0, backend=backend,
        eval_every=rounds, callback=lambda row: stamps.append(time.perf_counter()),
    )  # fmt: skip
    if result.status != "completed":
        return float("nan"), f"{result.status}: {result.message}"
    evaluator = Evaluator(
        model, method, hp, data.x, data.y, list(partition.train), list(partition.test), 0
    )
    start = time.perf_counter()
    evaluator.evaluate(rounds, result.server)
    one_eval = time.perf_counter() - start
    return (stamps[-1] - stamps[0] - one_eval) / rounds, result.status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    name = prepare_dataset(args.pfllib, args.fraction)
    total = steps_per_round(args.pfllib, name)
    load_before = os.getloadavg()
    rows = []
    grads = {"FedAvg": 1, "PerAvg": 2, "pFedMe": PFEDME["inner_steps"]}
    grads_ours = {"afl": 1, "persafl_maml_fo": 2, "persafl_maml_hf": 4, "persafl_me": 5}
    data, partition = load_partition(args.pfllib, name)
    models = ("mlp", "cnn") if args.model == "both" else (args.model,)
    for model_name in models:
        for algo in args.algorithms:
            steps = total[algo]
            if not args.skip_pfllib:
                times, _ = run_pfllib(args, name, algo, model_name)
                seconds = sum(times) / len(times)
                rows.append(
                    row(model_name, "PFLlib", algo, algo, steps, seconds, grads[algo], "completed")
                )
                print(rows[-1], flush=True)
            q = max(1, round(steps / CLIENTS))
            for method_name in OURS[algo]:
                for backend in ("vectorized", "sequential"):
                    seconds, status = run_ours(
                        data, partition, model_name, method_name, q, args.rounds, backend
                    )
                    rows.append(
                        row(model_name, f"persafl {backend}", algo, method_name, q * CLIENTS,
                            seconds, grads_ours[method_name], status)
                    )  # fmt: skip
                    print(rows[-1], flush=True)
    write(rows, args, name, load_before, models)
    return 0


def row(model, system, algo, method, steps, seconds, grads_per_step, status) -> dict:
    return {
        "model": model,
        "system": system,
        "algorithm": algo,
        "method": method,
        "steps_per_round": steps,
        "seconds_per_round": seconds,
        "steps_per_s": steps / seconds,
        "grads_per_s": steps * grads_per_step / seconds,
        "status": status,
    }


def write(
    rows: list[dict], args: argparse.Namespace, name: str, load_before, models: tuple[str, ...]
) -> None:
    import pandas as pd
    import torch

    frame = pd.DataFrame(rows)
    reference = frame[frame.system == "PFLlib"].set_index(["model", "algorithm"]).steps_per_s
    frame["speedup_vs_pfllib"] = [
        r.steps_per_s / reference.get((r.model, r.algorithm), float("nan"))
        for r in frame.itertuples()
    ]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(
                ["lscpu"], capture_output=True, text=True
            ).stdout.splitlines()
            if line.startswith("Model name:")
        ),
        platform.processor(),
    )
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    load_after = os.getloadavg()
    commit = (
        subprocess.run(
            ["git", "-C", str(args.pfllib), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or "unknown (no .git)"
    )
    meta = {
        "date": stamp, "cpu": cpu, "cores": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "python": platform.python_version(), "dataset": name,
        "rounds": args.rounds, "pfllib_commit": commit,
        "load_before": json.dumps([round(v, 2) for v in load_before]),
        "load_after": json.dumps([round(v, 2) for v in load_after]),
    }  # fmt: skip
    frame = frame.assign(**meta)
    previous = args.out / "pfllib.csv"
    if previous.exists():  # keep the rows of (model, algorithm) not run now, with their date
        old = pd.read_csv(previous)
        if "model" not in old:
            old.insert(0, "model", "cnn")  # files from before --model held only the CNN
        ran = set(zip(frame.model, frame.algorithm, strict=True))
        keep = [(m, a) not in ran for m, a in zip(old.model, old.algorithm, strict=True)]
        frame = pd.concat([frame, old[keep]], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(previous, index=False, float_format="%.4g")
    lines = [
        "# PFLlib vs persafl: seconds per round and client steps per second",
        "",
        "Mapping of flags and local steps: see the docstring of benchmarks/bench_pfllib.py. "
        "20 clients (Dirichlet 0.1), batch 20, full participation, CPU; mean over the rounds "
        "after round 0; ours: one run, evaluation excluded.",
    ]
    label = {"mlp": "MLP 784-100-10 (PFLlib `-m DNN`, our `mlp`)",
             "cnn": "FedAvgCNN (PFLlib `-m CNN`, our `cnn`)"}  # fmt: skip
    for (model_name, _), part in frame.groupby(["model", "date"], sort=False):
        first = part.iloc[0]
        lines += [
            "",
            f"## {label.get(model_name, model_name)}, {first.date}",
            "",
            f"Machine: {first.cpu}, {first.cores} cores, {first.threads} threads for both (OMP/MKL "
            f"env + torch.set_num_threads), torch {first.torch}; load average before "
            f"{first.load_before}, after {first.load_after}. PFLlib commit {first.pfllib_commit}. "
            f"Data: PFLlib's dataset/{first.dataset}, {first.rounds} timed rounds.",
            "",
            "| system | algorithm | our method | steps/round | s/round | steps/s | grads/s "
            "| vs PFLlib (steps/s) | status |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in part.itertuples():
            lines.append(
                f"| {r.system} | {r.algorithm} | {r.method} | {r.steps_per_round} | "
                f"{r.seconds_per_round:.2f} | {r.steps_per_s:.1f} | {r.grads_per_s:.1f} | "
                f"{r.speedup_vs_pfllib:.2f} | {r.status} |"
            )
    (args.out / "pfllib.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'pfllib.md'}")


if __name__ == "__main__":
    sys.exit(main())
