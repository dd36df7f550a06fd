"""Evaluation stacks: the plan's invariants, and evaluation in size-sorted stacks equals one
stack of every client (the layout before) and a client-by-client reference."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from persafl import methods
from persafl.data import load_dataset
from persafl.engine import eval_stacks
from persafl.engine.batches import eval_indices, gather
from persafl.engine.evaluate import Evaluator
from persafl.models import build_model, init_params
from persafl.partition import partition_dataset


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 500), min_size=1, max_size=60),
    per_sample=st.integers(1, 50),
    max_elements=st.integers(1, 200_000),
    max_waste=st.floats(1.0, 3.0),
)
def test_plan_covers_every_client_once_within_its_bounds(
    counts, per_sample, max_elements, max_waste
):
    counts = np.array(counts)
    stacks = eval_stacks.plan_stacks(counts, per_sample, max_elements, max_waste)
    assert sorted(np.concatenate(stacks).tolist()) == list(range(len(counts)))
    for stack in stacks:
        sizes = np.maximum(counts[stack], 1)
        assert (np.diff(counts[stack]) <= 0).all()  # largest first: the first sets the length
        length = eval_stacks.padded_length(counts, stack)
        assert length == sizes[0]
        if len(stack) > 1:  # a lone client may exceed the bounds; a joined one may not
            assert len(stack) * length <= max_waste * sizes.sum() + 1e-9
            assert len(stack) * length * per_sample <= max_elements


def test_plan_on_skewed_sizes_pads_little_and_equal_sizes_make_one_stack():
    rng = np.random.default_rng(0)
    counts = np.minimum(750, np.floor(rng.lognormal(4, 1, 100))).astype(int)
    stacks = eval_stacks.plan_stacks(counts, 100, 1 << 26)
    padded = sum(len(s) * eval_stacks.padded_length(counts, s) for s in stacks)
    assert padded <= 1.25 * np.maximum(counts, 1).sum()
    assert len(counts) * counts.max() > 3 * padded  # index order would pad 3x more here
    assert len(eval_stacks.plan_stacks(np.full(20, 875), 900, 1 << 26)) == 1
    with pytest.raises(ValueError, match="max_waste"):
        eval_stacks.plan_stacks(counts, 1, 10, 0.5)


@pytest.fixture(scope="module")
def skewed():
    """12 Synthetic clients of very different sizes (6 to about 150 test samples)."""
    torch.set_num_threads(1)
    data = load_dataset(
        "synthetic", "unused", alpha=0.5, beta=0.5, num_clients=12, seed=3, max_client_samples=600
    )
    partition = partition_dataset(data.y.numpy(), data.groups, "natural", 12, seed=0)
    model = build_model("mlp", tuple(data.x.shape[1:]), data.num_classes, hidden=16)
    return data, partition, model


def _evaluator(skewed, name):
    data, partition, model = skewed
    method = methods.get(name)
    hp = methods.resolve_hp(method, {"batch_size": 5, "personal_lr": 0.05})
    return Evaluator(model, method, hp, data.x, data.y, partition.train, partition.test, 7), hp


@pytest.mark.parametrize("name", ["afl", "persafl_maml_fo", "persafl_me", "local"])
def test_stacked_evaluation_equals_one_stack_of_all_clients(skewed, monkeypatch, name):
    data, partition, model = skewed
    params = init_params(model, 0)
    own = {k: torch.stack([v + 0.01 * c for c in range(12)]) for k, v in params.items()}
    args = (5, None, own) if name == "local" else (5, params)
    stacked, _ = _evaluator(skewed, name)
    assert len(stacked.tests.stacks) > 1
    monkeypatch.setattr(eval_stacks, "MAX_WASTE", float("inf"))
    single, _ = _evaluator(skewed, name)
    assert len(single.tests.stacks) == 1
    a, b = stacked.evaluate(*args), single.evaluate(*args)
    np.testing.assert_array_equal(a.global_acc, b.global_acc)  # counts: exact
    np.testing.assert_array_equal(a.personal_acc, b.personal_acc)
    for key, value in a.metrics.items():  # losses: to float rounding
        assert value == pytest.approx(b.metrics[key], rel=1e-5, abs=1e-7, nan_ok=True), key
    for key in ("inner_residual_ca", "inner_curvature_max"):  # same adaptation chunks: exact
        np.testing.assert_array_equal(a.metrics[key], b.metrics[key])


def test_stacked_personalized_accuracy_equals_a_client_by_client_reference(skewed):
    data, partition, model = skewed
    params = init_params(model, 1)
    evaluator, hp = _evaluator(skewed, "persafl_maml_fo")
    result = evaluator.evaluate(9, params)
    grad_fn = evaluator.grad_fn
    for client in range(12):
        index = eval_indices(7, 9, client, partition.train[client], hp["eval_adapt_steps"], 5)
        xb, yb = gather(data.x, data.y, index[:, None, :])
        one = {k: v.unsqueeze(0) for k, v in params.items()}
        adapted = methods.get("persafl_maml_fo").personalize(one, xb, yb, hp, grad_fn)
        xt, yt = gather(data.x, data.y, partition.test[client])
        logits = torch.func.functional_call(
            model, {k: v[0] for k, v in adapted.items()}, (xt,)
        )
        expected = float((logits.argmax(-1) == yt).double().mean())
        assert result.personal_acc[client] == pytest.approx(expected, abs=1e-12), client
