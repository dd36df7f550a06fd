"""PersA-FL with the MAML objective: first-order (FO) and Hessian-free (HF) estimators.

The personalized loss is Per-FedAvg's F_i(x) = f_i(x - alpha grad f_i(x)) (Fallah, Mokhtari,
Ozdaglar, NeurIPS 2020), with exact gradient

    grad F_i(x) = (I - alpha hess f_i(x)) grad f_i(x - alpha grad f_i(x)).

Per local step the client draws independent batches D, D' (and D'' for HF):

    temp = y - alpha grad f(y; D)
    g    = grad f(temp; D')                                 # FO estimate of grad F
    h    = [grad f(y + d g; D'') - grad f(y - d g; D'')] / (2d)   # ~ hess f(y; D'') g
    FO:  y <- y - local_lr * g
    HF:  y <- y - local_lr * (g - alpha h)

as in Per-FedAvg's Algorithm 1 and its FO/HF variants, used on the client side of PersA-FL
(Toghani, Lee, Uribe 2022). HF is derived here from the formula and tested against autograd
Hessian-vector products (PAPER.md: a public Per-FedAvg HF implementation is broken).
The personalized model for evaluation is ``eval_adapt_steps`` SGD steps of size alpha on
training batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from persafl.methods.base import (
    GradFn,
    Method,
    Params,
    check_local_steps,
    descend,
    tree_add,
)

DEFAULTS_FO: dict[str, float | int] = {
    "local_steps": 20,  # pFedMe code, MNIST: 20 local iterations (Per-FedAvg paper uses 10)
    "batch_size": 20,  # pFedMe code, MNIST (Per-FedAvg paper: 10-40)
    "local_lr": 0.005,  # outer beta: top of Per-FedAvg's 0.001-0.005; pFedMe's lr 0.005
    "personal_lr": 0.01,  # inner alpha: top of Per-FedAvg's 0.001-0.01
    "server_lr": 1.0,  # pFedMe/Per-FedAvg: the server averages the clients' models
    "eval_adapt_steps": 1,  # Per-FedAvg: one adaptation step for the personalized model
}
DEFAULTS_HF: dict[str, float | int | str] = {
    **DEFAULTS_FO,
    "hf_delta": 1e-3,  # Per-FedAvg paper: delta = 0.001 for the finite difference
    "hvp": "finite_difference",  # Per-FedAvg's HF estimator; "exact": autograd (a control)
}


def hessian_vector_fd(
    params: Params, vector: Params, x: Tensor, y: Tensor, delta: float, grad_fn: GradFn
) -> Params:
    """Central finite difference ``[grad f(p + d v) - grad f(p - d v)] / (2d)`` ~ ``H v``.

    Exact for quadratics; O(d^2) error on smooth losses (Per-FedAvg's HF estimator). On ReLU
    networks it also picks up gradient jumps where a unit changes sign between p - d v and
    p + d v, so it differs from autograd's almost-everywhere Hessian by an error that is
    heavy-tailed and depends on the model's state (how many units sit within d |v| of their
    kink): small on most batches, orders of magnitude larger on a few (``benchmarks/
    hvp_error.py`` measures its distribution; smooth activations make it O(d^2)).
    ``hp["hvp"] = "exact"`` replaces it by :func:`hessian_vector_exact`.
    """
    plus = grad_fn(tree_add(params, vector, delta), x, y)
    minus = grad_fn(tree_add(params, vector, -delta), x, y)
    return {k: (plus[k] - minus[k]) / (2.0 * delta) for k in params}


def hessian_vector_exact(
    params: Params, vector: Params, x: Tensor, y: Tensor, grad_fn: GradFn
) -> Params:
    """The exact Hessian-vector product ``hess f(params; x, y) vector`` (autograd).

    The method still does not differentiate: the ``grad_fn`` carries an ``hvp`` (both
    :func:`persafl.models.make_grad_fn` and ``make_batched_grad_fn`` do, one client or
    stacked). On ReLU networks it is the almost-everywhere Hessian (no kink terms).
    """
    hvp = getattr(grad_fn, "hvp", None)
    if hvp is None:
        raise ValueError("hvp 'exact' needs a grad_fn with an hvp attribute (persafl.models)")
    return hvp(params, vector, x, y)


def maml_direction(
    params: Params, xs: Tensor, ys: Tensor, hp: Mapping, grad_fn: GradFn, hessian_free: bool
) -> Params:
    """Stochastic estimate of ``grad F(params)`` from batches ``xs[0..S-1]`` ([S, (C,) B, ...]).

    FO uses batches 0 (inner step) and 1 (outer gradient); HF adds batch 2 for the
    Hessian-vector product, so all three are independent as Per-FedAvg requires.
    The formula as written; local updates take :func:`maml_step`, the same step regrouped for
    fused execution (tests compare the two).
    """
    alpha = hp["personal_lr"]
    temp = descend(grad_fn, params, xs[0], ys[0], alpha)
    outer = grad_fn(temp, xs[1], ys[1])
    if not hessian_free:  # a Python flag fixed per method, not data-dependent control flow
        return outer
    if hp.get("hvp", "finite_difference") == "exact":  # fixed per run, like hessian_free
        hvp = hessian_vector_exact(params, outer, xs[2], ys[2], grad_fn)
    else:
        hvp = hessian_vector_fd(params, outer, xs[2], ys[2], hp["hf_delta"], grad_fn)
    return tree_add(outer, hvp, -alpha)


def maml_step(
    params: Params,
    xs: Tensor,
    ys: Tensor,
    hp: Mapping,
    grad_fn: GradFn,
    hessian_free: bool,
    inplace: bool = False,
) -> Params:
    """``params - local_lr * maml_direction(params, ...)``, regrouped so that every gradient
    is consumed by a :func:`descend` (fused for stacked MLPs: no gradient tensor written):

    FO: ``first = params - beta g`` with ``g = grad f(temp)``;
    HF: ``first + c grad f(params + d g) - c grad f(params - d g)``, ``c = beta alpha / (2 d)``,
    where ``params +- d g`` is read off ``first`` (``g = (params - first) / beta``, one ``lerp``
    per tensor): FO's direction plus :func:`hessian_vector_fd`'s correction, up to rounding.
    A ``grad_fn`` with a ``maml`` attribute (stacked fully connected models,
    :mod:`persafl.engine.fused_maml`) takes the whole step, its first layer in low-rank form;
    ``inplace`` (the caller owns ``params``) lets it write that layer into ``params``.
    """
    alpha, beta = hp["personal_lr"], hp["local_lr"]
    if hessian_free and hp.get("hvp", "finite_difference") == "exact":
        # the exact HVP needs the outer gradient itself: the formula as written, unfused
        return tree_add(params, maml_direction(params, xs, ys, hp, grad_fn, True), -beta)
    fused = getattr(grad_fn, "maml", None)  # stacked MLPs: persafl.engine.fused_maml
    if fused is not None:
        delta = hp.get("hf_delta", 0.0)
        return fused(params, xs, ys, alpha, beta, delta, hessian_free, inplace)
    temp = descend(grad_fn, params, xs[0], ys[0], alpha)
    first = descend(grad_fn, temp, xs[1], ys[1], beta, base=params)
    if not hessian_free or beta == 0:
        return first
    delta = hp["hf_delta"]
    scale = beta * alpha / (2.0 * delta)
    # params +- d g = params + (+-d / beta) (params - first) = lerp(params, first, -+d / beta)
    plus = {k: torch.lerp(p, first[k], -delta / beta) for k, p in params.items()}
    minus = {k: torch.lerp(p, first[k], delta / beta) for k, p in params.items()}
    new = descend(grad_fn, plus, xs[2], ys[2], -scale, base=first)
    return descend(grad_fn, minus, xs[2], ys[2], scale, base=new)


def _local_update(
    params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn, hessian_free: bool
) -> Params:
    current = dict(params)
    for step in range(check_local_steps(xb, hp)):
        # from the second step on, ``current`` is this function's own (a step's result)
        current = maml_step(
            current, xb[step], yb[step], hp, grad_fn, hessian_free, inplace=step > 0
        )
    return current


def local_update_fo(params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn) -> Params:
    """Q first-order MAML steps; ``xb`` is [Q, 2, (C,) B, *features]."""
    return _local_update(params, xb, yb, hp, grad_fn, hessian_free=False)


def local_update_hf(params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn) -> Params:
    """Q Hessian-free MAML steps; ``xb`` is [Q, 3, (C,) B, *features]."""
    return _local_update(params, xb, yb, hp, grad_fn, hessian_free=True)


def personalize(params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn) -> Params:
    """One SGD step of size alpha per training batch in ``xb`` ([A, (C,) B, *features])."""
    current = dict(params)
    for batch in range(int(xb.shape[0])):
        current = descend(grad_fn, current, xb[batch], yb[batch], hp["personal_lr"])
    return current


METHOD_FO = Method(
    name="persafl_maml_fo",
    defaults=DEFAULTS_FO,
    batches_per_step=2,
    local_update=local_update_fo,
    personalize=personalize,
    grads_per_step=lambda hp: 2,  # inner gradient + outer gradient
    personalized=True,
)
METHOD_HF = Method(
    name="persafl_maml_hf",
    defaults=DEFAULTS_HF,
    batches_per_step=3,
    local_update=local_update_hf,
    personalize=personalize,
    grads_per_step=lambda hp: 4,  # FO's two + the two finite-difference gradients
    personalized=True,
)
