"""Test sets for evaluation: the server model's forward pass over the real test rows, spread
back into the padded layout, gives the padded forward pass's logits bit for bit; runs with the
same test indices share one gathered copy; the metrics do not depend on how the rows are cut
into forward passes or whether the samples are kept between evaluations."""

import numpy as np
import pytest
import torch

from persafl import methods
from persafl.engine import evaluate, test_sets
from persafl.engine.evaluate import Evaluator
from persafl.models import activations_per_sample, build_model, init_params, predict


@pytest.fixture(scope="module")
def setup():
    """A 784-100-10 MLP and 9 clients of skewed test sizes, one of them without test data."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (3000,), generator=gen)
    rng = np.random.default_rng(1)
    order = rng.permutation(3000)
    sizes = [400, 390, 120, 97, 95, 40, 7, 1, 0]
    test, start = [], 0
    for size in sizes:
        test.append(order[start : start + size])
        start += size
    train = [order[start + 50 * c : start + 50 * (c + 1)] for c in range(len(sizes))]
    model = build_model("mlp", (1, 28, 28), 10, hidden=100)
    return x, y, train, test, model


def _sets(setup):
    x, y, _, test, model = setup
    return test_sets.TestSets(x, y, test, 784 + activations_per_sample(model, (1, 28, 28)))


def test_spread_rows_forward_equals_the_padded_forward_bit_for_bit(setup):
    sets, model = _sets(setup), setup[4]
    assert len(sets.stacks) > 1
    assert any(isinstance(s, torch.Tensor) for s in sets.source)  # some stack is padded
    kept = [m.clone() for m, s in zip(sets.mask, sets.source, strict=True) if s is not None]
    for k in kept:
        k[:, 0] = True  # real samples, and each client's first position
    rows = sets.rows()
    assert len(rows) == sum(int(k.sum()) for k in kept)
    large = [i for i, source in enumerate(sets.source) if source is not None]
    assert 0 < len(large) < len(sets.stacks)  # small stacks keep their own forward pass
    for seed in range(3):
        params = init_params(model, seed)
        for pieces in (1, 3, 11):  # however the rows are cut into forward passes (of >= 8)
            logits = torch.cat([predict(model, params, p) for p in rows.tensor_split(pieces)])
            for stack in large:
                xt = sets.padded(stack)
                reference = predict(model, params, xt.flatten(0, 1)).unflatten(0, xt.shape[:2])
                assert torch.equal(sets.spread(stack, logits), reference), (seed, pieces, stack)


def test_a_client_without_test_samples_keeps_its_one_padded_row(setup, monkeypatch):
    monkeypatch.setattr(test_sets, "SMALL_ROWS", 0)  # every stack in rows()
    sets = _sets(setup)
    empty = 8  # sizes[8] == 0
    stack = next(i for i, ids in enumerate(sets.stacks) if empty in ids.tolist())
    row = sets.stacks[stack].tolist().index(empty)
    assert not bool(sets.mask[stack][row].any())
    assert sets.index[stack][row, 0] == 0  # data-set index 0, as the padded layout had it
    source = sets.source[stack]
    length = sets.index[stack].shape[1]
    position = (
        source.start + row * length
        if isinstance(source, slice)
        else int(source.view(sets.index[stack].shape)[row, 0])
    )
    assert sets.row_index[position] == 0  # its pad is one of the rows


def test_server_statistics_equal_the_padded_forward_pass_of_every_stack(setup):
    """The layout before: each stack's padded samples through the server model at once."""
    x, y, train, test, model = setup
    method = methods.get("afl")
    evaluator = Evaluator(model, method, methods.resolve_hp(method, {}), x, y, train, test, 2)
    sets = evaluator.tests
    for seed in range(3):
        params = init_params(model, seed)
        expected = []
        for stack in range(len(sets.stacks)):
            xt, yt = sets.padded(stack), sets.labels[stack]
            logits = predict(model, params, xt.flatten(0, 1)).unflatten(0, xt.shape[:2])
            mask = sets.mask[stack].float()
            losses = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), yt.flatten(), reduction="none"
            ).view_as(mask)
            correct = (logits.argmax(-1) == yt).float()
            expected.append(torch.stack([(correct * mask).sum(1), (losses * mask).sum(1)], 1))
        reference = evaluator._means(expected)
        np.testing.assert_array_equal(evaluator._stats(params, stacked=False), reference)


def test_runs_with_the_same_test_indices_share_one_copy(setup):
    x, y, _, test, model = setup
    cache: dict = {}
    a = test_sets.shared(cache, x, y, test, 10)
    b = test_sets.shared(cache, x, y, [t.copy() for t in test], 10)
    c = test_sets.shared(cache, x, y, [*test[:-1], test[0][:3]], 10)
    assert a is b and a is not c and len(cache) == 2
    assert test_sets.shared(None, x, y, test, 10) is not a  # no cache: a private copy
    assert a.rows() is b.rows()  # gathered once


@pytest.mark.parametrize("name", ["afl", "persafl_maml_fo", "local"])
def test_metrics_do_not_depend_on_forward_pieces_or_on_keeping_the_samples(
    setup, monkeypatch, name
):
    x, y, train, test, model = setup
    method = methods.get(name)
    hp = methods.resolve_hp(method, {"batch_size": 5})
    params = init_params(model, 4)
    own = {k: torch.stack([v * (1 + 0.1 * c) for c in range(len(test))]) for k, v in params.items()}
    args = (3, None, own) if name == "local" else (3, params)

    def run():
        return Evaluator(model, method, hp, x, y, train, test, 2).evaluate(*args)

    reference = run()
    monkeypatch.setattr(evaluate, "FORWARD_ROWS", 13)
    monkeypatch.setattr(test_sets, "CACHE_ELEMENTS", 0)  # gathered anew every time
    other = run()
    for key, value in reference.metrics.items():
        np.testing.assert_array_equal(value, other.metrics[key], err_msg=key)
    np.testing.assert_array_equal(reference.global_acc, other.global_acc)
    np.testing.assert_array_equal(reference.personal_acc, other.personal_acc)
