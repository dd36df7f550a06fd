"""Protocol controls: exact HVP for MAML HF, adapt_on, ME warm start, inner diagnostics."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from persafl import methods
from persafl.config import ConfigError, resolve_run_config
from persafl.data import load_dataset
from persafl.engine import diagnostics
from persafl.engine.batches import eval_indices, gather
from persafl.engine.evaluate import Evaluator
from persafl.methods import maml, me
from persafl.models import (
    build_model,
    init_params,
    make_batched_grad_fn,
    make_grad_fn,
    make_loss_fn,
)
from persafl.partition import partition_dataset


def _mlp64(activation: str = "relu"):
    model = build_model("mlp", (7,), 4, hidden=6, activation=activation).double()
    params = {k: v.double() for k, v in init_params(model, 0).items()}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 10, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 10), generator=gen)
    return model, params, x, y


def _random_like(params, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_exact_hvp_matches_autograd_in_float64(activation):
    """One client: ``grad_fn.hvp`` is autograd's Hessian-vector product; stacked: each
    client's block of it."""
    model, params, x, y = _mlp64(activation)
    loss = make_loss_fn(model)
    names = list(params)
    vector = _random_like(params, 2)

    def flat_loss(*tensors):
        return loss(dict(zip(names, tensors, strict=True)), x[0], y[0])

    _, reference = torch.autograd.functional.hvp(
        flat_loss, tuple(params.values()), tuple(vector.values())
    )
    one = make_grad_fn(model).hvp(params, vector, x[0], y[0])
    for name, ref in zip(names, reference, strict=True):
        torch.testing.assert_close(one[name], ref, rtol=1e-10, atol=1e-12)

    stacked_params = {k: torch.stack([v + 0.1 * c for c in range(3)]) for k, v in params.items()}
    stacked_vector = {k: torch.stack([v * (c + 1) for c in range(3)]) for k, v in vector.items()}
    stacked = make_batched_grad_fn(model).hvp(stacked_params, stacked_vector, x, y)
    grad_fn = make_grad_fn(model)
    for c in range(3):
        own = grad_fn.hvp(
            {k: v[c] for k, v in stacked_params.items()},
            {k: v[c] for k, v in stacked_vector.items()},
            x[c],
            y[c],
        )
        for name in names:
            torch.testing.assert_close(stacked[name][c], own[name], rtol=1e-10, atol=1e-12)


def test_exact_maml_direction_is_the_gradient_of_the_maml_objective():
    """With one batch for D, D', D'': (I - a H) grad f(x - a grad f(x)) = grad of F exactly."""
    model, params, x, y = _mlp64()
    loss, grad_fn = make_loss_fn(model), make_grad_fn(model)
    hp = {"personal_lr": 0.3, "local_lr": 0.1, "hf_delta": 1e-3, "hvp": "exact"}
    xs, ys = x[0].expand(3, *x[0].shape), y[0].expand(3, *y[0].shape)

    def objective(p):
        inner = {k: p[k] - 0.3 * g for k, g in torch.func.grad(loss)(p, x[0], y[0]).items()}
        return loss(inner, x[0], y[0])

    expected = torch.func.grad(objective)(params)
    direction = maml.maml_direction(params, xs, ys, hp, grad_fn, hessian_free=True)
    step = maml.maml_step(params, xs, ys, hp, grad_fn, hessian_free=True)
    for k in params:
        torch.testing.assert_close(direction[k], expected[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(step[k], params[k] - 0.1 * expected[k], rtol=1e-9, atol=1e-12)


def test_exact_hf_local_update_stacked_equals_one_client():
    model, params, x, y = _mlp64()
    method = methods.get("persafl_maml_hf")
    hp = methods.resolve_hp(method, {"local_steps": 2, "batch_size": 4, "hvp": "exact"})
    gen = torch.Generator().manual_seed(5)
    xb = torch.randn(2, 3, 3, 4, 7, generator=gen, dtype=torch.float64)  # [Q, S, C, B, feat]
    yb = torch.randint(0, 4, (2, 3, 3, 4), generator=gen)
    stacked_params = {k: torch.stack([v + 0.05 * c for c in range(3)]) for k, v in params.items()}
    stacked = method.local_update(stacked_params, xb, yb, hp, make_batched_grad_fn(model))
    fd = method.local_update(
        stacked_params, xb, yb, {**hp, "hvp": "finite_difference"}, make_batched_grad_fn(model)
    )
    for c in range(3):
        own = method.local_update(
            {k: v[c] for k, v in stacked_params.items()}, xb[:, :, c], yb[:, :, c], hp,
            make_grad_fn(model),
        )  # fmt: skip
        for k in params:
            torch.testing.assert_close(stacked[k][c], own[k], rtol=1e-9, atol=1e-12)
    assert any(not torch.equal(stacked[k], fd[k]) for k in params)  # the switch does something


def test_hvp_default_is_finite_difference_and_validated():
    assert methods.get("persafl_maml_hf").defaults["hvp"] == "finite_difference"
    with pytest.raises(ValueError, match="hvp"):
        methods.resolve_hp(methods.get("persafl_maml_hf"), {"hvp": "autograd"})


# ----- ME: warm start and diagnostics -----


def test_me_warm_start_carries_theta_between_local_steps():
    model, params, x, y = _mlp64()
    grad_fn = make_grad_fn(model)
    hp = methods.resolve_hp(
        methods.get("persafl_me"),
        {"local_steps": 3, "inner_steps": 2, "personal_lr": 0.05, "moreau_lambda": 5.0,
         "local_lr": 0.02, "inner_start": "previous"},
    )  # fmt: skip
    xb, yb = x[:, None], y[:, None]  # [Q=3, S=1, B, feat]

    current, theta = dict(params), dict(params)
    for step in range(3):
        for _ in range(2):  # theta <- theta - lr (grad f(theta) + lam (theta - y))
            g = grad_fn(theta, x[step], y[step])
            theta = {k: theta[k] - 0.05 * (g[k] + 5.0 * (theta[k] - current[k])) for k in theta}
        current = {k: current[k] - 0.02 * 5.0 * (current[k] - theta[k]) for k in current}
    warm = me.local_update(params, xb, yb, hp, grad_fn)
    cold = me.local_update(params, xb, yb, {**hp, "inner_start": "anchor"}, grad_fn)
    for k in params:
        torch.testing.assert_close(warm[k], current[k], rtol=1e-9, atol=1e-12)
    assert any(not torch.allclose(warm[k], cold[k]) for k in params)
    # the stacked (fused prox) path agrees
    stacked = {k: v.expand(2, *v.shape).clone() for k, v in params.items()}
    xs, ys = x[:, None, None].expand(3, 1, 2, *x.shape[1:]), y[:, None, None].expand(3, 1, 2, 10)
    batched = me.local_update(stacked, xs, ys, hp, make_batched_grad_fn(model))
    for k in params:
        torch.testing.assert_close(batched[k][1], current[k], rtol=1e-9, atol=1e-11)


def test_top_curvature_is_the_largest_hessian_eigenvalue():
    model, params, x, y = _mlp64("softplus")
    loss = make_loss_fn(model)
    names = list(params)
    sizes = [params[k].numel() for k in names]

    def flat(vector):
        parts = torch.split(vector, sizes)
        return loss(
            {k: p.view_as(params[k]) for k, p in zip(names, parts, strict=True)}, x[0], y[0]
        )

    hessian = torch.autograd.functional.hessian(
        flat, torch.cat([params[k].flatten() for k in names])
    )
    eigenvalues = torch.linalg.eigvalsh(hessian)
    top = eigenvalues[eigenvalues.abs().argmax()]
    stacked = {k: v[None] for k, v in params.items()}
    grad_fn = make_batched_grad_fn(model)
    estimate, vector = diagnostics.top_curvature(stacked, x[:1], y[:1], grad_fn, 300)
    assert float(estimate[0]) == pytest.approx(float(top), rel=1e-3)
    # warm start from the converged iterate: a few products keep the estimate (the evaluator's
    # later evaluations), while a cold start with as few products is measurably off
    warm, _ = diagnostics.top_curvature(
        stacked, x[:1], y[:1], grad_fn, diagnostics.WARM_ITERATIONS, vector
    )
    assert float(warm[0]) == pytest.approx(float(top), rel=1e-3)
    cold, _ = diagnostics.top_curvature(stacked, x[:1], y[:1], grad_fn, diagnostics.WARM_ITERATIONS)
    assert abs(float(cold[0]) - float(top)) > 0.01 * abs(float(top))
    assert diagnostics.stability_limit(3.0, {"moreau_lambda": 15.0}) == pytest.approx(2 / 18)


def test_power_iteration_on_a_kept_graph_equals_products_built_anew():
    # hvp_at builds the forward pass and the gradient's graph once for all products: the same
    # numbers, bit for bit, as hvp building them for every product
    model, params, x, y = _mlp64("relu")
    stacked = {k: v.expand(3, *v.shape).clone() for k, v in params.items()}
    kept = make_batched_grad_fn(model)
    anew = make_batched_grad_fn(model)
    del anew.hvp_at
    xs, ys = x[:1].expand(3, *x.shape[1:]), y[:1].expand(3, *y.shape[1:])
    a, va = diagnostics.top_curvature(stacked, xs, ys, kept, 6)
    b, vb = diagnostics.top_curvature(stacked, xs, ys, anew, 6)
    assert torch.equal(a, b)
    assert all(torch.equal(va[k], vb[k]) for k in va)
    product = kept.hvp_at(stacked, xs, ys)
    twice = [product(va), product(va)]  # the kept graph survives repeated use
    assert all(torch.equal(twice[0][k], twice[1][k]) for k in va)


def test_inner_residual_falls_with_more_inner_steps():
    model, params, x, y = _mlp64("softplus")  # smooth: gradient descent converges linearly
    stacked = {k: v.expand(3, *v.shape).clone() for k, v in params.items()}
    grad_fn = make_batched_grad_fn(model)
    hp = {"moreau_lambda": 5.0, "personal_lr": 0.05, "weight_decay": 0.0}
    residuals = []
    for steps in (1, 10, 400):
        theta = me.moreau_prox(stacked, stacked, x, y, {**hp, "inner_steps": steps}, grad_fn)
        residuals.append(
            diagnostics.inner_residual(theta, stacked, x, y, hp, me.inner_gradient, grad_fn)
        )
    assert (residuals[0] > residuals[1]).all() and (residuals[1] > residuals[2]).all()
    assert float(residuals[2].max()) < 1e-6
    assert float(residuals[0].min()) > 0.5  # one step from x leaves most of the gradient


@pytest.fixture(scope="module")
def problem():
    torch.set_num_threads(1)
    data = load_dataset(
        "synthetic", "unused", alpha=0.5, beta=0.5, num_clients=5, seed=0, max_client_samples=80
    )
    partition = partition_dataset(data.y.numpy(), data.groups, "natural", 5, seed=0)
    model = build_model("mlp", tuple(data.x.shape[1:]), data.num_classes, hidden=8)
    return data, partition, model


def _evaluator(problem, name, **hp):
    data, partition, model = problem
    method = methods.get(name)
    resolved = methods.resolve_hp(method, {"batch_size": 5, **hp})
    return Evaluator(
        model, method, resolved, data.x, data.y, partition.train, partition.test, 0
    ), resolved


def test_me_evaluation_records_inner_diagnostics_and_warns_when_unstable(problem, caplog):
    data, partition, model = problem
    params = init_params(model, 0)
    stable, _ = _evaluator(problem, "persafl_me", personal_lr=0.001)
    with caplog.at_level(logging.WARNING, logger="persafl.engine.evaluate"):
        metrics = stable.evaluate(0, params).metrics
    assert np.isfinite(metrics["inner_residual_ca"]) and metrics["inner_residual_ca"] > 0
    assert metrics["inner_curvature_max"] > 0
    assert "stability limit" not in caplog.text
    unstable, _ = _evaluator(problem, "persafl_me", personal_lr=1.0, moreau_lambda=15.0)
    with caplog.at_level(logging.WARNING, logger="persafl.engine.evaluate"):
        unstable.evaluate(0, params)
        unstable.evaluate(1, params)
    assert caplog.text.count("stability limit") == 1  # warned once per run
    afl, _ = _evaluator(problem, "afl")
    assert np.isnan(afl.evaluate(0, params).metrics["inner_residual_ca"])


def test_adapt_on_test_adapts_on_test_batches_and_is_never_the_default(problem, caplog):
    data, partition, model = problem
    params = init_params(model, 0)
    name = "persafl_maml_fo"
    with caplog.at_level(logging.WARNING, logger="persafl.engine.evaluate"):
        clean, hp = _evaluator(problem, name, personal_lr=0.5)
    assert hp["adapt_on"] == "train" and "leaky" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="persafl.engine.evaluate"):
        leaky, hp_test = _evaluator(problem, name, personal_lr=0.5, adapt_on="test")
    assert "leaky" in caplog.text
    acc = leaky.evaluate(3, params).personal_acc
    assert not np.allclose(acc, clean.evaluate(3, params).personal_acc)
    # by hand: one step of personal_lr on a batch drawn from client 0's TEST indices
    grad_fn = make_grad_fn(model)
    index = eval_indices(0, 3, 0, partition.test[0], 1, 5)
    xb, yb = gather(data.x, data.y, index)
    adapted = maml.personalize(params, xb, yb, hp_test, grad_fn)
    xt, yt = gather(data.x, data.y, partition.test[0])
    logits = torch.func.functional_call(model, adapted, (xt,))
    assert acc[0] == pytest.approx(float((logits.argmax(-1) == yt).double().mean()))


def test_run_config_defaults_to_adapt_on_train_and_checks_names():
    config = resolve_run_config(
        {"method": {"name": "persafl_maml_hf"},
         "schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 1}}
    )  # fmt: skip
    assert config["method"]["hp"]["adapt_on"] == "train"
    assert config["method"]["hp"]["hvp"] == "finite_difference"
    with pytest.raises(ConfigError, match="adapt_on"):
        resolve_run_config(
            {"method": {"name": "afl", "hp": {"adapt_on": "validation"}},
             "schedule": {"model": "delay", "staleness_bound": 0, "num_updates": 1}}
        )  # fmt: skip
