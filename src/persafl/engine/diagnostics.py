"""Diagnostics of ME's inner problem, computed at evaluation (stacked layout, params [C, ...]).

ME's personalized model theta_i(x) = argmin_theta h(theta), h = f_i(theta) + lambda/2
||theta - x||^2 (+ decay/2 ||theta||^2), is found by K gradient steps of ``personal_lr``.
Two things can go wrong, and neither was visible before (issue 11):

- the K steps stop short: the **inner residual** ``||grad h(theta)|| / (lambda ||theta - x||)``
  compares what is left of the inner gradient with the Moreau gradient ``lambda (x - theta)``
  that the method uses (0: solved; 0.3: the gradient estimate carries an error of that order);
- the steps expand instead of contracting: gradient descent on h is stable only for
  ``personal_lr < 2 / (L + lambda + decay)``, L the largest eigenvalue of the Hessian of f_i.
  L is estimated by power iteration with exact Hessian-vector products on one batch
  (``grad_fn.hvp``); the evaluator logs a warning when the step size exceeds the limit.

Cost: a cold power iteration is ``POWER_ITERATIONS`` Hessian-vector products per client and
evaluation (23 % of an ME run's time when every evaluation started cold). The evaluator starts
each later estimate from the previous evaluation's eigenvector, where ``WARM_ITERATIONS``
products suffice: the server model moves little between evaluations. Measured on a 400-update
MNIST ME run (21 evaluations): warm estimates within 0.05 % of cold ones at the median, 80 %
below at worst (a Rayleigh quotient approaches the top eigenvalue from below, warm or cold).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from persafl.models import GradFn, Params

POWER_ITERATIONS = 20
WARM_ITERATIONS = 4


def client_norms(tree: Params) -> Tensor:
    """Per-client Euclidean norm [C] of a stacked parameter dict ([C, ...] per key)."""
    squares = [v.flatten(1).pow(2).sum(dim=1) for v in tree.values()]
    return torch.stack(squares).sum(dim=0).sqrt()


def _client_dots(a: Params, b: Params) -> Tensor:
    return torch.stack([(a[k] * b[k]).flatten(1).sum(dim=1) for k in a]).sum(dim=0)


def inner_residual(
    theta: Params, anchor: Params, x: Tensor, y: Tensor, hp: Mapping, inner_gradient, grad_fn
) -> Tensor:
    """``||grad h(theta)|| / (lambda ||theta - anchor||)`` per client [C] (NaN where theta = x)."""
    residual = client_norms(inner_gradient(theta, anchor, x, y, hp, grad_fn))
    moved = client_norms({k: theta[k] - anchor[k] for k in theta})
    lam = float(hp["moreau_lambda"])
    return torch.where(moved > 0, residual / (lam * moved), torch.full_like(moved, float("nan")))


def top_curvature(
    params: Params,
    x: Tensor,
    y: Tensor,
    grad_fn: GradFn,
    iterations: int = POWER_ITERATIONS,
    start: Params | None = None,
) -> tuple[Tensor, Params]:
    """Per-client estimate [C] of the largest-magnitude Hessian eigenvalue of f on (x, y), and
    the last iterate (the start of a warm restart).

    Power iteration from ``start`` or else the gradient direction (deterministic: no random
    start needed; a zero start falls back to all ones), ``iterations`` exact Hessian-vector
    products; the estimate is the Rayleigh quotient ``v.Hv`` of the last iterate (signed).
    """
    hvp = getattr(grad_fn, "hvp", None)
    if hvp is None:
        raise ValueError("curvature estimation needs a grad_fn with an hvp attribute")
    hvp_at = getattr(grad_fn, "hvp_at", None)  # the graph built once for every product
    product = hvp_at(params, x, y) if hvp_at is not None else (lambda v: hvp(params, v, x, y))
    vector = grad_fn(params, x, y) if start is None else start
    if not bool((client_norms(vector) > 0).all()):
        vector = {k: torch.ones_like(v) for k, v in params.items()}
    quotient = torch.zeros(next(iter(params.values())).shape[0], device=x.device)
    for _ in range(iterations):
        norms = client_norms(vector).clamp_min(1e-30)
        unit = {k: v / norms.view(-1, *[1] * (v.dim() - 1)) for k, v in vector.items()}
        vector = product(unit)
        quotient = _client_dots(unit, vector)
    return quotient, vector


def stability_limit(curvature: float, hp: Mapping) -> float:
    """Largest stable inner step size ``2 / (L + lambda + decay)`` for curvature L."""
    return 2.0 / (curvature + float(hp["moreau_lambda"]) + float(hp.get("weight_decay", 0.0)))
