"""Synthetic(alpha, beta): the federated synthetic data of FedProx, as used by pFedMe.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020), generator
``data/synthetic_*/generate_synthetic.py``; T. Dinh et al., pFedMe (NeurIPS 2020), Sec. 5.
Per client k::

    u_k ~ N(0, alpha),  B_k ~ N(0, beta)          (alpha, beta are standard deviations, as in
                                                   FedProx's np.random.normal(0, alpha))
    W_k ~ N(u_k, 1) [dim x classes],  b_k ~ N(u_k, 1) [classes]
    v_k ~ N(B_k, 1) [dim]
    x ~ N(v_k, Sigma),  Sigma diagonal, Sigma_jj = j^(-1.2)  (j = 1..dim)
    y = argmax softmax(x W_k + b_k) = argmax(x W_k + b_k)
    n_k = int(lognormal(4, 2)) + 50                (FedProx's power-law sizes)

alpha controls how much the local models differ, beta how much the local inputs differ.

Deviation from FedProx (documented): n_k is capped at ``max_client_samples`` (default 3000)
because lognormal(4, 2) has a heavy tail (a single client can draw > 10^5 samples).
Every draw of client k comes from ``rng.generator(seed, "synthetic", k)``, so client k's data
depends only on (seed, k, alpha, beta, dim, num_classes, max_client_samples), not on how many
clients are generated.
"""

from __future__ import annotations

import numpy as np
import torch

from persafl.data.base import Dataset
from persafl.rng import generator

MIN_CLIENT_SAMPLES = 50  # FedProx adds 50 to every lognormal draw


def synthetic_client(
    k: int,
    alpha: float,
    beta: float,
    dim: int,
    num_classes: int,
    seed: int,
    max_client_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``(x [n_k, dim] float64, y [n_k] int64)`` of client k."""
    rng = generator(seed, "synthetic", k)
    n_k = min(int(rng.lognormal(4.0, 2.0)) + MIN_CLIENT_SAMPLES, max_client_samples)
    u_k = rng.normal(0.0, alpha)
    b_mean = rng.normal(0.0, beta)
    weights = rng.normal(u_k, 1.0, size=(dim, num_classes))
    bias = rng.normal(u_k, 1.0, size=num_classes)
    v_k = rng.normal(b_mean, 1.0, size=dim)
    # Diagonal covariance: sampling coordinate-wise equals the multivariate normal draw.
    sigma_sqrt = np.arange(1, dim + 1, dtype=np.float64) ** (-1.2 / 2)
    x = v_k + sigma_sqrt * rng.standard_normal(size=(n_k, dim))
    y = np.argmax(x @ weights + bias, axis=1).astype(np.int64)
    return x, y


def load_synthetic(
    alpha: float,
    beta: float,
    num_clients: int = 100,
    dim: int = 60,
    num_classes: int = 10,
    seed: int = 0,
    max_client_samples: int = 3000,
) -> Dataset:
    """Synthetic(alpha, beta) for ``num_clients`` clients; ``groups`` is the client of each sample.

    ``seed`` is the data seed, separate from the run seed, so that runs with different seeds
    can share one data set.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"synthetic: alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    if num_clients < 1 or dim < 1 or num_classes < 2:
        raise ValueError(
            f"synthetic: need num_clients >= 1, dim >= 1, num_classes >= 2, got "
            f"num_clients={num_clients}, dim={dim}, num_classes={num_classes}"
        )
    if max_client_samples < MIN_CLIENT_SAMPLES:
        raise ValueError(
            f"synthetic: max_client_samples must be >= {MIN_CLIENT_SAMPLES}, "
            f"got {max_client_samples}"
        )
    xs, ys, groups = [], [], []
    for k in range(num_clients):
        x, y = synthetic_client(k, alpha, beta, dim, num_classes, seed, max_client_samples)
        xs.append(x)
        ys.append(y)
        groups.append(np.full(len(y), k, dtype=np.int64))
    return Dataset(
        name="synthetic",
        x=torch.from_numpy(np.concatenate(xs).astype(np.float32)),
        y=torch.from_numpy(np.concatenate(ys)),
        num_classes=num_classes,
        groups=np.concatenate(groups),
    )
