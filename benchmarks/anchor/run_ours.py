"""The synchronous anchor, our side: FedAvg / Per-FedAvg / pFedMe under the base papers' rounds.

    python benchmarks/anchor/run_ours.py --rounds-synthetic 200 --rounds-mnist 200 \
        --out results/anchor

Takes the hyperparameters of config/config.yaml (pFedMe code's, with sources there) and replaces
the asynchronous schedule by pFedMe's protocol (docs/protocol.md): barrier rounds with S clients
sampled per round (Synthetic 10 of 100, MNIST 5 of 20), sample-weighted averaging, beta =
server_lr = 1, pFedMe with train_all (every user trains, the sampled are aggregated). Per-FedAvg
is run twice: adapting on TRAIN (ours) and on TEST (pFedMe code's leaky evaluation, labelled).
Writes one run directory per run (the train CLI's files) under ``--out``; table_anchor.py reads
them. A reproduction script, not part of the pipeline (outside src/ on purpose).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

import yaml

from persafl import sweep
from persafl.config import resolve_run_config
from persafl.train import train

# (dataset, partition, clients per round): pFedMe code's settings (PAPER.md)
DATASETS = {"synthetic": ("natural", 10), "mnist": ("pathological", 5)}
# directory name -> (our method, hp overrides)
RUNS = {
    "fedavg": ("afl", {}),
    "perfedavg": ("persafl_maml_fo", {}),
    "perfedavg_leaky": ("persafl_maml_fo", {"adapt_on": "test"}),
    "pfedme": ("persafl_me", {}),
}


def anchor_config(cfg: dict, dataset: str, method_dir: str, rounds: int, seed: int) -> dict:
    partition, per_round = DATASETS[dataset]
    method, overrides = RUNS[method_dir]
    run = copy.deepcopy(sweep.run_config(cfg, dataset, partition, method, 0, seed))
    run["method"]["hp"].update({"aggregation": "samples", "server_lr": 1.0, **overrides})
    run["schedule"] = {
        "model": "barrier",
        "staleness_bound": 0,
        "num_updates": rounds,
        "clients_per_round": per_round,
        "train_all": method == "persafl_me",  # pFedMe's server trains every user
        "speed": {"distribution": "constant", "mean": 1.0},
    }
    run["eval"] = {"every": 10}
    run["device"] = "cpu"
    return resolve_run_config(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--rounds-synthetic", type=int, default=600)
    parser.add_argument("--rounds-mnist", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=Path("results/anchor"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = sweep.load_sweep_config([args.config])
    rounds = {"synthetic": args.rounds_synthetic, "mnist": args.rounds_mnist}
    for dataset in args.datasets:
        for method_dir in RUNS:
            for seed in args.seeds:
                config = anchor_config(cfg, dataset, method_dir, rounds[dataset], seed)
                partition = DATASETS[dataset][0]
                out = args.out / f"dataset~{dataset}/partition~{partition}/method~{method_dir}"
                out = out / f"tau~0/seed~{seed}"
                out.mkdir(parents=True, exist_ok=True)
                (out / "run.yaml").write_text(yaml.safe_dump(config))
                train(config, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
