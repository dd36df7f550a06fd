"""The ``Method`` contract and helpers shared by the client-side algorithms.

A method is a bundle of pure functions over explicit parameter dicts (fedjax-style) that
receives its gradients from a ``grad_fn(params, x, y) -> grads`` (fedjax's grad_fn): the
method never differentiates anything itself. All its arithmetic is elementwise on the dicts, so
the same code runs on one client (``params`` as built, ``xb[q, s]`` [B, ...], the reference
``models.make_grad_fn``) or on C clients stacked along a leading dimension (``params`` [C, ...],
``xb[q, s]`` [C, B, ...], ``models.make_batched_grad_fn``); the executor picks. The server
step (``x <- x - server_lr * (start - new)``) belongs to the engine; a method only says how a
client turns its downloaded model into a new one (PersA-FL: Toghani, Lee, Uribe 2022,
Algorithm 1, client side) and how a model is personalized for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from persafl.models import GradFn, LossFn, Params, make_loss_fn

__all__ = [
    "HP_CHOICES",
    "HP_NAMES",
    "PROTOCOL_DEFAULTS",
    "GradFn",
    "LossFn",
    "Method",
    "Params",
    "check_local_steps",
    "descend",
    "grad_of",
    "identity_personalize",
    "make_loss_fn",
    "resolve_hp",
    "sgd_step",
    "tree_add",
]

# Hyperparameter names shared by all methods (docs/design.md "Methods"); a method declares
# defaults for the ones it reads. ``weight_decay`` is the optional pFedMe personal-optimizer
# decay (off by default here).
HP_NAMES = frozenset(
    {
        "local_steps",
        "batch_size",
        "local_lr",
        "personal_lr",
        "hf_delta",
        "moreau_lambda",
        "inner_steps",
        "server_lr",
        "eval_adapt_steps",
        "weight_decay",
        # protocol choices (docs/protocol.md): server step, evaluation, estimators
        "aggregation",
        "staleness_weight",
        "staleness_a",
        "staleness_b",
        "adapt_on",
        "hvp",
        "inner_start",
    }
)

# The hyperparameters that take a name instead of a number, with their allowed names (the first
# is the default where a default exists).
HP_CHOICES: dict[str, tuple[str, ...]] = {
    "aggregation": ("uniform", "samples"),  # server average: 1/K, or n_j / sum n (FedAvg)
    "staleness_weight": ("constant", "polynomial", "hinge"),  # FedAsync's s(tau)
    "adapt_on": ("train", "test"),  # test: pFedMe's leaky Per-FedAvg evaluation, comparison only
    "hvp": ("finite_difference", "exact"),  # MAML HF's Hessian-vector product
    "inner_start": ("anchor", "previous"),  # ME: theta from y each step, or pFedMe's warm start
}

# Protocol defaults every method shares, so a resolved config states them (engine/server.py,
# engine/evaluate.py read them): the PersA-FL server rule and evaluation on TRAIN adaptation.
PROTOCOL_DEFAULTS: dict[str, float | int | str] = {
    "server_lr": 1.0,  # pFedMe beta = 1; FedAvg / Per-FedAvg average the models (docs/protocol.md)
    "aggregation": "uniform",
    "staleness_weight": "constant",
    "staleness_a": 0.5,  # FedAsync's experiments: a = 0.5
    "staleness_b": 4.0,  # FedAsync's hinge experiments: b = 4
    "adapt_on": "train",  # never test by default: adapting on test data leaks it
}

# Update: (params, xb [Q,S,B,...] or [Q,S,C,B,...], yb [Q,S,B] or [Q,S,C,B], hp, grad_fn).
LocalUpdate = Callable[[Params, Tensor, Tensor, Mapping, GradFn], Params]
# Personalization: (params, xb [A,B,...] or [A,C,B,...], yb [A,B] or [A,C,B], hp, grad_fn).
Personalize = Callable[[Params, Tensor, Tensor, Mapping, GradFn], Params]


@dataclass(frozen=True)
class Method:
    """A client algorithm: local update, personalization and its cost (docs/design.md)."""

    name: str
    defaults: dict[str, float | int]
    batches_per_step: int
    local_update: LocalUpdate
    personalize: Personalize
    grads_per_step: Callable[[Mapping], int]
    personalized: bool
    # Methods with an inner problem (ME): (theta, anchor, x, y, hp, grad_fn) -> its gradient,
    # for the evaluation's inner-solve diagnostics (engine/diagnostics.py).
    inner_gradient: Callable[..., Params] | None = None


def resolve_hp(method: Method, overrides: Mapping[str, float | int] | None = None) -> dict:
    """The method's defaults updated with ``overrides``; unknown names raise ``ValueError``.

    Any shared name (``HP_NAMES``) is accepted even if this method ignores it, so one sweep
    config can carry e.g. ``moreau_lambda`` for all methods.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - HP_NAMES)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for method {method.name!r}; "
            f"known names: {sorted(HP_NAMES)}"
        )
    hp = {**PROTOCOL_DEFAULTS, **method.defaults, **overrides}
    for name, choices in HP_CHOICES.items():
        if name in hp and hp[name] not in choices:
            raise ValueError(
                f"hyperparameter {name}: got {hp[name]!r}, expected one of {list(choices)}"
            )
    return hp


def sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """``params - lr * grads`` key by key (a new dict; nothing is modified in place)."""
    # torch.add with alpha: one kernel per tensor (the per-op cost dominates small models)
    return {k: torch.add(p, grads[k], alpha=-lr) for k, p in params.items()}


def descend(
    grad_fn: GradFn,
    at: Params,
    x: Tensor,
    y: Tensor,
    lr: float,
    base: Params | None = None,
    inplace: bool = False,
) -> Params:
    """``base - lr * grad f(at; x, y)`` (``base`` defaults to ``at``): every SGD-type step.

    A ``grad_fn`` that carries a fused ``descend`` (stacked fully connected models,
    :mod:`persafl.engine.fused`) computes it without materializing the gradient; any other goes
    through ``grad_fn`` and :func:`sgd_step`. Both give the same values up to float rounding.
    ``inplace`` allows (does not require) writing the result into ``base``'s tensors: pass it
    only for tensors the caller owns, such as a previous step's result.
    """
    fused = getattr(grad_fn, "descend", None)
    if fused is not None:
        return fused(at, x, y, lr, base, inplace)
    return sgd_step(at if base is None else base, grad_fn(at, x, y), lr)


def tree_add(a: Params, b: Params, scale: float = 1.0) -> Params:
    """``a + scale * b`` key by key."""
    return {k: torch.add(v, b[k], alpha=scale) for k, v in a.items()}


def grad_of(loss_fn: LossFn) -> GradFn:
    """A one-client ``grad_fn`` from any scalar ``loss_fn(params, x, y)`` (``torch.func.grad``)."""
    return torch.func.grad(loss_fn)


def check_local_steps(xb: Tensor, hp: Mapping) -> int:
    """Number of local steps Q: the leading batch dimension, checked against ``hp``.

    The data shape is the source of truth (also with stacked clients); a disagreeing
    ``local_steps`` means the executor drew the wrong number of batches.
    """
    steps = int(xb.shape[0])
    expected = hp.get("local_steps", steps)
    if int(expected) != steps:
        raise ValueError(f"batches for {steps} local steps, but hp local_steps={expected}")
    return steps


def identity_personalize(
    params: Params, xb: Tensor, yb: Tensor, hp: Mapping, grad_fn: GradFn
) -> Params:
    """No adaptation: the personalized model is the model itself (afl, local)."""
    del xb, yb, hp, grad_fn  # same signature as the adapting methods
    return dict(params)
