"""The server step, as pure functions: aggregation weights, staleness weights, the update.

One server update aggregates the deltas ``delta_j = x_{s_j} - new_j`` of its arriving client
jobs (``s_j`` the version job j downloaded, staleness ``tau_j = k - s_j``):

    x_{k+1} = x_k - server_lr * sum_j w_j delta_j,     w_j = p_j * s(tau_j)

- ``p_j`` (hp ``aggregation``): ``uniform`` 1/K over the K jobs of the update (the PersA-FL
  rule, and FedBuff's mean), or ``samples`` n_j / sum n (FedAvg's and pFedMe's sample-weighted
  average of the sampled clients' models; with every job starting from x_k it is exactly
  ``x <- (1 - beta) x + beta sum_j p_j new_j``, pFedMe's server mixing with beta = server_lr).
- ``s(tau)`` (hp ``staleness_weight``), FedAsync's staleness functions (Xie, Koyejo, Gupta
  2019, "Asynchronous Federated Optimization", section 5; PAPER.md):

  - ``constant``: s = 1 (the default: the PersA-FL rule, no discount);
  - ``polynomial``: s = (1 + tau)^(-a);
  - ``hinge``: s = 1 if tau <= b, else 1 / (a (tau - b) + 1).

  The ``+ 1`` of the hinge is what makes it continuous at tau = b (s = 1 on both sides);
  without it s jumps to 1 / (a * 0) = inf just past b, so an implementation that drops it is
  wrong, not a variant. ``a`` is hp ``staleness_a``, ``b`` is hp ``staleness_b``.

One difference from FedAsync, on purpose: FedAsync mixes the client's *model*,
``x <- (1 - a s) x_k + a s new_j`` with ``new_j`` computed from the stale x_{s_j}, so the stale
model's distance to x_k is mixed in as well; PersA-FL (Toghani, Lee, Uribe 2022) applies the
client's *delta* to the current model, ``x_k - beta delta_j``. The two agree at tau = 0.

Defaults (``SERVER_DEFAULTS``): server_lr 1 (pFedMe's beta = 1 and Per-FedAvg/FedAvg's plain
average of the sampled models), ``uniform``, ``constant``. With one arrival per update, server_lr
1 replaces the global model by the arriving client's model moved onto x_k (x_k - delta_j): the
most aggressive choice, kept as the default because it is the base papers' beta; set
``server_lr`` per method through the sweep's ``method_hp`` (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from persafl.methods.base import PROTOCOL_DEFAULTS
from persafl.models import Params

STALENESS_WEIGHTS = ("constant", "polynomial", "hinge")
AGGREGATIONS = ("uniform", "samples")

SERVER_KEYS = ("server_lr", "aggregation", "staleness_weight", "staleness_a", "staleness_b")
SERVER_DEFAULTS: dict[str, float | int | str] = {k: PROTOCOL_DEFAULTS[k] for k in SERVER_KEYS}


def staleness_weight(kind: str, tau: float | np.ndarray, a: float = 0.5, b: float = 4.0):
    """FedAsync's s(tau) for staleness ``tau`` >= 0 (a number or an array of them)."""
    tau_array = np.asarray(tau, dtype=np.float64)
    if (tau_array < 0).any():
        raise ValueError(f"staleness must be >= 0, got {tau!r}")
    if kind == "constant":
        out = np.ones_like(tau_array)
    elif kind == "polynomial":
        out = (1.0 + tau_array) ** (-float(a))
    elif kind == "hinge":
        past = np.maximum(tau_array - float(b), 0.0)  # 0 where tau <= b: s = 1 there
        out = 1.0 / (float(a) * past + 1.0)
    else:
        raise ValueError(
            f"staleness_weight: got {kind!r}, expected one of {list(STALENESS_WEIGHTS)}"
        )
    return float(out) if out.ndim == 0 else out


def aggregation_weights(kind: str, sizes: Sequence[int]) -> np.ndarray:
    """``p_j``: 1/K each (``uniform``) or n_j / sum n (``samples``) for the K jobs' clients."""
    counts = np.asarray(sizes, dtype=np.float64)
    if counts.size == 0:
        raise ValueError("an update needs at least one client job")
    if kind == "uniform":
        return np.full(counts.size, 1.0 / counts.size)
    if kind == "samples":
        if counts.sum() <= 0:
            raise ValueError(f"aggregation 'samples' needs positive client sizes, got {sizes!r}")
        return counts / counts.sum()
    raise ValueError(f"aggregation: got {kind!r}, expected one of {list(AGGREGATIONS)}")


def server_update(
    current: Params, deltas: Sequence[Params], weights: Sequence[float], server_lr: float
) -> Params:
    """``current - server_lr * sum_j weights[j] * deltas[j]`` key by key (a new dict)."""
    if len(deltas) != len(weights):
        raise ValueError(f"{len(deltas)} deltas but {len(weights)} weights")
    array = np.asarray(weights, dtype=np.float64)
    uniform = bool((array == 1.0 / len(deltas)).all())
    if uniform and len(deltas) == 1:  # the mean of one delta is itself: skip stacking it
        # value - server_lr * delta, every tensor in one call (the same elementwise products
        # and differences, so the same bits; server_lr 1 multiplies exactly, so it is skipped)
        names, delta = list(current), [deltas[0][name] for name in current]
        step = delta if server_lr == 1.0 else torch._foreach_mul(delta, server_lr)
        return dict(zip(names, torch._foreach_sub([current[n] for n in names], step), strict=True))
    new = {}
    for name, value in current.items():
        stacked = torch.stack([delta[name] for delta in deltas])
        if uniform:  # the plain mean: bit-identical to the engine's results before weights
            step = stacked.mean(dim=0)
        else:
            w = torch.as_tensor(array, dtype=stacked.dtype, device=stacked.device)
            step = torch.tensordot(w, stacked, dims=1)
        new[name] = value - server_lr * step
    return new


@dataclass(frozen=True)
class ServerRule:
    """The server step of one run, read from its hyperparameters (``SERVER_DEFAULTS``)."""

    server_lr: float
    aggregation: str
    staleness_weight: str
    staleness_a: float
    staleness_b: float
    client_sizes: tuple[int, ...]

    @classmethod
    def from_hp(cls, hp: Mapping, client_sizes: Sequence[int]) -> ServerRule:
        merged = {**SERVER_DEFAULTS, **{k: hp[k] for k in SERVER_DEFAULTS if k in hp}}
        rule = cls(
            server_lr=float(merged["server_lr"]),
            aggregation=str(merged["aggregation"]),
            staleness_weight=str(merged["staleness_weight"]),
            staleness_a=float(merged["staleness_a"]),
            staleness_b=float(merged["staleness_b"]),
            client_sizes=tuple(int(n) for n in client_sizes),
        )
        staleness_weight(rule.staleness_weight, 0.0)  # validate the names early
        aggregation_weights(rule.aggregation, [1])
        return rule

    def weights(self, clients: Sequence[int], staleness: Sequence[int]) -> np.ndarray:
        """``w_j = p_j * s(tau_j)`` for the jobs of one update."""
        if clients and self.aggregation == "uniform" and self.staleness_weight == "constant":
            return np.full(len(clients), 1.0 / len(clients))  # p_j * 1: the same numbers
        base = aggregation_weights(self.aggregation, [self.client_sizes[c] for c in clients])
        discount = staleness_weight(
            self.staleness_weight, np.asarray(staleness), self.staleness_a, self.staleness_b
        )
        return base * discount

    def apply(
        self, current: Params, deltas: Sequence[Params], clients: Sequence[int],
        staleness: Sequence[int],
    ) -> Params:  # fmt: skip
        """The new server model after one update (see the module docstring)."""
        return server_update(current, deltas, self.weights(clients, staleness), self.server_lr)
