"""Methods: closed forms on quadratics, hand-written single steps, stacked == loop, registry."""

from __future__ import annotations

import pytest
import torch

from persafl import methods
from persafl.methods import maml, me
from persafl.methods.base import check_local_steps, grad_of, resolve_hp
from persafl.models import build_model, init_params, make_batched_grad_fn, make_loss_fn

DIM = 4
ALPHA, LAMBDA = 0.1, 2.0


def quadratic_loss(params, a, c):
    """f(w) = 0.5 (w - c)^T A (w - c); the "batch" carries A (as x) and c (as y)."""
    diff = params["w"] - c
    return 0.5 * diff @ (a @ diff)


quadratic_grad = grad_of(quadratic_loss)


def spd_matrix(seed: int, low: float = 0.5, high: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen, dtype=torch.float64))
    eig = torch.linspace(low, high, DIM, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


def quadratic_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed + 100)
    a = spd_matrix(seed)
    c = torch.randn(DIM, generator=gen, dtype=torch.float64)
    x = torch.randn(DIM, generator=gen, dtype=torch.float64)
    return a, c, x


def repeat_batch(a, c, steps: int, slots: int):
    """The same exact "full batch" in every (step, slot): no sampling noise."""
    return a.expand(steps, slots, DIM, DIM), c.expand(steps, slots, DIM)


# ---------------------------------------------------------------- MAML (Per-FedAvg)


@pytest.mark.parametrize("hessian_free", [False, True])
def test_maml_step_is_params_minus_beta_direction(hessian_free: bool) -> None:
    """The regrouped step (each gradient consumed by ``descend``) equals x - beta * direction
    on three different batches, and on HF the exact MAML step on a quadratic."""
    a, c, x = quadratic_problem(2)
    mats = torch.stack([spd_matrix(s) for s in (3, 4, 5)])
    centers = torch.stack([c, 2 * c, -c])
    hp = {"personal_lr": ALPHA, "hf_delta": 1e-3, "local_lr": 0.3}
    direction = maml.maml_direction({"w": x}, mats, centers, hp, quadratic_grad, hessian_free)
    step = maml.maml_step({"w": x}, mats, centers, hp, quadratic_grad, hessian_free)
    expected = x - 0.3 * direction["w"]
    torch.testing.assert_close(step["w"], expected, rtol=0, atol=1e-10)
    if hessian_free:  # closed form: x - beta (I - alpha A2) A1 (temp - c1)
        temp = x - ALPHA * mats[0] @ (x - centers[0])
        shrink = torch.eye(DIM, dtype=torch.float64) - ALPHA * mats[2]
        exact = x - 0.3 * shrink @ mats[1] @ (temp - centers[1])
        torch.testing.assert_close(step["w"], exact, rtol=0, atol=1e-8)


def test_maml_fo_direction_is_gradient_at_adapted_point() -> None:
    a, c, x = quadratic_problem()
    xs, ys = repeat_batch(a, c, 1, 2)
    hp = {"personal_lr": ALPHA}
    direction = maml.maml_direction({"w": x}, xs[0], ys[0], hp, quadratic_grad, False)
    adapted = x - ALPHA * a @ (x - c)
    torch.testing.assert_close(direction["w"], a @ (adapted - c), rtol=0, atol=1e-12)


def test_maml_hf_direction_equals_exact_maml_gradient() -> None:
    a, c, x = quadratic_problem(1)
    xs, ys = repeat_batch(a, c, 1, 3)
    hp = {"personal_lr": ALPHA, "hf_delta": 1e-3}
    direction = maml.maml_direction({"w": x}, xs[0], ys[0], hp, quadratic_grad, True)
    # grad F(x) = (I - alpha A) grad f(x - alpha grad f(x)) = (I - aA) A (I - aA) (x - c).
    shrink = torch.eye(DIM, dtype=torch.float64) - ALPHA * a
    exact = shrink @ a @ shrink @ (x - c)
    torch.testing.assert_close(direction["w"], exact, rtol=0, atol=1e-6)
    # And it is not the FO direction (the Hessian term matters at this alpha).
    fo = maml.maml_direction({"w": x}, xs[0], ys[0], hp, quadratic_grad, False)
    assert (fo["w"] - exact).abs().max() > 1e-3


def test_maml_hf_uses_the_three_batches_in_their_roles() -> None:
    a, c, x = quadratic_problem(2)
    mats = torch.stack([spd_matrix(s) for s in (3, 4, 5)])
    centers = torch.stack([c, 2 * c, -c])
    hp = {"personal_lr": ALPHA, "hf_delta": 1e-3}
    direction = maml.maml_direction({"w": x}, mats, centers, hp, quadratic_grad, True)
    temp = x - ALPHA * mats[0] @ (x - centers[0])  # inner step on D
    g = mats[1] @ (temp - centers[1])  # outer gradient on D'
    expected = g - ALPHA * mats[2] @ g  # Hessian of D'' times g
    torch.testing.assert_close(direction["w"], expected, rtol=0, atol=1e-6)


def test_finite_difference_matches_autograd_hvp_on_logistic_regression() -> None:
    gen = torch.Generator().manual_seed(0)
    model = build_model("logistic", (6,), 3).double()
    loss_fn = make_loss_fn(model)
    params = init_params(model, 0, dtype=torch.float64)
    x = torch.randn(32, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=gen)
    vector = {
        k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()
    }

    def grad_at(p):
        return torch.func.grad(loss_fn)(p, x, y)

    _, exact = torch.func.jvp(grad_at, (params,), (vector,))
    approx = maml.hessian_vector_fd(params, vector, x, y, 1e-3, grad_of(loss_fn))
    for key in params:
        torch.testing.assert_close(approx[key], exact[key], rtol=0, atol=1e-4)
        assert exact[key].abs().max() > 1e-2  # a non-trivial Hessian-vector product
    # The finite difference is second-order accurate: a 10x larger delta is visibly worse.
    coarse = maml.hessian_vector_fd(params, vector, x, y, 1e-1, grad_of(loss_fn))
    err_fine = max((approx[k] - exact[k]).abs().max() for k in params)
    err_coarse = max((coarse[k] - exact[k]).abs().max() for k in params)
    assert err_fine < err_coarse / 50


def test_finite_difference_is_accurate_in_float32_on_a_smooth_mlp() -> None:
    # The training dtype: float32 rounding over 2d = 2e-3 stays small on a smooth net. (On a
    # ReLU net the difference jumps when units change sign, so it is NOT close to autograd's
    # almost-everywhere Hessian; that is why models offer smooth activations.)
    gen = torch.Generator().manual_seed(1)
    model = build_model("mlp", (20,), 5, hidden=16, activation="softplus")
    loss_fn = make_loss_fn(model)
    params = init_params(model, 0)
    x, y = torch.randn(32, 20, generator=gen), torch.randint(0, 5, (32,), generator=gen)
    vector = torch.func.grad(loss_fn)(params, x, y)  # the direction HF actually uses
    _, exact = torch.func.jvp(lambda p: torch.func.grad(loss_fn)(p, x, y), (params,), (vector,))
    approx = maml.hessian_vector_fd(params, vector, x, y, 1e-3, grad_of(loss_fn))
    error = sum((approx[k] - exact[k]).square().sum() for k in params).sqrt()
    norm = sum(exact[k].square().sum() for k in params).sqrt()
    assert error < 1e-3 * norm


# ---------------------------------------------------------------- Moreau envelope (pFedMe)


def envelope_closed_form(a, c, x):
    """theta*(x) = (A + lam I)^-1 (A c + lam x) and F(x) = f(theta*) + lam/2 ||theta* - x||^2."""
    theta = torch.linalg.solve(a + LAMBDA * torch.eye(DIM, dtype=a.dtype), a @ c + LAMBDA * x)
    value = quadratic_loss({"w": theta}, a, c) + 0.5 * LAMBDA * (theta - x).square().sum()
    return theta, value


def test_moreau_prox_converges_to_closed_form_and_gives_envelope_gradient() -> None:
    a, c, x = quadratic_problem(3)
    hp = {"moreau_lambda": LAMBDA, "personal_lr": 0.1, "inner_steps": 400}
    theta = me.moreau_prox({"w": x}, {"w": x}, a, c, hp, quadratic_grad)["w"]
    theta_star, _ = envelope_closed_form(a, c, x)
    torch.testing.assert_close(theta, theta_star, rtol=0, atol=1e-9)
    # theta* - c = lam (A + lam I)^-1 (x - c), hence
    # grad F(x) = lam (x - theta*) = lam (I - lam (A + lam I)^-1)(x - c).
    eye = torch.eye(DIM, dtype=torch.float64)
    closed = LAMBDA * (eye - LAMBDA * torch.linalg.inv(a + LAMBDA * eye)) @ (x - c)
    torch.testing.assert_close(LAMBDA * (x - theta), closed, rtol=0, atol=1e-6)
    # ... and it is the autograd gradient of the envelope value itself.
    autograd = torch.func.grad(lambda z: envelope_closed_form(a, c, z)[1])(x)
    torch.testing.assert_close(LAMBDA * (x - theta), autograd, rtol=0, atol=1e-6)
    # Few inner steps are only an approximation (the test above could fail).
    rough = me.moreau_prox({"w": x}, {"w": x}, a, c, {**hp, "inner_steps": 2}, quadratic_grad)
    assert (rough["w"] - theta_star).abs().max() > 1e-3


def test_me_local_step_with_exact_prox_is_envelope_gradient_step() -> None:
    a, c, x = quadratic_problem(4)
    hp = {"moreau_lambda": LAMBDA, "personal_lr": 0.1, "inner_steps": 400, "local_lr": 0.05}
    xs, ys = repeat_batch(a, c, 1, 1)
    new = me.local_update({"w": x}, xs, ys, hp, quadratic_grad)["w"]
    grad_envelope = torch.func.grad(lambda z: envelope_closed_form(a, c, z)[1])(x)
    torch.testing.assert_close(new, x - 0.05 * grad_envelope, rtol=0, atol=1e-8)


def test_me_weight_decay_shrinks_theta() -> None:
    a, c, x = quadratic_problem(5)
    hp = {"moreau_lambda": LAMBDA, "personal_lr": 0.1, "inner_steps": 400}
    plain = me.moreau_prox({"w": x}, {"w": x}, a, c, hp, quadratic_grad)["w"]
    decayed = me.moreau_prox({"w": x}, {"w": x}, a, c, {**hp, "weight_decay": 0.5}, quadratic_grad)[
        "w"
    ]
    eye = torch.eye(DIM, dtype=torch.float64)
    expected = torch.linalg.solve(a + (LAMBDA + 0.5) * eye, a @ c + LAMBDA * x)
    torch.testing.assert_close(decayed, expected, rtol=0, atol=1e-9)
    assert (decayed - plain).abs().max() > 1e-3


# ---------------------------------------------------------------- one step by hand


def toy_problem(clients: int = 3, steps: int = 1, slots: int = 3, batch: int = 5):
    model = build_model("mlp", (6,), 3, hidden=7).double()
    gen = torch.Generator().manual_seed(11)
    xb = torch.randn(clients, steps, slots, batch, 6, generator=gen, dtype=torch.float64)
    yb = torch.randint(0, 3, (clients, steps, slots, batch), generator=gen)
    return model, make_loss_fn(model), init_params(model, 0, dtype=torch.float64), xb, yb


def autograd_grad(loss_fn, params, x, y):
    """Reference gradient with classic autograd (independent of torch.func.grad)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(loss_fn(leaves, x, y), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


HP = {"personal_lr": 0.03, "local_lr": 0.2, "hf_delta": 1e-4}


def hand_step(name: str, loss_fn, p, xs, ys, hp):
    if name in ("afl", "local"):
        g = autograd_grad(loss_fn, p, xs[0], ys[0])
        return {k: p[k] - hp["local_lr"] * g[k] for k in p}
    if name.startswith("persafl_maml"):
        g0 = autograd_grad(loss_fn, p, xs[0], ys[0])
        temp = {k: p[k] - hp["personal_lr"] * g0[k] for k in p}
        g = autograd_grad(loss_fn, temp, xs[1], ys[1])
        if name.endswith("hf"):
            d = hp["hf_delta"]
            plus = autograd_grad(loss_fn, {k: p[k] + d * g[k] for k in p}, xs[2], ys[2])
            minus = autograd_grad(loss_fn, {k: p[k] - d * g[k] for k in p}, xs[2], ys[2])
            g = {k: g[k] - hp["personal_lr"] * (plus[k] - minus[k]) / (2 * d) for k in p}
        return {k: p[k] - hp["local_lr"] * g[k] for k in p}
    assert name == "persafl_me"
    lam, theta = hp["moreau_lambda"], dict(p)
    for _ in range(hp["inner_steps"]):
        g = autograd_grad(loss_fn, theta, xs[0], ys[0])
        theta = {k: theta[k] - hp["personal_lr"] * (g[k] + lam * (theta[k] - p[k])) for k in p}
    return {k: p[k] - hp["local_lr"] * lam * (p[k] - theta[k]) for k in p}


@pytest.mark.parametrize("name", methods.names())
def test_one_local_step_matches_hand_written_formula(name: str) -> None:
    method = methods.get(name)
    _, loss_fn, params, xb, yb = toy_problem()
    hp = resolve_hp(method, {**{k: v for k, v in HP.items() if k in method.defaults}})
    hp["local_steps"] = 1
    new = method.local_update(params, xb[0], yb[0], hp, grad_of(loss_fn))
    expected = hand_step(name, loss_fn, params, xb[0, 0], yb[0, 0], hp)
    for key in params:
        torch.testing.assert_close(new[key], expected[key], rtol=1e-9, atol=1e-9)
        assert not torch.equal(new[key], params[key])  # the step moved every tensor


def client_major_to_stacked(xb: torch.Tensor) -> torch.Tensor:
    """[C, Q, S, B, ...] (one job per client) -> the stacked layout [Q, S, C, B, ...]."""
    return xb.movedim(0, 2)


@pytest.mark.parametrize("name", methods.names())
def test_stacked_clients_equal_python_loop(name: str) -> None:
    method = methods.get(name)
    model, loss_fn, params, xb, yb = toy_problem(steps=2, slots=method.batches_per_step)
    grad_fn = grad_of(loss_fn)
    hp = {**method.defaults, "local_steps": 2}
    # Different start models per client, as with stale downloads.
    starts = [{k: v + 0.01 * i for k, v in params.items()} for i in range(3)]
    stacked = {k: torch.stack([s[k] for s in starts]) for k in params}
    # The executor's path: batched autograd over the stacked layout [Q, S, C, B, ...].
    batched_grad = make_batched_grad_fn(model)
    batched = method.local_update(
        stacked, client_major_to_stacked(xb), client_major_to_stacked(yb), hp, batched_grad
    )
    personal = method.personalize(
        stacked, xb[:, :, 0].movedim(0, 1), yb[:, :, 0].movedim(0, 1), hp, batched_grad
    )
    # The methods stay pure torch.func code: vmap over clients with the reference grad works.
    in_dims = (0, 0, 0, None, None)
    vmapped = torch.func.vmap(method.local_update, in_dims=in_dims)(stacked, xb, yb, hp, grad_fn)
    vmapped_personal = torch.func.vmap(method.personalize, in_dims=in_dims)(
        stacked, xb[:, :, 0], yb[:, :, 0], hp, grad_fn
    )
    for i, start in enumerate(starts):
        looped = method.local_update(start, xb[i], yb[i], hp, grad_fn)
        looped_personal = method.personalize(start, xb[i, :, 0], yb[i, :, 0], hp, grad_fn)
        for key in params:
            torch.testing.assert_close(batched[key][i], looped[key])
            torch.testing.assert_close(personal[key][i], looped_personal[key])
            torch.testing.assert_close(vmapped[key][i], looped[key])
            torch.testing.assert_close(vmapped_personal[key][i], looped_personal[key])


@pytest.mark.parametrize("name", methods.names())
def test_personalize_with_two_adaptation_batches(name: str) -> None:
    method = methods.get(name)
    _, loss_fn, params, xb, yb = toy_problem()
    hp = dict(method.defaults)
    xa, ya = xb[0, 0, :2], yb[0, 0, :2]  # A = 2 training batches
    adapted = method.personalize(params, xa, ya, hp, grad_of(loss_fn))
    expected = dict(params)
    if name.startswith("persafl_maml"):  # one SGD step of size alpha per batch
        for a in range(2):
            g = autograd_grad(loss_fn, expected, xa[a], ya[a])
            expected = {k: expected[k] - hp["personal_lr"] * g[k] for k in params}
    elif name == "persafl_me":  # K prox steps per batch, always anchored at the model
        lam, lr = hp["moreau_lambda"], hp["personal_lr"]
        for a in range(2):
            for _ in range(hp["inner_steps"]):
                g = autograd_grad(loss_fn, expected, xa[a], ya[a])
                expected = {
                    k: expected[k] - lr * (g[k] + lam * (expected[k] - params[k])) for k in params
                }
    for key in params:
        torch.testing.assert_close(adapted[key], expected[key])
        if name not in ("afl", "local"):
            assert not torch.equal(adapted[key], params[key])


def test_local_update_does_not_modify_its_inputs() -> None:
    model, loss_fn, params, xb, yb = toy_problem(slots=3)
    copies = {k: v.clone() for k, v in params.items()}
    stacked = {k: torch.stack([v, v + 0.1]) for k, v in params.items()}
    stacked_copies = {k: v.clone() for k, v in stacked.items()}
    xs, ys = client_major_to_stacked(xb[:2]), client_major_to_stacked(yb[:2])
    for name in methods.names():
        method = methods.get(name)
        hp = {**method.defaults, "local_steps": 1}
        method.local_update(params, xb[0], yb[0], hp, grad_of(loss_fn))
        method.local_update(stacked, xs, ys, hp, make_batched_grad_fn(model))
    assert all(torch.equal(params[k], copies[k]) for k in params)
    assert all(torch.equal(stacked[k], stacked_copies[k]) for k in stacked)


# ---------------------------------------------------------------- registry


def test_registry_contents_and_defaults() -> None:
    assert methods.names() == ["afl", "persafl_maml_fo", "persafl_maml_hf", "persafl_me", "local"]
    expected = {
        "afl": (1, 1, False),
        "persafl_maml_fo": (2, 2, True),
        "persafl_maml_hf": (3, 4, True),
        "persafl_me": (1, 5, True),
        "local": (1, 1, True),
    }
    for name, (batches, grads, personalized) in expected.items():
        method = methods.get(name)
        assert method.name == name
        assert method.batches_per_step == batches
        assert method.grads_per_step(method.defaults) == grads
        assert method.personalized is personalized
        assert set(method.defaults) <= methods.HP_NAMES
        for key in ("local_steps", "batch_size", "local_lr", "server_lr", "eval_adapt_steps"):
            assert key in method.defaults
    me_defaults = methods.get("persafl_me").defaults
    assert (me_defaults["moreau_lambda"], me_defaults["inner_steps"]) == (15.0, 5)
    assert me_defaults["personal_lr"] == 0.1 and me_defaults["weight_decay"] == 0.0
    assert methods.get("persafl_maml_hf").defaults["hf_delta"] == 1e-3
    assert methods.get("persafl_me").grads_per_step({"inner_steps": 9}) == 9
    methods.get("afl").defaults["local_lr"] = 99.0  # a caller's edit stays its own
    assert methods.get("afl").defaults["local_lr"] == 0.005


def test_unknown_method_and_hyperparameter_errors() -> None:
    with pytest.raises(ValueError, match="known methods: afl, persafl_maml_fo"):
        methods.get("fedprox")
    with pytest.raises(ValueError, match="learning_rate"):
        resolve_hp(methods.get("afl"), {"learning_rate": 0.1})
    hp = resolve_hp(methods.get("afl"), {"local_lr": 0.1, "moreau_lambda": 3.0})
    assert hp["local_lr"] == 0.1 and hp["batch_size"] == 20


def test_local_steps_must_match_batches() -> None:
    with pytest.raises(ValueError, match="local_steps=3"):
        check_local_steps(torch.zeros(2, 1, 4, 6), {"local_steps": 3})
    assert check_local_steps(torch.zeros(2, 1, 4, 6), {"local_steps": 2}) == 2
