"""A-FL: asynchronous federated learning without personalization (F_i = f_i).

The client runs Q plain SGD steps on its own loss from the downloaded model, as in FedAvg
(McMahan et al. 2017) and FedAsync (Xie, Koyejo, Gupta 2019); PersA-FL (Toghani, Lee, Uribe
2022) uses it as the non-personalized baseline. The same local step, applied to a model that
never leaves the client, is the ``local`` baseline (see ``local.py``).

Defaults: batch 20, 20 local steps, learning rate 0.005, server mixing 1.0 are pFedMe's MNIST
settings for FedAvg (Dinh, Tran, Nguyen 2020, public code).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from persafl.methods.base import (
    GradFn,
    Method,
    Params,
    check_local_steps,
    descend,
    identity_personalize,
)

DEFAULTS: dict[str, float | int] = {
    "local_steps": 20,  # pFedMe code, MNIST: 20 local iterations per round
    "batch_size": 20,  # pFedMe code, MNIST
    "local_lr": 0.005,  # pFedMe code, MNIST learning rate
    "server_lr": 1.0,  # pFedMe beta = 1: the server takes the clients' model
    "eval_adapt_steps": 1,  # unused (no adaptation); kept so evaluation code is uniform
}


def local_update(params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn) -> Params:
    """Q steps ``y <- y - local_lr * grad f(y; D_q)``; ``xb`` is [Q, 1, (C,) B, *features]."""
    current = dict(params)
    for step in range(check_local_steps(xb, hp)):
        # from the second step on, ``current`` is this function's own: update it in place
        current = descend(
            grad_fn, current, xb[step, 0], yb[step, 0], hp["local_lr"], inplace=step > 0
        )
    return current


METHOD = Method(
    name="afl",
    defaults=DEFAULTS,
    batches_per_step=1,
    local_update=local_update,
    personalize=identity_personalize,
    grads_per_step=lambda hp: 1,
    personalized=False,
)
