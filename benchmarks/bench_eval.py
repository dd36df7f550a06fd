"""Seconds per evaluation of the paper config's data sets: size-sorted stacks against one stack.

Builds the paper config's partition (Synthetic(0.5, 0.5), 100 clients, natural; MNIST or
Fashion-MNIST, 20 clients, 2 labels each; test fraction 0.25) and times
``Evaluator.evaluate`` on a freshly initialized model, per method: with the stacks of
:mod:`persafl.engine.eval_stacks` (at most 1.25 padded samples per real one) and with every
client in one stack padded to the longest test set (the layout before 2026-12-07). One thread.

Usage: python benchmarks/bench_eval.py [--datasets synthetic mnist] [--data-root data]
       [--repeats 5] [--out benchmarks/results]
Also times the server model's statistics over the padded stacks against the real samples only
(``engine.test_sets``), checking first that both give the same bits. Writes eval.{md,csv}.
MNIST and Fashion-MNIST need their files under --data-root (the workflow's fetch puts them
there); a data set that is missing is skipped with a message.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import time
from pathlib import Path

import numpy as np
import torch

from persafl import methods
from persafl.data import load_dataset
from persafl.engine import eval_stacks
from persafl.engine.evaluate import Evaluator
from persafl.models import build_model, init_params, predict
from persafl.partition import partition_dataset

SETUPS = {  # config/config.yaml
    "synthetic": dict(
        params=dict(alpha=0.5, beta=0.5, num_clients=100),
        scheme="natural",
        clients=100,
        hidden=20,
        scheme_params={},
    ),
    "mnist": dict(
        params={},
        scheme="pathological",
        clients=20,
        hidden=100,
        scheme_params={"classes_per_client": 2},
    ),
    "fashion_mnist": dict(
        params={},
        scheme="pathological",
        clients=20,
        hidden=100,
        scheme_params={"classes_per_client": 2},
    ),
}
METHODS = ("afl", "persafl_maml_fo", "persafl_me", "local")


def time_evaluation(evaluator: Evaluator, params, own, repeats: int) -> float:
    """Median seconds of one evaluation (after one untimed warm-up)."""
    call = (
        (lambda u: evaluator.evaluate(u, None, own))
        if own is not None
        else (lambda u: evaluator.evaluate(u, params))
    )
    call(0)
    times = []
    for update in range(1, repeats + 1):
        start = time.perf_counter()
        call(update)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def padded_server_stats(evaluator: Evaluator, params) -> np.ndarray:
    """The server model's per-client statistics as computed before e5feb91: one forward pass
    over each padded stack (the reference :meth:`Evaluator._stats` must equal bit for bit)."""
    tests, out = evaluator.tests, []
    with torch.no_grad():
        for stack in range(len(tests.stacks)):
            xt = tests.padded(stack)
            logits = predict(evaluator.model, params, xt.flatten(0, 1)).unflatten(0, xt.shape[:2])
            out.append(evaluator._client_stats(stack, logits))
    return evaluator._means(out)


def server_forward(evaluator: Evaluator, params, repeats: int) -> dict:
    """Seconds of the server model's statistics: padded stacks against real rows, interleaved
    (median of ``repeats`` each); the two must agree exactly."""
    new = evaluator._stats(params, stacked=False)
    if not np.array_equal(new, padded_server_stats(evaluator, params), equal_nan=True):
        raise SystemExit("server statistics differ between the padded and the rows layout")
    times: dict[str, list[float]] = {"padded": [], "rows": []}
    calls = {
        "padded": lambda: padded_server_stats(evaluator, params),
        "rows": lambda: evaluator._stats(params, stacked=False),
    }
    for repeat in range(repeats):
        for layout in ("padded", "rows") if repeat % 2 == 0 else ("rows", "padded"):
            start = time.perf_counter()
            calls[layout]()
            times[layout].append(time.perf_counter() - start)
    padded, rows = float(np.median(times["padded"])), float(np.median(times["rows"]))
    return {
        "server_rows": int(len(evaluator.tests.rows())),
        "server_seconds_padded": round(padded, 4),
        "server_seconds_rows": round(rows, 4),
        "server_speedup": round(padded / rows, 2),
    }


def bench(name: str, root: Path, repeats: int) -> list[dict]:
    setup = SETUPS[name]
    try:
        data = load_dataset(
            name, root, **setup["params"], **({} if name == "synthetic" else {"download": False})
        )
    except (FileNotFoundError, OSError, RuntimeError) as err:
        print(f"{name}: skipped ({err})")
        return []
    partition = partition_dataset(
        data.y.numpy(),
        data.groups,
        setup["scheme"],
        setup["clients"],
        seed=0,
        **setup["scheme_params"],
    )
    model = build_model("mlp", tuple(data.x.shape[1:]), data.num_classes, hidden=setup["hidden"])
    params = init_params(model, 0)
    counts = np.array([len(t) for t in partition.test])
    rows = []
    for method_name in METHODS:
        method = methods.get(method_name)
        hp = methods.resolve_hp(method, {})
        own = (
            {k: v.expand(setup["clients"], *v.shape).contiguous() for k, v in params.items()}
            if method_name == "local"
            else None
        )
        seconds = {}
        for layout, waste in (("stacks", eval_stacks.MAX_WASTE), ("one stack", float("inf"))):
            saved = eval_stacks.MAX_WASTE
            eval_stacks.MAX_WASTE = waste
            try:
                evaluator = Evaluator(
                    model, method, hp, data.x, data.y, partition.train, partition.test, 0
                )
            finally:
                eval_stacks.MAX_WASTE = saved
            padded = sum(
                len(ids) * index.shape[1]
                for ids, index in zip(evaluator.tests.stacks, evaluator.tests.index, strict=True)
            )
            seconds[layout] = (
                time_evaluation(evaluator, params, own, repeats),
                padded,
                len(evaluator.tests.stacks),
            )
            if layout == "stacks" and method_name == "afl":
                server = server_forward(evaluator, params, 2 * repeats + 1)
        rows.append(
            {
                "dataset": name,
                "method": method_name,
                "test_samples": int(counts.sum()),
                "padded_one_stack": seconds["one stack"][1],
                "padded_stacks": seconds["stacks"][1],
                "stacks": seconds["stacks"][2],
                "seconds_one_stack": round(seconds["one stack"][0], 4),
                "seconds_stacks": round(seconds["stacks"][0], 4),
                "speedup": round(seconds["one stack"][0] / seconds["stacks"][0], 2),
                **server,
            }
        )
        print(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=list(SETUPS), default=["synthetic", "mnist"]
    )
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for name in args.datasets for row in bench(name, args.data_root, args.repeats)]
    if not rows:
        raise SystemExit("no data set could be loaded")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "eval.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Seconds per evaluation: size-sorted stacks against one stack of all clients",
        "",
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; "
        f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}; "
        f"median of {args.repeats} evaluations of a fresh model (benchmarks/bench_eval.py).",
        "",
        "| data set | method | test samples | padded: one stack | padded: stacks (n) | "
        "s one stack | s stacks | speedup |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['test_samples']:,} | "
            f"{r['padded_one_stack']:,} | {r['padded_stacks']:,} ({r['stacks']}) | "
            f"{r['seconds_one_stack']} | {r['seconds_stacks']} | {r['speedup']}x |"
        )
    lines += [
        "",
        "## The server model's statistics: padded stacks against the real samples",
        "",
        "Per data set (the same for every method; the CSV repeats it on each row): the server "
        "model's per-client statistics with one forward pass over each padded stack (the layout "
        "before e5feb91) against passes over the real test samples only, all stacks in one "
        "tensor, at most 1,024 rows a pass, logits spread back (`engine.test_sets`). Both "
        f"interleaved, median of {2 * args.repeats + 1}; the two results are checked equal bit "
        "for bit first.",
        "",
        "| data set | padded samples | rows | s padded | s rows | speedup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["method"] == "afl":
            lines.append(
                f"| {r['dataset']} | {r['padded_stacks']:,} | {r['server_rows']:,} | "
                f"{r['server_seconds_padded']} | {r['server_seconds_rows']} | "
                f"{r['server_speedup']}x |"
            )
    (args.out / "eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
