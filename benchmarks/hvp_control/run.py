"""HF controls on Fashion-MNIST (issue 11, item 5): is HF's drifting global model the estimator?

    python benchmarks/hvp_control/run.py --out results/hvp_control [--updates 4000] [--tau 16]
    python benchmarks/hvp_control/table.py --runs results/hvp_control \
        --out benchmarks/hvp_control/table.md
    # with each method's tuned values (the paper config's selections, as its final runs):
    python benchmarks/hvp_control/run.py --tuned paper_figures/table_tuning.csv \
        --out results/hvp_control_tuned
    python benchmarks/hvp_control/table.py --runs results/hvp_control_tuned \
        --out benchmarks/hvp_control/tuned/table.md --tuned

Trains MAML HF on the paper config's Fashion-MNIST setting (config/config.yaml: 20 clients,
2 labels each, MLP 784-100-10, bound 16, seed 0) four ways: the finite-difference HVP (Per-FedAvg's
HF, the default) or the exact autograd HVP, each with ReLU or softplus units; plus MAML FO with
each activation as the no-Hessian reference. If the exact HVP (or smooth units, where the finite
difference is accurate to O(d^2)) keeps the global model from drifting, the drift comes from the
estimator; if it drifts alike, it comes from the method. A reproduction script (outside src/).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from persafl import sweep
from persafl.config import resolve_run_config
from persafl.train import train
from persafl.tuning_cli import parse_described

# directory name -> (method, hvp or None, activation)
RUNS = {
    "hf_fd_relu": ("persafl_maml_hf", "finite_difference", "relu"),
    "hf_exact_relu": ("persafl_maml_hf", "exact", "relu"),
    "hf_fd_softplus": ("persafl_maml_hf", "finite_difference", "softplus"),
    "hf_exact_softplus": ("persafl_maml_hf", "exact", "softplus"),
    "fo_relu": ("persafl_maml_fo", None, "relu"),
    "fo_softplus": ("persafl_maml_fo", None, "softplus"),
}
DATASET, PARTITION = "fashion_mnist", "pathological"


def tuned_hp(table: Path, dataset: str, method: str) -> dict[str, float]:
    """The selected hyperparameters of ``method`` on ``dataset`` in a table_tuning.csv."""
    rows = pd.read_csv(table)
    hit = rows[(rows["dataset"] == dataset) & (rows["method"] == method)]
    if len(hit) != 1:
        raise ValueError(f"{table}: {len(hit)} rows for {dataset} / {method}, expected 1")
    return parse_described(hit["selected_hp"].iloc[0])


def control_config(
    cfg: dict, name: str, tau: int, seed: int, updates: int | None, tuned: Path | None = None
) -> dict:
    method, hvp, activation = RUNS[name]
    run = copy.deepcopy(sweep.run_config(cfg, DATASET, PARTITION, method, tau, seed))
    if tuned is not None:
        run["method"]["hp"].update(tuned_hp(tuned, DATASET, method))
    if hvp is not None:
        run["method"]["hp"]["hvp"] = hvp
    run["model"].setdefault("params", {})["activation"] = activation
    if updates is not None:
        run["schedule"]["num_updates"] = updates
    run["device"] = "cpu"
    return resolve_run_config(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--tau", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--updates", type=int, default=None, help="default: the config's")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", type=Path, default=Path("results/hvp_control"))
    parser.add_argument(
        "--tuned", type=Path, help="a table_tuning.csv: train with its selections for each method"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = sweep.load_sweep_config([args.config])
    for name in args.runs:
        out = args.out / name
        if (out / "summary.json").exists():
            continue  # finished earlier: rerunning only what is missing
        config = control_config(cfg, name, args.tau, args.seed, args.updates, args.tuned)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.yaml").write_text(yaml.safe_dump(config))
        # the run config's thread count, as `python -m persafl.train` sets it: the last bits
        # of a result depend on it, and with it a control run equals the workflow's run
        torch.set_num_threads(int(config["threads"]))
        train(config, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
