"""The fused steps (persafl.engine.fused, fused_maml) against autograd, client by client."""

from __future__ import annotations

import pytest
import torch

from persafl.engine import fused, fused_maml
from persafl.methods import maml
from persafl.methods.base import descend, sgd_step
from persafl.models import build_model, init_params, make_batched_grad_fn, make_grad_fn

CASES = [
    ("logistic", (60,), {}),
    ("mlp", (1, 12, 12), {"hidden": 9}),
    ("mlp", (60,), {"hidden": 20, "activation": "softplus"}),
    ("mlp", (5, 4), {"hidden": 7, "activation": "tanh"}),
]


def stacked_problem(name, shape, kw, clients=3, batch=6, seed=5):
    model = build_model(name, shape, 7, **kw).double()
    per_client = [init_params(model, s, dtype=torch.float64) for s in range(clients)]
    stacked = {k: torch.stack([p[k] for p in per_client]) for k in per_client[0]}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(clients, batch, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (clients, batch), generator=gen)
    return model, per_client, stacked, x, y


@pytest.mark.parametrize(("name", "shape", "kw"), CASES)
@pytest.mark.parametrize("separate_base", [False, True])
def test_fused_step_equals_autograd_step_per_client(name, shape, kw, separate_base, device):
    model, per_client, stacked, x, y = stacked_problem(name, shape, kw)
    base = {k: v + 0.3 * torch.randn_like(v) for k, v in stacked.items()} if separate_base else None
    lr = 0.7  # large, so a wrong gradient term shows far above rounding
    to = lambda p: None if p is None else {k: v.to(device) for k, v in p.items()}  # noqa: E731
    new = fused.make_descend(model)(to(stacked), x.to(device), y.to(device), lr, to(base))
    new = {k: v.cpu() for k, v in new.items()}
    reference = make_grad_fn(model)
    assert new.keys() == stacked.keys()
    for c, params in enumerate(per_client):
        grads = reference(params, x[c], y[c])
        start = params if base is None else {k: v[c] for k, v in base.items()}
        expected = sgd_step(start, grads, lr)
        for key in params:
            assert new[key].shape == stacked[key].shape
            torch.testing.assert_close(new[key][c], expected[key], rtol=0, atol=1e-12)
            assert grads[key].abs().max() > 1e-3  # every tensor really moved


def test_fused_step_leaves_inputs_alone_and_tracks_nothing() -> None:
    model, _, stacked, x, y = stacked_problem("mlp", (1, 12, 12), {"hidden": 9})
    copies = {k: v.clone() for k, v in stacked.items()}
    new = fused.make_descend(model)(stacked, x, y, 0.1)
    assert all(torch.equal(stacked[k], copies[k]) for k in stacked)
    assert all(not v.requires_grad for v in new.values())
    assert all(new[k].data_ptr() != stacked[k].data_ptr() for k in stacked)


def test_which_models_fuse() -> None:
    assert fused.supports(build_model("mlp", (60,), 10, hidden=20))
    assert fused.supports(build_model("logistic", (1, 28, 28), 10))
    cnn = build_model("cnn", (1, 28, 28), 10, fc_hidden=16)
    assert not fused.supports(cnn)
    with pytest.raises(TypeError, match="fused steps need"):
        fused.make_descend(cnn)
    # a non-default softplus has another derivative: not fused
    nn = torch.nn
    odd = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softplus(beta=2.0), nn.Linear(3, 2))
    assert not fused.supports(odd)
    # the batched grad_fn carries the fused step only where it applies, and only if asked
    assert hasattr(make_batched_grad_fn(build_model("mlp", (60,), 10)), "descend")
    assert not hasattr(make_batched_grad_fn(build_model("mlp", (60,), 10), fuse=False), "descend")
    assert not hasattr(make_batched_grad_fn(cnn), "descend")


def test_descend_helper_fused_and_unfused_agree() -> None:
    """methods.base.descend: the fused route and the grad_fn + sgd_step route, same numbers."""
    model, _, stacked, x, y = stacked_problem("mlp", (60,), {"hidden": 20})
    base = {k: 2.0 * v for k, v in stacked.items()}
    with_fused = make_batched_grad_fn(model)
    without = make_batched_grad_fn(model, fuse=False)
    a = descend(with_fused, stacked, x, y, 0.5, base)
    b = descend(without, stacked, x, y, 0.5, base)
    for key in stacked:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("name", "shape", "kw"), CASES)
@pytest.mark.parametrize("decay", [0.0, 0.3])
@pytest.mark.parametrize("from_anchor", [False, True])
def test_fused_prox_equals_generic_moreau_prox(name, shape, kw, decay, from_anchor) -> None:
    """ME's inner solver through persafl.engine.fused.make_prox (u = theta - fixed point, the first
    layer in low-rank form: X a^T once, then the Gram matrix times the accumulated dZ) equals
    the generic loop of descend steps, from the anchor (ME's local step) and from elsewhere."""
    from persafl.methods import me

    model, _, stacked, x, y = stacked_problem(name, shape, kw)
    moved = {k: v + 0.2 * torch.randn_like(v) for k, v in stacked.items()}
    start = stacked if from_anchor else moved
    hp = {"moreau_lambda": 2.0, "personal_lr": 0.2, "weight_decay": decay, "inner_steps": 3}
    with_fused = make_batched_grad_fn(model)
    assert hasattr(with_fused, "prox")
    fast = me.moreau_prox(start, stacked, x, y, hp, with_fused)
    slow = me.moreau_prox(start, stacked, x, y, hp, make_batched_grad_fn(model, fuse=False))
    for key in stacked:
        torch.testing.assert_close(fast[key], slow[key], rtol=0, atol=1e-12)
        assert not torch.allclose(fast[key], start[key])  # the solver moved every tensor


MAML_HP = {"personal_lr": 0.4, "local_lr": 0.6, "hf_delta": 1e-3}  # large: a wrong term shows


def batches(shape, clients=3, batch=6, seed=11):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(3, clients, batch, *shape, generator=gen, dtype=torch.float64)
    return xs, torch.randint(0, 7, (3, clients, batch), generator=gen)


@pytest.mark.parametrize(("name", "shape", "kw"), CASES)
@pytest.mark.parametrize("hessian_free", [False, True])
def test_fused_maml_step_equals_step_through_descents(name, shape, kw, hessian_free) -> None:
    """Low-rank first layer (Gram corrections instead of temp and params +- d g in full)
    against maml_step with autograd gradients, stacked, and client by client."""
    model, per_client, stacked, _, _ = stacked_problem(name, shape, kw)
    xs, ys = batches(shape)
    with_fused = make_batched_grad_fn(model)
    assert hasattr(with_fused, "maml")
    fast = maml.maml_step(stacked, xs, ys, MAML_HP, with_fused, hessian_free)
    slow = maml.maml_step(
        stacked, xs, ys, MAML_HP, make_batched_grad_fn(model, fuse=False), hessian_free
    )
    fo = maml.maml_step(stacked, xs, ys, MAML_HP, with_fused, False)
    for key in stacked:
        torch.testing.assert_close(fast[key], slow[key], rtol=0, atol=1e-12)
        assert not torch.allclose(fast[key], stacked[key])  # the step moved every tensor
        if hessian_free:  # and the Hessian term is there, far above rounding
            assert (fast[key] - fo[key]).abs().max() > 1e-6
    for c, params in enumerate(per_client):
        one = maml.maml_step(params, xs[:, c], ys[:, c], MAML_HP, make_grad_fn(model), hessian_free)
        for key in params:
            torch.testing.assert_close(fast[key][c], one[key], rtol=0, atol=1e-12)


def test_fused_maml_leaves_inputs_alone_and_tracks_nothing() -> None:
    model, _, stacked, _, _ = stacked_problem("mlp", (1, 12, 12), {"hidden": 9})
    xs, ys = batches((1, 12, 12))
    copies = {k: v.clone() for k, v in stacked.items()}
    x_copy = xs.clone()
    new = fused_maml.make_maml(model)(stacked, xs, ys, 0.1, 0.2, 1e-3, True)
    assert all(torch.equal(stacked[k], copies[k]) for k in stacked)
    assert torch.equal(xs, x_copy)
    assert all(not v.requires_grad for v in new.values())
    assert all(new[k].data_ptr() != stacked[k].data_ptr() for k in stacked)


def test_which_models_fuse_maml() -> None:
    nn = torch.nn
    assert fused_maml.supports(build_model("mlp", (60,), 10, hidden=20))
    assert fused_maml.supports(build_model("logistic", (1, 28, 28), 10))
    # an activation before the first Linear: the descents fuse, the MAML step does not
    odd = nn.Sequential(nn.Flatten(), nn.Tanh(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert fused.supports(odd) and not fused_maml.supports(odd)
    with pytest.raises(TypeError, match="fused MAML steps need"):
        fused_maml.make_maml(odd)
    grad_fn = make_batched_grad_fn(odd.double())
    assert hasattr(grad_fn, "descend") and not hasattr(grad_fn, "maml")
    assert not hasattr(make_batched_grad_fn(build_model("mlp", (60,), 10), fuse=False), "maml")
