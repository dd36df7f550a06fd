"""Batches gathered step by step (StepBatches) hold gather's values and train to the same bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persafl import methods
from persafl.engine.batches import StepBatches, gather, gather_steps
from persafl.models import build_model, make_batched_grad_fn

METHODS = ("afl", "persafl_maml_fo", "persafl_maml_hf", "persafl_me", "local")


def data(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=generator)
    return x, torch.randint(0, 5, (n,), generator=generator)


def test_step_batches_index_like_the_gathered_tensor():
    x, y = data()
    indices = np.random.default_rng(1).integers(0, len(y), size=(4, 3, 5, 7))  # [Q, S, C, B]
    xb, yb = gather(x, y, indices)
    xs, ys = gather_steps(x, y, indices)
    assert isinstance(xs, StepBatches) and xs.shape == xb.shape and ys.shape == yb.shape
    assert len(xs) == 4
    for q in range(4):
        assert torch.equal(xs[q], xb[q]) and torch.equal(ys[q], yb[q])
        for s in range(3):
            assert torch.equal(xs[q, s], xb[q, s]) and torch.equal(ys[q, s], yb[q, s])
    # a different step's rows are different data (the index really selects)
    assert not torch.equal(xs[0, 0], xs[1, 0])


@pytest.mark.parametrize("name", METHODS)
def test_a_stacked_local_update_is_bit_for_bit_the_same(name):
    method = methods.get(name)
    hp = methods.resolve_hp(
        method,
        {"local_steps": 6, "batch_size": 8, "local_lr": 0.05, "server_lr": 1.0,
         "personal_lr": 0.05},
    )  # fmt: skip
    model = build_model("mlp", (1, 6, 6), 5)
    x, y = data()
    clients = 4
    start = {
        k: v.detach().unsqueeze(0).repeat(clients, *([1] * v.dim())) + 0.01 * i
        for i, (k, v) in enumerate(model.named_parameters())
    }
    shape = (hp["local_steps"], method.batches_per_step, clients, hp["batch_size"])
    indices = np.random.default_rng(2).integers(0, len(y), size=shape)
    grad_fn = make_batched_grad_fn(model)
    eager = method.local_update(start, *gather(x, y, indices), hp, grad_fn)
    lazy = method.local_update(start, *gather_steps(x, y, indices), hp, grad_fn)
    assert eager.keys() == lazy.keys()
    for key in eager:
        assert torch.equal(eager[key], lazy[key]), key
    moved = any(not torch.equal(eager[k], start[k]) for k in eager)
    assert moved  # the update did train


@pytest.mark.parametrize("name", ["afl", "persafl_me"])
def test_the_engine_gives_the_same_bits_with_either_gather(monkeypatch, name):
    from persafl.data import Dataset
    from persafl.engine import jobs
    from persafl.engine.executor import run
    from persafl.engine.schedule import ScheduleConfig, make_trace
    from persafl.partition import Partition

    x, y = data(400)
    parts = np.array_split(np.random.default_rng(3).permutation(400), 5)
    partition = Partition([p[:60] for p in parts], [p[60:] for p in parts], 5, "test", {})
    dataset = Dataset("tiny", x, y, 5, None)
    method = methods.get(name)
    hp = methods.resolve_hp(
        method, {"local_steps": 3, "batch_size": 8, "local_lr": 0.05, "server_lr": 1.0}
    )
    model = build_model("mlp", (1, 6, 6), 5)
    trace = make_trace(ScheduleConfig("clock", 4, 30), 5, seed=0)
    results = []
    for threshold in (0, 10**12):  # every chunk per step / every chunk up front
        monkeypatch.setattr(jobs, "STEP_GATHER_ELEMENTS", threshold)
        result = run(trace, method, hp, model, dataset, partition, 0, backend="vectorized")
        assert result.status == "completed"
        results.append(result)
    for key in results[0].server:
        assert torch.equal(results[0].server[key], results[1].server[key]), key
    for a, b in zip(results[0].rows, results[1].rows, strict=True):
        keys = [k for k in a if "second" not in k]
        assert keys == [k for k in b if "second" not in k]
        np.testing.assert_array_equal([a[k] for k in keys], [b[k] for k in keys])
