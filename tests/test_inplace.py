"""In-place steps: writing a step's result into tensors the caller owns changes no bit.

A client's local update owns every tensor after its first step, so the fused SGD step
(``persafl.engine.fused``), the fused MAML step (``fused_maml``) and ME's outer ``lerp`` write
into them instead of allocating fresh full-size tensors each step. Tested: the same bits as the
out-of-place step, the result really lands in the owned tensors, and whatever the caller did
not hand over (the downloaded model, a separate ``at``) stays untouched.
"""

from __future__ import annotations

import pytest
import torch

from persafl import methods as registry
from persafl.engine import fused, fused_maml
from persafl.methods import maml, me
from persafl.models import build_model, init_params, make_batched_grad_fn
from test_fused import CASES  # the models and activations the fused steps cover


def problem(name, shape, kw, clients=3, batch=6, steps=4, seed=5, dtype=torch.float32):
    model = build_model(name, shape, 7, **kw).to(dtype)
    per_client = [init_params(model, s, dtype=dtype) for s in range(clients)]
    stacked = {k: torch.stack([p[k] for p in per_client]) for k in per_client[0]}
    gen = torch.Generator().manual_seed(seed)
    # [Q, 3, C, B, *features]: up to three batches per local step (MAML HF)
    xb = torch.randn(steps, 3, clients, batch, *shape, generator=gen).to(dtype)
    yb = torch.randint(0, 7, (steps, 3, clients, batch), generator=gen)
    return model, stacked, xb, yb


def clone(params):
    return {k: v.clone() for k, v in params.items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("name", "shape", "kw"), CASES)
@pytest.mark.parametrize("separate_base", [False, True])
def test_inplace_descend_gives_the_same_bits_in_the_owned_tensors(name, shape, kw, separate_base):
    model, stacked, xb, yb = problem(name, shape, kw)
    descend = fused.make_descend(model)
    base = {k: v + 0.3 for k, v in stacked.items()} if separate_base else None
    expected = descend(stacked, xb[0, 0], yb[0, 0], 0.7, base)
    at, owned = clone(stacked), clone(base if separate_base else stacked)
    got = descend(at, xb[0, 0], yb[0, 0], 0.7, owned if separate_base else None, True)
    if not separate_base:
        owned = at
    assert same(got, expected)
    assert all(got[k].data_ptr() == owned[k].data_ptr() for k in got)  # written in place
    if separate_base:  # ``at`` was only read
        assert same(at, stacked)
    assert not same(got, stacked)  # and the step moved the parameters


@pytest.mark.parametrize(("name", "shape", "kw"), CASES)
@pytest.mark.parametrize("hessian_free", [False, True])
def test_inplace_maml_step_gives_the_same_bits(name, shape, kw, hessian_free):
    model, stacked, xb, yb = problem(name, shape, kw)
    step = fused_maml.make_maml(model)
    args = (xb[0], yb[0], 0.05, 0.2, 1e-3, hessian_free)
    expected = step(stacked, *args)
    owned = clone(stacked)
    got = step(owned, *args, True)
    assert same(got, expected)
    first = next(k for k in stacked if k.endswith("weight"))  # the first layer's weight
    assert got[first].data_ptr() == owned[first].data_ptr()  # written in place
    assert not same(got, stacked)


LOCAL_HP = {
    "afl": {"local_lr": 0.1},
    "persafl_maml_fo": {"local_lr": 0.1, "personal_lr": 0.05},
    "persafl_maml_hf": {"local_lr": 0.1, "personal_lr": 0.05, "hf_delta": 1e-3},
    "persafl_me": {"local_lr": 0.05, "personal_lr": 0.03, "moreau_lambda": 15.0},
    "persafl_me_warm": {
        "local_lr": 0.05,
        "personal_lr": 0.03,
        "moreau_lambda": 15.0,
        "inner_start": "previous",
    },
}


def out_of_place_update(name, params, xb, yb, hp, grad_fn):
    """The local update with every step writing fresh tensors (the layout before in-place)."""
    current = dict(params)
    theta = current
    for step in range(int(hp["local_steps"])):
        if name == "afl":
            current = grad_fn.descend(current, xb[step, 0], yb[step, 0], hp["local_lr"])
        elif name.startswith("persafl_maml"):
            current = maml.maml_step(
                current, xb[step], yb[step], hp, grad_fn, name.endswith("hf"), inplace=False
            )
        else:
            start = theta if hp.get("inner_start") == "previous" else current
            theta = me.moreau_prox(start, current, xb[step, 0], yb[step, 0], hp, grad_fn)
            weight = hp["local_lr"] * hp["moreau_lambda"]
            current = {k: torch.lerp(v, theta[k], weight) for k, v in current.items()}
    return current


@pytest.mark.parametrize("name", sorted(LOCAL_HP))
def test_local_updates_in_place_match_fresh_tensors_and_leave_the_download_alone(name):
    model, stacked, xb, yb = problem("mlp", (1, 12, 12), {"hidden": 9}, steps=4)
    method = registry.get("persafl_me" if name == "persafl_me_warm" else name)
    hp = registry.resolve_hp(method, {"local_steps": 4, **LOCAL_HP[name]})
    grad_fn = make_batched_grad_fn(model)
    download = clone(stacked)
    count = method.batches_per_step
    got = method.local_update(stacked, xb[:, :count], yb[:, :count], hp, grad_fn)
    assert same(stacked, download)  # the downloaded model is the caller's: never written
    expected = out_of_place_update(name, download, xb, yb, hp, grad_fn)
    assert same(got, expected)
    assert not same(got, download)


def test_fused_prox_result_owns_its_tensors():
    model, stacked, xb, yb = problem("mlp", (1, 12, 12), {"hidden": 9})
    prox = fused.make_prox(model)
    start = {k: v + 0.01 for k, v in stacked.items()}
    copies = clone(stacked), clone(start)
    for begin in (stacked, start):  # from the anchor itself, and from elsewhere
        theta = prox(begin, stacked, xb[0, 0], yb[0, 0], 0.03, 15.0, 0.0, 3)
        assert same(stacked, copies[0]) and same(start, copies[1])
        assert all(
            theta[k].data_ptr() not in {stacked[k].data_ptr(), start[k].data_ptr()} for k in theta
        )
