"""pFedMe's personalized accuracy as the pFedMe code measures it, computed in this engine.

    python benchmarks/anchor/pfedme_personal_eval.py --dataset synthetic

The pFedMe code's "personalized" accuracy of round t is each user's LOCAL model right after its
20 local steps of that round (every user trains every round; FLAlgorithms/users/userbase.py:
persionalized_model_bar ends up holding the local model's values), tested on that user's data
and summed over users. Ours (persafl_me.personalize) is theta(x): ``eval_adapt_steps`` batch(es)
of K prox steps from the global model x. This script computes both at one global model, the
initialization (round 0 of both codes), on the anchor's partition: the first with one client
job of this engine's ME local update (20 steps, pFedMe's warm start), the second as the
evaluator does. Prints sample-weighted and client-averaged accuracy (%) of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from persafl import sweep
from persafl.anchor import anchor_config, load_anchor
from persafl.data import load_dataset
from persafl.engine.batches import draw_indices
from persafl.methods import me
from persafl.models import accuracy, build_model, init_params, make_grad_fn
from persafl.partition import build_partition
from persafl.rng import generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--anchor", type=Path, default=Path("config/anchor.yaml"))
    parser.add_argument("--dataset", required=True, choices=["mnist", "synthetic"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    anchor = load_anchor(args.anchor)
    cfg = sweep.load_sweep_config([Path(anchor["sweep_config"])])
    config = anchor_config(cfg, args.dataset, "pfedme", 1, args.seed)
    hp = {**config["method"]["hp"], "inner_start": "previous"}  # pFedMe code's warm start
    data_cfg = config["dataset"]
    data = load_dataset(data_cfg["name"], data_cfg["root"], **data_cfg["params"])
    partition = build_partition(config, data)
    model_cfg = config["model"]
    model = build_model(
        model_cfg["name"], data.x.shape[1:], data.num_classes, **model_cfg["params"]
    )
    params = init_params(model, args.seed)
    grad_fn = make_grad_fn(model)
    steps, batch = int(hp["local_steps"]), int(hp["batch_size"])
    rng = generator(args.seed, "anchor-personal-eval")
    local_acc, theta_acc, sizes = [], [], []
    for train, test in zip(partition.train, partition.test, strict=True):
        idx = torch.from_numpy(draw_indices(rng, train, steps + 1, batch))
        xb, yb = data.x[idx], data.y[idx]
        local = me.local_update(params, xb[:steps, None], yb[:steps, None], hp, grad_fn)
        theta = me.personalize(params, xb[steps:], yb[steps:], hp, grad_fn)
        x_test, y_test = data.x[test], data.y[test]
        local_acc.append(float(accuracy(model, local, x_test, y_test)))
        theta_acc.append(float(accuracy(model, theta, x_test, y_test)))
        sizes.append(len(test))
    weights = np.asarray(sizes) / sum(sizes)
    for name, accs in (
        ("local model after one client job (pFedMe code's)", local_acc),
        ("theta(x), one batch of K prox steps (ours)", theta_acc),
    ):
        accs = np.asarray(accs)
        print(
            f"{args.dataset} at initialization, {name}: sample-weighted "
            f"{100 * weights @ accs:.1f} %, client-averaged {100 * accs.mean():.1f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
