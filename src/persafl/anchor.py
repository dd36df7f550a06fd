"""The synchronous anchor (issue 11): FedAvg, Per-FedAvg and pFedMe under the base papers' protocol.

The run configs take the hyperparameters of the sweep config (config/config.yaml: pFedMe code's,
with sources there) and replace the asynchronous schedule by pFedMe's protocol
(docs/protocol.md): barrier rounds with S clients sampled per round (Synthetic 10 of 100, MNIST
5 of 20), sample-weighted averaging, beta = server_lr = 1, pFedMe with ``train_all`` (every user
trains, the sampled are aggregated). Per-FedAvg runs twice: adapting on TRAIN (ours) and on TEST
(pFedMe code's leaky evaluation, labelled wherever it appears).

The anchor's own settings (rounds, seeds, evaluation period) are in config/anchor.yaml; the
table is built by :mod:`persafl.anchor_table`. CLI (the workflow's ``anchor_config`` rule)::

    python -m persafl.anchor run-config --anchor config/anchor.yaml --dataset mnist \
        --run fedavg --seed 0 --out run.yaml
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from persafl.config import resolve_run_config

# dataset -> (partition, clients per round): pFedMe code's settings (PAPER.md)
DATASETS = {"synthetic": ("natural", 10), "mnist": ("pathological", 5)}
# run name -> (our method, hp overrides)
RUNS = {
    "fedavg": ("afl", {}),
    "perfedavg": ("persafl_maml_fo", {}),
    "perfedavg_leaky": ("persafl_maml_fo", {"adapt_on": "test"}),
    "pfedme": ("persafl_me", {}),
}
ANCHOR_KEYS = {"sweep_config", "rounds", "max_rounds", "seeds", "eval_every", "datasets", "runs"}


class AnchorError(ValueError):
    """A bad config/anchor.yaml: the message names the key, the value and what was expected."""


def load_anchor(path: str | Path) -> dict[str, Any]:
    """config/anchor.yaml, checked (every key required; datasets and runs from the known ones);
    ``sweep_config`` made absolute (it is relative to the anchor file)."""
    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict) or set(cfg) != ANCHOR_KEYS:
        got = sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__
        raise AnchorError(f"{path}: expected exactly the keys {sorted(ANCHOR_KEYS)}, got {got}")
    for key, known in (("datasets", DATASETS), ("runs", RUNS)):
        bad = [v for v in cfg[key] if v not in known]
        if bad or not cfg[key]:
            raise AnchorError(f"{path}: {key}: {bad or 'empty'}; expected some of {list(known)}")
    for dataset in cfg["datasets"]:
        rounds = cfg["rounds"].get(dataset) if isinstance(cfg["rounds"], dict) else None
        if not isinstance(rounds, int) or rounds < 1:
            raise AnchorError(f"{path}: rounds.{dataset}: {rounds!r}; expected an integer >= 1")
    caps = cfg["max_rounds"]
    if not isinstance(caps, dict) or any(
        r not in RUNS or not isinstance(n, int) or n < 1 for r, n in caps.items()
    ):
        raise AnchorError(f"{path}: max_rounds: {caps!r}; expected {{run: integer >= 1}}")
    seeds = cfg["seeds"]
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise AnchorError(f"{path}: seeds: {seeds!r}; expected a list of integers >= 0")
    if not isinstance(cfg["eval_every"], int) or cfg["eval_every"] < 1:
        raise AnchorError(f"{path}: eval_every: {cfg['eval_every']!r}; expected an integer >= 1")
    sweep_config = Path(path).parent / str(cfg["sweep_config"])  # relative to the anchor file
    if not sweep_config.is_file():
        raise AnchorError(f"{path}: sweep_config: no file {sweep_config}")
    return {**cfg, "sweep_config": str(sweep_config.resolve())}


def anchor_config(
    cfg: dict, dataset: str, run: str, rounds: int, seed: int, eval_every: int = 10
) -> dict[str, Any]:
    """The resolved run config of one anchor run; ``cfg`` is the loaded sweep config."""
    from persafl import sweep

    partition, per_round = DATASETS[dataset]
    method, overrides = RUNS[run]
    config = copy.deepcopy(sweep.run_config(cfg, dataset, partition, method, 0, seed))
    config["method"]["hp"].update({"aggregation": "samples", "server_lr": 1.0, **overrides})
    config["schedule"] = {
        "model": "barrier",
        "staleness_bound": 0,
        "num_updates": rounds,
        "clients_per_round": per_round,
        "train_all": method == "persafl_me",  # pFedMe's server trains every user
        "speed": {"distribution": "constant", "mean": 1.0},
    }
    config["eval"] = {"every": eval_every}
    config["device"] = "cpu"
    return resolve_run_config(config)


def rounds_of(cfg: dict, dataset: str, run: str) -> int:
    """The anchor's rounds for ``run`` on ``dataset``: ``rounds``, capped by ``max_rounds``."""
    return min(cfg["rounds"][dataset], cfg["max_rounds"].get(run, cfg["rounds"][dataset]))


def run_dir(dataset: str, run: str, seed: int, root: str = "results/anchor") -> str:
    """``root/dataset~D/partition~P/method~RUN/tau~0/seed~S`` (aggregate.parse_identity's form)."""
    partition = DATASETS[dataset][0]
    return f"{root}/dataset~{dataset}/partition~{partition}/method~{run}/tau~0/seed~{seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persafl.anchor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run-config", help="write one anchor run's resolved config")
    one.add_argument("--anchor", type=Path, default=Path("config/anchor.yaml"))
    one.add_argument("--dataset", required=True, choices=list(DATASETS))
    one.add_argument("--run", required=True, choices=list(RUNS))
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from persafl import sweep

    try:
        anchor = load_anchor(args.anchor)
    except AnchorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    cfg = sweep.load_sweep_config([Path(anchor["sweep_config"])])
    config = anchor_config(
        cfg,
        args.dataset,
        args.run,
        rounds_of(anchor, args.dataset, args.run),
        args.seed,
        anchor["eval_every"],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
