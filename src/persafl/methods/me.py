"""PersA-FL with the Moreau-envelope objective (pFedMe's personalized loss).

F_i(x) = min_theta f_i(theta) + (lambda/2) ||theta - x||^2 (Dinh, Tran, Nguyen, pFedMe,
NeurIPS 2020), whose gradient is grad F_i(x) = lambda (x - theta_i(x)) with theta_i(x) the
inner minimizer: the personalized model. Per local step, on one batch D (pFedMe Algorithm 1,
client side, as used by PersA-FL: Toghani, Lee, Uribe 2022):

    theta <- y;  K times: theta <- theta - personal_lr * (grad f(theta; D) + lambda (theta - y))
    y <- y - local_lr * lambda * (y - theta)

Differences from pFedMe's public code, on purpose:
- pFedMe warm-starts theta from the previous step's personal model; by default we start theta
  at y, the current local model, so a step is a pure function of (y, D) and needs no extra
  state. ``inner_start: previous`` is pFedMe's warm start (theta carried from one local step to
  the next within a client job; the first step starts at the downloaded model, as pFedMe's
  ``set_parameters`` does at the start of a round).
- pFedMe's personal optimizer adds weight decay mu = 0.001; ours adds ``weight_decay`` (default
  0.0) so the method optimizes exactly the Moreau envelope of f_i.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from persafl.methods.base import GradFn, Method, Params, check_local_steps, descend

DEFAULTS: dict[str, float | int | str] = {
    "local_steps": 20,  # pFedMe code, MNIST: 20 local iterations
    "batch_size": 20,  # pFedMe code, MNIST
    "local_lr": 0.005,  # pFedMe code, MNIST learning rate
    "personal_lr": 0.1,  # pFedMe code, MNIST personal learning rate (0.09 for the MLP)
    "moreau_lambda": 15.0,  # pFedMe code, MNIST lambda (Synthetic: 20)
    "inner_steps": 5,  # pFedMe code, K = 5
    "weight_decay": 0.0,  # pFedMe's personal optimizer uses 0.001; off here (see above)
    "server_lr": 1.0,  # pFedMe beta = 1
    "eval_adapt_steps": 1,  # one training batch to compute theta_i(x) for evaluation
    "inner_start": "anchor",  # theta starts at y each step; "previous": pFedMe's warm start
}


def moreau_prox(
    start: Params, anchor: Params, x: Tensor, y: Tensor, hp: Mapping, grad_fn: GradFn
) -> Params:
    """Approximate ``argmin_theta f(theta; x, y) + lambda/2 ||theta - anchor||^2``.

    ``inner_steps`` gradient steps of size ``personal_lr`` from ``start`` (pFedMe's inner
    solver); converges for personal_lr < 2 / (L + lambda) on an L-smooth f.
    """
    lam, lr, decay = hp["moreau_lambda"], hp["personal_lr"], hp.get("weight_decay", 0.0)
    fused = getattr(grad_fn, "prox", None)  # stacked MLPs: persafl.engine.fused.make_prox
    if fused is not None and lam + decay > 0:
        return fused(start, anchor, x, y, lr, lam, decay, int(hp["inner_steps"]))
    # theta - lr (g + lam (theta - anchor) + decay theta), regrouped as
    # (keep * theta + lr lam anchor) - lr g: the anchor term hoisted, the last step fused.
    keep = 1.0 - lr * (lam + decay)
    pull = {k: (lr * lam) * a for k, a in anchor.items()}
    theta = dict(start)
    for _ in range(int(hp["inner_steps"])):
        shrunk = {k: torch.add(pull[k], t, alpha=keep) for k, t in theta.items()}
        theta = descend(grad_fn, theta, x, y, lr, base=shrunk)
    return theta


def local_update(params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn) -> Params:
    """Q steps ``y <- y - local_lr * lambda (y - theta(y))``; ``xb`` is [Q, 1, (C,) B, ...]."""
    lam, lr = hp["moreau_lambda"], hp["local_lr"]
    warm = hp.get("inner_start", "anchor") == "previous"  # fixed per run
    current = theta = dict(params)
    for step in range(check_local_steps(xb, hp)):
        start = theta if warm else current
        theta = moreau_prox(start, current, xb[step, 0], yb[step, 0], hp, grad_fn)
        # y - lr lam (y - theta) = lerp(y, theta, lr lam): one kernel per tensor, in place
        # from the second step on (``current`` is then this function's own)
        if step == 0:
            current = {k: torch.lerp(v, theta[k], lr * lam) for k, v in current.items()}
        else:
            current = {k: v.lerp_(theta[k], lr * lam) for k, v in current.items()}
    return current


def personalize(params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn) -> Params:
    """theta_i(x): ``inner_steps`` prox steps per training batch in ``xb`` ([A, (C,) B, ...]).

    The anchor stays the model x for every batch; theta carries over between batches so more
    batches refine the same inner minimizer.
    """
    theta = dict(params)
    for batch in range(int(xb.shape[0])):
        theta = moreau_prox(theta, params, xb[batch], yb[batch], hp, grad_fn)
    return theta


def inner_gradient(
    theta: Params, anchor: Params, x: Tensor, y: Tensor, hp: Mapping, grad_fn: GradFn
) -> Params:
    """Gradient of the inner objective ``f(theta) + lambda/2 ||theta - anchor||^2 (+ decay)``.

    Zero at the exact inner minimizer: its size after the K inner steps measures how well the
    personal problem was solved (``persafl.engine.diagnostics``).
    """
    lam, decay = hp["moreau_lambda"], hp.get("weight_decay", 0.0)
    grads = grad_fn(theta, x, y)
    return {k: grads[k] + lam * (theta[k] - anchor[k]) + decay * theta[k] for k in theta}


METHOD = Method(
    name="persafl_me",
    defaults=DEFAULTS,
    batches_per_step=1,
    local_update=local_update,
    personalize=personalize,
    grads_per_step=lambda hp: int(hp["inner_steps"]),
    personalized=True,
    inner_gradient=inner_gradient,
)
