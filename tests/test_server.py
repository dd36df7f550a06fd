"""The server step (engine/server.py) and the synchronous base-paper protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persafl import methods, rng
from persafl.data import load_dataset
from persafl.engine.executor import run
from persafl.engine.schedule import ScheduleConfig, make_trace
from persafl.engine.server import (
    SERVER_DEFAULTS,
    ServerRule,
    aggregation_weights,
    server_update,
    staleness_weight,
)
from persafl.models import build_model, init_params, make_grad_fn
from persafl.partition import partition_dataset

TAUS = np.arange(0, 40)


def test_constant_weight_is_one():
    assert np.array_equal(staleness_weight("constant", TAUS), np.ones(len(TAUS)))


@pytest.mark.parametrize("a", [0.1, 0.5, 1.0, 2.0])
def test_polynomial_weight_is_one_plus_tau_to_minus_a(a):
    for tau in TAUS.tolist():
        assert staleness_weight("polynomial", tau, a=a) == pytest.approx((tau + 1.0) ** -a)


@pytest.mark.parametrize(("a", "b"), [(0.5, 4), (10.0, 4), (0.5, 10), (1.0, 0)])
def test_hinge_weight_matches_fedasync(a, b):
    """FedAsync: s = 1 for tau <= b, 1 / (a (tau - b) + 1) beyond: continuous at b."""
    for tau in TAUS.tolist():
        expected = 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)
        assert staleness_weight("hinge", tau, a=a, b=b) == pytest.approx(expected)
    # the "+ 1": just past b the weight is still about 1, not 1 / (a * small) (huge)
    assert staleness_weight("hinge", b + 1e-9, a=a, b=b) == pytest.approx(1.0)
    assert staleness_weight("hinge", b + 1, a=a, b=b) == pytest.approx(1.0 / (a + 1.0))


def test_staleness_weights_are_vectorized_and_checked():
    assert np.allclose(
        staleness_weight("polynomial", TAUS, a=0.5),
        [staleness_weight("polynomial", t) for t in TAUS],
    )
    with pytest.raises(ValueError, match="staleness_weight"):
        staleness_weight("exponential", 1)
    with pytest.raises(ValueError, match=">= 0"):
        staleness_weight("hinge", -1)


def test_aggregation_weights():
    assert np.allclose(aggregation_weights("uniform", [5, 10, 85]), [1 / 3] * 3)
    assert np.allclose(aggregation_weights("samples", [5, 10, 85]), [0.05, 0.10, 0.85])
    with pytest.raises(ValueError, match="aggregation"):
        aggregation_weights("median", [1])


def test_server_update_is_the_weighted_delta_step():
    gen = torch.Generator().manual_seed(0)
    current = {"w": torch.randn(3, 2, generator=gen), "b": torch.randn(2, generator=gen)}
    deltas = [{k: torch.randn(v.shape, generator=gen) for k, v in current.items()} for _ in "abc"]
    weights = [0.2, 0.5, 0.3]
    new = server_update(current, deltas, weights, 0.7)
    for k in current:
        expected = current[k] - 0.7 * sum(w * d[k] for w, d in zip(weights, deltas, strict=True))
        assert torch.allclose(new[k], expected, atol=1e-6)
    uniform = server_update(current, deltas, [1 / 3] * 3, 1.0)
    for k in current:  # the plain mean, exactly as the engine always computed it
        assert torch.equal(uniform[k], current[k] - torch.stack([d[k] for d in deltas]).mean(0))


@pytest.mark.parametrize("server_lr", [1.0, 0.3])
def test_one_uniform_delta_is_the_plain_step_bit_for_bit(server_lr):
    """The one-arrival path (every tensor in one _foreach call; the product skipped at
    server_lr 1, where it is exact) gives the bits of ``value - server_lr * delta``."""
    gen = torch.Generator().manual_seed(1)
    current = {"w": torch.randn(5, 7, generator=gen), "b": torch.randn(7, generator=gen)}
    delta = {k: torch.randn(v.shape, generator=gen) * 1e-3 for k, v in current.items()}
    new = server_update(current, [delta], [1.0], server_lr)
    assert list(new) == list(current)
    for k in current:
        assert torch.equal(new[k], current[k] - server_lr * delta[k])
        assert new[k] is not current[k]  # a new model: the old version stays intact
    rule = ServerRule.from_hp({"server_lr": server_lr}, [4, 9, 2])
    for clients, staleness in (([2], [0]), ([0, 1, 1], [3, 0, 7])):
        weights = rule.weights(clients, staleness)  # uniform x constant: 1/K each, exactly
        general = aggregation_weights("uniform", [9] * len(clients)) * staleness_weight(
            "constant", np.asarray(staleness)
        )
        assert np.array_equal(weights, general)
    with pytest.raises(ValueError, match="at least one"):
        rule.weights([], [])


def test_server_rule_combines_sample_and_staleness_weights():
    hp = {"server_lr": 0.5, "aggregation": "samples", "staleness_weight": "polynomial",
          "staleness_a": 1.0}  # fmt: skip
    rule = ServerRule.from_hp(hp, client_sizes=[10, 30, 60])
    weights = rule.weights(clients=[1, 2], staleness=[0, 3])
    assert np.allclose(weights, [30 / 90 * 1.0, 60 / 90 * 0.25])
    assert ServerRule.from_hp({}, [1]).server_lr == SERVER_DEFAULTS["server_lr"] == 1.0


def test_protocol_defaults_are_explicit_in_every_resolved_method():
    for name in methods.names():
        hp = methods.resolve_hp(methods.get(name))
        assert hp["adapt_on"] == "train"  # never test by default
        assert hp["aggregation"] == "uniform" and hp["staleness_weight"] == "constant"
        assert hp["server_lr"] == 1.0
    with pytest.raises(ValueError, match="staleness_weight"):
        methods.resolve_hp(methods.get("afl"), {"staleness_weight": "exp"})


# ----- the synchronous protocol against a hand-written loop -----


@pytest.fixture(scope="module")
def problem():
    torch.set_num_threads(1)
    data = load_dataset(
        "synthetic", "unused", alpha=0.5, beta=0.5, num_clients=6, seed=0, max_client_samples=100
    )
    partition = partition_dataset(data.y.numpy(), data.groups, "natural", 6, seed=0)
    model = build_model("mlp", tuple(data.x.shape[1:]), data.num_classes, hidden=8)
    return data, partition, model


def _batches(data, train: np.ndarray, seed: int, k: int, slot: int, shape: tuple):
    """The job's batches by the engine's batch rule (itself checked against a hand-written
    rule in tests/test_executor.py): this test is about the server step, not the batches."""
    from persafl.engine.batches import job_indices

    steps, per_step, batch = shape
    index = torch.from_numpy(job_indices(seed, k, slot, train, steps, per_step, batch))
    return data.x[index], data.y[index]


@pytest.mark.parametrize("backend", ["sequential", "vectorized"])
@pytest.mark.parametrize("name", ["afl", "persafl_me"])
def test_synchronous_protocol_equals_a_hand_written_loop(problem, backend, name):
    """pFedMe/FedAvg rounds: S of n clients sampled per round, all from x_t; the server takes
    x <- (1 - beta) x + beta sum_i n_i / n_S * theta_i (sample-weighted, beta mixing)."""
    data, partition, model = problem
    seed, rounds, per_round, beta = 2, 5, 3, 0.8
    method = methods.get(name)
    hp = methods.resolve_hp(
        method,
        {"local_steps": 2, "batch_size": 5, "inner_steps": 2, "server_lr": beta,
         "aggregation": "samples"},
    )  # fmt: skip
    schedule = {"model": "barrier", "staleness_bound": 0, "num_updates": rounds,
                "clients_per_round": per_round}  # fmt: skip
    trace = make_trace(ScheduleConfig.from_dict(schedule), 6, seed)
    result = run(trace, method, hp, model, data, partition, seed, backend, 100)

    grad_fn = make_grad_fn(model)
    sizes = [len(t) for t in partition.train]
    x = init_params(model, seed)
    for t in range(rounds):
        chosen = sorted(
            int(c) for c in rng.generator(seed, "round", t).choice(6, per_round, replace=False)
        )
        assert trace.updates[t].clients == tuple(chosen)
        total = sum(sizes[c] for c in chosen)
        models = []
        for slot, client in enumerate(chosen):
            shape = (2, method.batches_per_step, 5)
            xb, yb = _batches(data, partition.train[client], seed, t, slot, shape)
            models.append((sizes[client] / total, method.local_update(x, xb, yb, hp, grad_fn)))
        x = {p: (1 - beta) * x[p] + beta * sum(w * m[p] for w, m in models) for p in x}
    assert result.updates_applied == rounds
    for p in x:
        assert torch.allclose(result.server[p], x[p], atol=1e-5), p


def test_train_all_counts_every_users_job_but_aggregates_the_sampled():
    base = {"model": "barrier", "staleness_bound": 0, "num_updates": 7, "clients_per_round": 2}
    sampled = make_trace(ScheduleConfig.from_dict(base), 10, 0)
    everyone = make_trace(ScheduleConfig.from_dict({**base, "train_all": True}), 10, 0)
    assert [u.clients for u in sampled.updates] == [u.clients for u in everyone.updates]
    assert sampled.jobs_started == 7 * 2 and everyone.jobs_started == 7 * 10
    with pytest.raises(ValueError, match="train_all"):
        ScheduleConfig.from_dict({**base, "model": "clock", "clients_per_round": None,
                                  "train_all": True})  # fmt: skip
