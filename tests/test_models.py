"""Models: shapes, deterministic init, functional loss/accuracy, batched forward/gradients."""

from __future__ import annotations

import pytest
import torch

from persafl.models import (
    accuracy,
    activations_per_sample,
    build_model,
    init_params,
    loss_and_accuracy,
    make_autograd_grad_fn,
    make_batched_forward,
    make_batched_grad_fn,
    make_grad_fn,
    make_loss_fn,
    num_parameters,
    predict,
)

SHAPES = [(1, 28, 28), (3, 32, 32), (60,)]


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
@pytest.mark.parametrize("shape", SHAPES)
def test_output_shapes(name: str, shape: tuple[int, ...]) -> None:
    if name == "cnn" and len(shape) != 3:
        with pytest.raises(ValueError, match="image input shape"):
            build_model(name, shape, 10)
        return
    model = build_model(name, shape, 10)
    params = init_params(model, seed=0)
    logits = predict(model, params, torch.randn(5, *shape))
    assert logits.shape == (5, 10)
    assert torch.isfinite(logits).all()


def test_architecture_sizes() -> None:
    # pFedMe's models: logistic 784->10, MLP 784-100-10, Synthetic MLP 60-20-10.
    assert num_parameters(init_params(build_model("logistic", (1, 28, 28), 10), 0)) == 7850
    mlp = build_model("mlp", (1, 28, 28), 10)
    assert num_parameters(init_params(mlp, 0)) == 784 * 100 + 100 + 100 * 10 + 10
    small = build_model("mlp", (60,), 10, hidden=20)
    assert num_parameters(init_params(small, 0)) == 60 * 20 + 20 + 20 * 10 + 10
    # FedAvgCNN: flattened conv features 64*4*4 on MNIST and 64*5*5 on CIFAR-10.
    mnist = init_params(build_model("cnn", (1, 28, 28), 10), 0)
    cifar = init_params(build_model("cnn", (3, 32, 32), 10), 0)
    assert mnist["7.weight"].shape == (512, 1024)
    assert cifar["7.weight"].shape == (512, 1600)
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for m in build_model("cnn", (3, 32, 32), 10).modules()
    )


def test_init_deterministic_in_seed() -> None:
    model = build_model("mlp", (60,), 10, hidden=20)
    first, again, other = init_params(model, 3), init_params(model, 3), init_params(model, 4)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not any(torch.equal(first[k], other[k]) for k in first)
    # Independent of the global torch RNG and of model construction.
    torch.manual_seed(123)
    rebuilt = build_model("mlp", (60,), 10, hidden=20)
    assert all(torch.equal(first[k], init_params(rebuilt, 3)[k]) for k in first)


def test_init_scale_and_global_rng_untouched() -> None:
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    model = build_model("mlp", (1, 28, 28), 10)
    assert torch.equal(before, torch.random.get_rng_state())
    params = init_params(model, 0)
    bound = 1.0 / 784**0.5  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's default
    assert params["1.weight"].abs().max() <= bound
    assert params["1.weight"].abs().max() > 0.9 * bound
    assert params["1.weight"].dtype == torch.float32
    # The module's own parameters hold the seed-0 init, so either path is deterministic.
    assert torch.equal(dict(model.named_parameters())["1.weight"], params["1.weight"])


def test_loss_and_accuracy_under_vmap_equal_loop() -> None:
    model = build_model("cnn", (1, 28, 28), 10)
    loss_fn = make_loss_fn(model)
    stacked = {
        k: torch.stack([init_params(model, s)[k] for s in range(3)]) for k in init_params(model, 0)
    }
    x, y = torch.randn(3, 6, 1, 28, 28), torch.randint(0, 10, (3, 6))

    def both(p, xs, ys):
        return loss_and_accuracy(model, p, xs, ys)

    losses, accs = torch.func.vmap(both)(stacked, x, y)
    accs_only = torch.func.vmap(lambda p, xs, ys: accuracy(model, p, xs, ys))(stacked, x, y)
    for c in range(3):
        params = {k: v[c] for k, v in stacked.items()}
        torch.testing.assert_close(losses[c], loss_fn(params, x[c], y[c]))
        expected = (predict(model, params, x[c]).argmax(-1) == y[c]).float().mean()
        torch.testing.assert_close(accs[c], expected)
        torch.testing.assert_close(accs_only[c], expected)


@pytest.mark.parametrize(
    ("name", "shape", "kw"),
    [
        ("logistic", (60,), {}),
        ("mlp", (1, 12, 12), {"hidden": 9}),
        ("mlp", (60,), {"hidden": 20, "activation": "softplus"}),
        ("cnn", (1, 28, 28), {"fc_hidden": 16}),
        ("cnn", (3, 20, 18), {"fc_hidden": 8, "activation": "tanh"}),
    ],
)
def test_batched_gradients_equal_per_client_torch_func_grad(name, shape, kw, device) -> None:
    """3 clients with different params and data: the batched forward and gradient (on
    ``device``) are the per-client ``functional_call`` logits and ``torch.func.grad``
    gradients (on the CPU), client by client."""
    model = build_model(name, shape, 7, **kw).double()
    per_client = [init_params(model, seed, dtype=torch.float64) for seed in range(3)]
    stacked = {k: torch.stack([p[k] for p in per_client]) for k in per_client[0]}
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 6, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (3, 6), generator=gen)
    on_device = {k: v.to(device) for k, v in stacked.items()}
    logits = make_batched_forward(model)(on_device, x.to(device)).cpu()
    grads = make_batched_grad_fn(model)(on_device, x.to(device), y.to(device))
    grads = {k: v.cpu() for k, v in grads.items()}
    reference = make_grad_fn(model)
    assert logits.shape == (3, 6, 7)
    assert grads.keys() == stacked.keys()
    for c, params in enumerate(per_client):
        torch.testing.assert_close(logits[c], predict(model, params, x[c]), rtol=0, atol=1e-12)
        expected = reference(params, x[c], y[c])
        for key in params:
            assert grads[key].shape == stacked[key].shape
            torch.testing.assert_close(grads[key][c], expected[key], rtol=0, atol=1e-12)
            assert expected[key].abs().max() > 0  # a gradient that could differ
    # The clients really differ: client 0's gradient is not client 1's.
    first = next(iter(stacked))
    assert not torch.allclose(grads[first][0], grads[first][1])


@pytest.mark.parametrize(
    ("name", "shape", "kw"),
    [
        ("logistic", (60,), {}),
        ("mlp", (1, 28, 28), {"hidden": 100}),
        ("mlp", (60,), {"hidden": 20, "activation": "tanh"}),
        ("cnn", (1, 28, 28), {"fc_hidden": 16}),
    ],
)
def test_autograd_gradient_equals_torch_func_grad_bit_for_bit(name, shape, kw) -> None:
    """The baselines' gradient (torch.autograd.grad) is the reference torch.func.grad's, bit
    for bit in float32, called under no_grad too, leaving its inputs as they were."""
    model = build_model(name, shape, 10, **kw)
    reference, plain = make_grad_fn(model), make_autograd_grad_fn(model)
    gen = torch.Generator().manual_seed(3)
    for seed in range(3):
        params = init_params(model, seed)
        copies = {k: v.clone() for k, v in params.items()}
        x = torch.randn(20, *shape, generator=gen)
        y = torch.randint(0, 10, (20,), generator=gen)
        expected = reference(params, x, y)
        with torch.no_grad():
            got = plain(params, x, y)
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), key
            assert not got[key].requires_grad and expected[key].abs().max() > 0
        assert all(torch.equal(v, copies[k]) and not v.requires_grad for k, v in params.items())


def test_batched_gradient_does_not_track_or_modify_inputs() -> None:
    model = build_model("mlp", (10,), 4, hidden=5)
    stacked = {k: v.expand(2, *v.shape).clone() for k, v in init_params(model, 0).items()}
    copies = {k: v.clone() for k, v in stacked.items()}
    with torch.no_grad():  # evaluation calls it under no_grad: it must still differentiate
        grads = make_batched_grad_fn(model)(
            stacked, torch.randn(2, 3, 10), torch.zeros(2, 3).long()
        )
    assert all(not g.requires_grad for g in grads.values())
    assert all(not v.requires_grad and torch.equal(v, copies[k]) for k, v in stacked.items())
    assert activations_per_sample(model, (10,)) == 10 + 5 + 5 + 4  # flatten, fc, relu, fc


def test_activation_option() -> None:
    for name, shape in (("mlp", (60,)), ("cnn", (1, 28, 28))):
        modules = list(build_model(name, shape, 10, activation="softplus").modules())
        assert any(isinstance(m, torch.nn.Softplus) for m in modules)
        assert not any(isinstance(m, torch.nn.ReLU) for m in modules)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        build_model("mlp", (60,), 10, activation="gelu")


def test_unknown_model_and_bad_params() -> None:
    with pytest.raises(ValueError, match="known models: logistic, mlp, cnn"):
        build_model("resnet", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="bad parameters"):
        build_model("logistic", (60,), 10, hidden=5)
