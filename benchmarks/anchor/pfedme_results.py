"""Parse the pFedMe authors' code's run logs into benchmarks/anchor/pfedme_code.csv.

    python benchmarks/anchor/pfedme_results.py --runs /tmp/pfedme_runs --rounds mnist=100 \
        synthetic=100 --max-rounds pfedme=50 --out benchmarks/anchor/pfedme_code.csv

Reads ``RUNS/<dataset>-<R>/<Algorithm>/log.txt`` (written by run_pfedme.sh; their results/*.h5
hold the same numbers but only once a run has finished) and ``wall_seconds.txt`` /
``command.txt`` beside it. Their log prints one test accuracy per round and model, computed by
their Server.evaluate* as the total number of correct predictions over ALL users divided by the
total number of test samples (sample-weighted; ours is reported both client-averaged and
sample-weighted). What each evaluates:

- FedAvg "Global": the global model at the start of round t (after t rounds), every user;
- PerAvg "Personal": per user, the global model after one step of size learning_rate and one
  of size beta, both on the user's TEST batches (Server.evaluate_one_step: leaky), at the
  start of round t;
- pFedMe "Personal": per user, its local model right after its local training in round t
  (every user trains every round): pFedMe's personalized model as their code measures it;
- pFedMe "Global": the global model at the start of round t.

A run of R rounds is cut to the anchor's rounds (``--rounds``, capped per run by
``--max-rounds`` as config/anchor.yaml's ``max_rounds``) when longer: its first rounds
are the same computation as a shorter run. A run that did not reach them is kept with the
rounds it reached (``complete`` false). Rows: final (the last evaluated round) and best over
rounds (every round, and only every ``--eval-every``-th round, as ours evaluates). Beside the
CSV, ``*_curves.csv`` holds every round's accuracy, for comparisons at equal rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# their algorithm -> (our anchor run name, {line prefix of their log: which model})
LOG_LINES = {
    "FedAvg": ("fedavg", {"Average Global Accurancy:": "global"}),
    "PerAvg": ("perfedavg_leaky", {"Average Personal Accurancy:": "personalized"}),
    "pFedMe": (
        "pfedme",
        {"Average Global Accurancy:": "global", "Average Personal Accurancy:": "personalized"},
    ),
}
ACCURACY = "sample-weighted: total correct / total test samples over all users"


def read_curves(folder: Path) -> dict[str, list[float]]:
    """model -> test accuracy per round, in round order, from their log (one repetition)."""
    _, prefixes = LOG_LINES[folder.name]
    curves: dict[str, list[float]] = {model: [] for model in prefixes.values()}
    for line in (folder / "log.txt").read_text().splitlines():
        for prefix, model in prefixes.items():
            if line.startswith(prefix):
                curves[model].append(float(line.split()[-1]))
    return curves


def parse_run(folder: Path, dataset: str, rounds: int, eval_every: int) -> list[dict]:
    """Rows of one run cut to ``rounds`` (or to the rounds it reached, flagged incomplete)."""
    run, _ = LOG_LINES[folder.name]
    wall = folder / "wall_seconds.txt"
    command = folder / "command.txt"
    ran = int(folder.parent.name.rsplit("-", 1)[1])
    rows = []
    for model, curve in read_curves(folder).items():
        acc = np.asarray(curve[:rounds], dtype=float)
        if len(acc) == 0:
            continue
        rows.append(
            {
                "dataset": dataset,
                "run": run,
                "model": model,
                "their_algorithm": folder.name,
                "rounds": len(acc),
                "complete": len(acc) == rounds,
                "rounds_run": ran,
                "repetition": 0,
                "final_acc": 100 * acc[-1],
                "best_acc": 100 * acc.max(),
                "best_acc_eval_grid": 100 * acc[::eval_every].max(),
                "first_acc": 100 * acc[0],
                "accuracy": ACCURACY,
                "wall_seconds": float(wall.read_text()) if wall.is_file() else float("nan"),
                "command": command.read_text().strip() if command.is_file() else "",
            }
        )
    return rows


def curve_rows(folder: Path, dataset: str, rounds: int) -> list[dict]:
    run, _ = LOG_LINES[folder.name]
    return [
        {"dataset": dataset, "run": run, "model": model, "round": r, "acc": round(100 * a, 2)}
        for model, curve in read_curves(folder).items()
        for r, a in enumerate(curve[:rounds])
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--rounds", nargs="+", required=True, help="dataset=R, e.g. mnist=100")
    parser.add_argument("--max-rounds", nargs="*", default=[], help="run=R, e.g. pfedme=50")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True, help="CSV (curves: *_curves.csv)")
    args = parser.parse_args(argv)
    rows, curves = [], []
    caps = {run: int(r) for run, r in (item.split("=") for item in args.max_rounds)}
    for item in args.rounds:
        dataset, anchor_rounds = item.split("=")
        for algorithm in LOG_LINES:
            rounds = min(int(anchor_rounds), caps.get(LOG_LINES[algorithm][0], int(anchor_rounds)))
            # the run that reached the most of the anchor's rounds; among those, the shortest
            folders = [
                f for f in args.runs.glob(f"{dataset}-*/{algorithm}") if (f / "log.txt").is_file()
            ]
            if not folders:
                continue
            folder = max(
                folders,
                key=lambda f: (
                    min(rounds, max(len(c) for c in read_curves(f).values())),
                    -int(f.parent.name.rsplit("-", 1)[1]),
                ),
            )
            rows += parse_run(folder, dataset, int(rounds), args.eval_every)
            curves += curve_rows(folder, dataset, int(rounds))
    table = pd.DataFrame(rows).sort_values(["dataset", "run", "model", "repetition"])
    table.to_csv(args.out, index=False, float_format="%.2f")
    pd.DataFrame(curves).to_csv(args.out.with_name(args.out.stem + "_curves.csv"), index=False)
    print(table.drop(columns=["command", "accuracy"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
