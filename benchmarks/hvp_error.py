"""Distribution of the HF finite-difference error against the exact Hessian-vector product.

    python benchmarks/hvp_error.py [--dataset mnist|synthetic] [--activation relu|softplus]

For the MLP of the data set (MNIST 784-100-10 or Synthetic 60-20-10), at initialization and
after plain SGD training (``--train-steps`` pooled mini-batch steps of lr 0.05), draws
``--samples`` (batch, direction) pairs as HF does (direction = a stochastic gradient on another
batch, delta = 1e-3) and prints quantiles of the relative error
||FD(v) - Hv|| / ||Hv||. A benchmark, not a test: numbers go to docs, not asserts.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from persafl.data import load_dataset
from persafl.methods.maml import hessian_vector_fd
from persafl.models import build_model, init_params, make_grad_fn


def relative_errors(model, params, x, y, samples: int, delta: float, gen) -> np.ndarray:
    grad_fn = make_grad_fn(model)
    out = []
    for _ in range(samples):
        a = torch.randint(0, len(y), (20,), generator=gen)
        b = torch.randint(0, len(y), (20,), generator=gen)
        v = grad_fn(params, x[a], y[a])
        exact = grad_fn.hvp(params, v, x[b], y[b])
        fd = hessian_vector_fd(params, v, x[b], y[b], delta, grad_fn)
        num = sum(float((fd[k] - exact[k]).pow(2).sum()) for k in params) ** 0.5
        den = sum(float(exact[k].pow(2).sum()) for k in params) ** 0.5
        out.append(num / max(den, 1e-30))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "synthetic"])
    parser.add_argument("--activation", default="relu", choices=["relu", "softplus"])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--delta", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params_kw = (
        {"alpha": 0.5, "beta": 0.5, "num_clients": 30} if args.dataset == "synthetic" else {}
    )
    data = load_dataset(args.dataset, "data", **params_kw)
    hidden = 20 if args.dataset == "synthetic" else 100
    model = build_model(
        "mlp", tuple(data.x.shape[1:]), data.num_classes, hidden=hidden, activation=args.activation
    )
    params = init_params(model, 0)
    gen = torch.Generator().manual_seed(0)
    grad_fn = make_grad_fn(model)
    quantiles = [0.5, 0.9, 0.99, 1.0]
    print(f"{args.dataset} MLP ({args.activation}), delta {args.delta}, {args.samples} samples")
    print("state       " + "  ".join(f"q{int(100 * q):>3}" for q in quantiles) + "   mean")
    done = 0
    for steps in (0, args.train_steps // 10, args.train_steps):
        for _ in range(steps - done):
            index = torch.randint(0, len(data.y), (20,), generator=gen)
            g = grad_fn(params, data.x[index], data.y[index])
            params = {k: params[k] - 0.05 * g[k] for k in params}
        done = steps
        errors = relative_errors(model, params, data.x, data.y, args.samples, args.delta, gen)
        row = "  ".join(f"{np.quantile(errors, q):8.3g}" for q in quantiles)
        print(f"sgd {steps:>5}  {row}  {errors.mean():8.3g}")


if __name__ == "__main__":
    main()
