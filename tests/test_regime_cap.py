"""The per-client train cap (``max_train_samples``) and the label-masked baseline (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persafl.baselines import masked_correct
from persafl.partition import cap_train, partition_dataset
from persafl.rng import generator


def _labels(seed: int = 0, n: int = 6000, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n)


@pytest.mark.parametrize(
    "scheme, params",
    [
        ("pathological", {"classes_per_client": 2}),
        ("dirichlet", {"dirichlet_alpha": 0.1}),
        ("dirichlet", {"dirichlet_alpha": 0.5}),
    ],
)
@pytest.mark.parametrize("cap", [10, 30, 100])
def test_cap_keeps_the_class_mix_and_the_test_split(scheme, params, cap):
    labels = _labels()
    full = partition_dataset(labels, None, scheme, 12, seed=3, **params)
    capped = partition_dataset(labels, None, scheme, 12, seed=3, max_train_samples=cap, **params)
    assert capped.params["max_train_samples"] == cap
    for client in range(12):
        # the test split stays whole, the train split is a subset of at most `cap` samples
        np.testing.assert_array_equal(capped.test[client], full.test[client])
        tr, tr_full = capped.train[client], full.train[client]
        assert set(tr) <= set(tr_full)
        assert len(tr) == min(cap, len(tr_full))
        # stratified: every class within one sample of its share of the cap
        counts = np.bincount(labels[tr_full], minlength=10)
        kept = np.bincount(labels[tr], minlength=10)
        share = len(tr) * counts / counts.sum()
        assert np.all(np.abs(kept - share) < 1.0 + 1e-9), (client, kept, share)


def test_cap_is_seeded_nested_and_a_no_op_above_the_client_size():
    labels = _labels(1)
    indices = np.flatnonzero(labels < 3)
    small = cap_train(indices, labels, 20, generator(0, "cap", 0))
    again = cap_train(indices, labels, 20, generator(0, "cap", 0))
    large = cap_train(indices, labels, 200, generator(0, "cap", 0))
    other = cap_train(indices, labels, 20, generator(1, "cap", 0))
    np.testing.assert_array_equal(small, again)
    assert not np.array_equal(small, other)
    # each class's kept samples are a prefix of one permutation: a smaller cap keeps a subset
    # wherever its per-class counts are not larger (largest remainders: always here)
    assert set(small) <= set(large)
    np.testing.assert_array_equal(
        cap_train(indices, labels, 10**6, generator(0, "cap", 0)), indices
    )


def test_cap_changes_only_the_train_split_of_the_run_config_partition():
    from persafl.config import resolve_run_config

    schedule = {"model": "delay", "staleness_bound": 0, "num_updates": 1}
    cfg = resolve_run_config(
        {
            "partition": {"scheme": "iid", "num_clients": 3, "max_train_samples": 7},
            "schedule": schedule,
        }
    )
    assert cfg["partition"]["max_train_samples"] == 7
    assert resolve_run_config({"schedule": schedule})["partition"]["max_train_samples"] is None


def test_label_masked_baseline_equals_a_hand_computation():
    # 3 test samples, 4 classes; the client's train labels are {1, 3}.
    logits = torch.tensor(
        [
            [5.0, 1.0, 0.0, 2.0],  # unmasked argmax 0 (not held) -> masked argmax 3
            [0.0, 3.0, 9.0, 1.0],  # unmasked 2 (not held)       -> masked 1
            [0.0, 2.0, 1.0, 2.0],  # tie between 1 and 3         -> masked 1 (smallest)
        ]
    )
    labels = torch.tensor([3, 3, 1])
    allowed = torch.tensor([False, True, False, True])
    correct = masked_correct(logits, labels, allowed)
    # by hand: predictions 3, 1, 1 against labels 3, 3, 1 -> correct, wrong, correct
    assert correct.tolist() == [True, False, True]
    assert float(correct.double().mean()) == pytest.approx(2 / 3)
    # unmasked, the global model gets 1 of 3 (predictions 0, 2, 1)
    assert (logits.argmax(-1) == labels).tolist() == [False, False, True]


def test_client_baselines_on_a_zero_model():
    """All logits equal: the masked model predicts the client's smallest train label, the
    unmasked one label 0; fine-tuning with step size zero leaves the model as it is."""
    from persafl.baselines import client_baselines
    from persafl.models import build_model

    model = build_model("logistic", (4,), 5)
    zero = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    x = torch.randn(12, 4)
    y = torch.tensor([2, 3, 2, 3, 2, 3, 0, 1, 0, 1, 4, 4])
    train = [np.array([0, 1, 2, 3]), np.array([6, 7])]
    test = [np.array([4, 5, 10]), np.array([8, 9, 11])]
    hp = {"batch_size": 2, "local_lr": 0.1, "personal_lr": 0.0, "inner_steps": 2}
    out = client_baselines(model, hp, zero, x, y, train, test, 5, seed=0, update_index=3)
    # client 0 holds {2, 3}: predicts 2 on test labels 2, 3, 4 -> 1/3; client 1 holds {0, 1}:
    # predicts 0 on test labels 0, 1, 4 -> 1/3
    np.testing.assert_allclose(out["masked_acc"], [1 / 3, 1 / 3])
    # unmasked (fine-tuned by 0): label 0 everywhere -> 0 and 1/3
    np.testing.assert_allclose(out["finetune_acc"], [0.0, 1 / 3])


def test_client_baselines_run_on_the_cnn():
    """The CIFAR-10 entries of config/regime.yaml: the baselines work for convolutions too."""
    from persafl.baselines import client_baselines
    from persafl.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", (3, 32, 32), 10)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.randn(10, 3, 32, 32), torch.arange(10) % 3
    train, test = [np.arange(0, 6)], [np.arange(6, 10)]
    hp = {"batch_size": 4, "local_lr": 0.01, "personal_lr": 0.05, "inner_steps": 2}
    out = client_baselines(model, hp, params, x, y, train, test, 10, seed=1, update_index=7)
    assert all(0.0 <= out[name][0] <= 1.0 for name in ("masked_acc", "finetune_acc"))
