"""Seconds a training process spends outside training: start (imports) and exit (teardown).

The paper config starts about 135 training processes, 120 of them tuning points that train for
7-20 s, so these seconds are part of the study's time. Each variant below is a fresh
``python -c`` doing what a training process does besides training, timed from the parent
(interpreter start to exit), alternating the variants, median of ``--repeats``:

- ``now``: ``import persafl.train``; ``persafl.process.use_deterministic_kernels()``; one
  gradient of the baselines' kind (``models.make_autograd_grad_fn``); ``process.exit_now``;
- ``now + X``: the same with one of the earlier costs put back, one at a time:
  ``torch.use_deterministic_algorithms`` (imports ``torch._inductor``), ``import
  torchvision.datasets`` (what the MNIST loader imported), one ``torch.func.grad`` call (the
  baselines' gradient; its first call imports ``torch._dynamo``), a normal exit (the
  interpreter tears every module down);
- ``before``: all four together, what a training process did up to 2026-12-07;
- ``import torch``: the floor.

Usage: python benchmarks/bench_process.py [--repeats 7] [--out benchmarks/results]
Writes process.{md,csv}.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import report

DETERMINISM_NOW = "from persafl.process import use_deterministic_kernels\n"
DETERMINISM_NOW += "use_deterministic_kernels()\n"
DETERMINISM_BEFORE = "torch.use_deterministic_algorithms(True, warn_only=True)\n"
GRADIENT = """
from persafl.models import build_model, init_params, {maker}
model = build_model("mlp", (1, 28, 28), 10)
grad = {maker}(model)(init_params(model, 0), torch.zeros(20, 1, 28, 28), torch.zeros(20).long())
"""
EXIT_NOW = "from persafl.process import exit_now\nexit_now(0)\n"


def snippet(before: frozenset[str]) -> str:
    """The code of a process with the earlier costs in ``before`` put back."""
    code = "import persafl.train\nimport torch\n"
    code += DETERMINISM_BEFORE if "determinism" in before else DETERMINISM_NOW
    if "torchvision" in before:
        code += "import torchvision.datasets\n"
    maker = "make_grad_fn" if "func.grad" in before else "make_autograd_grad_fn"
    code += GRADIENT.format(maker=maker)
    if "exit" not in before:
        code += EXIT_NOW
    return code


COSTS = {
    "determinism": "torch.use_deterministic_algorithms",
    "torchvision": "import torchvision.datasets",
    "func.grad": "torch.func.grad for the baselines",
    "exit": "normal exit (teardown)",
}
VARIANTS = {
    "import torch": "import torch\n",
    "now": snippet(frozenset()),
    **{f"now + {label}": snippet(frozenset({key})) for key, label in COSTS.items()},
    "before (all four)": snippet(frozenset(COSTS)),
}


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    for code in VARIANTS.values():  # once each, so every file is in the page cache
        seconds(code)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, code in VARIANTS.items():
            times[name].append(seconds(code))
    now = statistics.median(times["now"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "median_s": round(median, 2),
                "min_s": round(min(values), 2),
                "max_s": round(max(values), 2),
                "over_now_s": round(median - now, 2),
            }
        )
        print(rows[-1], flush=True)
    report.write(
        args.out, "process", rows, "A training process's start and exit",
        f"median of {args.repeats} alternating fresh interpreters each; over now = the "
        "variant's median minus now's.",
        {"variant": "variant", "median_s": "median s", "min_s": "min s", "max_s": "max s",
         "over_now_s": "over now s"},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
