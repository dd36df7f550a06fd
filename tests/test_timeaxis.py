"""The staleness and time study: dropped work is counted, curves are put on common axes.

Hand-made traces with known drops and hand-made curves with known values: every number below
is worked out in the comment beside it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from persafl import methods
from persafl.data import load_dataset
from persafl.engine.executor import run
from persafl.engine.schedule import ScheduleConfig, make_trace
from persafl.models import build_model
from persafl.partition import partition_dataset
from persafl.timeaxis import common_grid, crossing, mean_curve, on_grid, value_at

CONSTANT = {"distribution": "constant", "mean": 1.0}


@pytest.fixture(scope="module")
def problem():
    """3 synthetic clients with at most 60 samples each and a small MLP."""
    torch.set_num_threads(1)
    data = load_dataset(
        "synthetic", "unused", alpha=0.5, beta=0.5, num_clients=3, seed=0, max_client_samples=60
    )
    partition = partition_dataset(data.y.numpy(), data.groups, "natural", 3, seed=0)
    model = build_model("mlp", tuple(data.x.shape[1:]), data.num_classes, hidden=4)
    return data, partition, model


def hp(**overrides) -> dict:
    base = {"local_steps": 3, "batch_size": 5, "local_lr": 0.05, "server_lr": 1.0}
    return methods.resolve_hp(methods.get("afl"), {**base, **overrides})


def test_dropped_work_is_counted_on_a_trace_with_known_drops(problem):
    data, partition, model = problem
    # 3 equal clients, bound 0: at every instant client 0 wins, the other two are one version
    # late and dropped: drops after updates 1, 2, 3 = 0, 2, 4 (test_schedule's golden trace)
    trace = make_trace(ScheduleConfig("clock", 0, 3, policy="drop", speed=CONSTANT), 3, seed=0)
    assert trace.dropped_until == (0, 2, 4)
    result = run(trace, methods.get("afl"), hp(), model, data, partition, 0, eval_every=1)
    per_job = 3  # afl: one gradient per local step, 3 local steps
    rows = result.rows
    assert [r["update"] for r in rows] == [0, 1, 2, 3]
    assert [r["grad_evals"] for r in rows] == [0, 3, 6, 9]  # one applied job per update
    assert [r["grad_evals_dropped"] for r in rows] == [per_job * d for d in (0, 0, 2, 4)]
    assert [r["grad_evals_total"] for r in rows] == [0, 3, 12, 21]  # 3 (1 + 0), 3 (2 + 2), ...
    assert [r["dropped"] for r in rows] == [0, 0, 2, 4]
    assert trace.summary()["jobs_discarded"] == 4
    assert trace.summary()["jobs_applied"] == 3


def test_train_all_rounds_count_the_unsampled_jobs_as_discarded(problem):
    data, partition, model = problem
    # pFedMe's rounds: all 3 users train, 1 is aggregated: 2 discarded jobs per round
    cfg = ScheduleConfig("barrier", 0, 2, speed=CONSTANT, clients_per_round=1, train_all=True)
    trace = make_trace(cfg, 3, seed=0)
    result = run(trace, methods.get("afl"), hp(), model, data, partition, 0, eval_every=1)
    assert [r["grad_evals_dropped"] for r in result.rows] == [0, 6, 12]
    assert [r["grad_evals_total"] for r in result.rows] == [0, 9, 18]
    assert trace.summary()["jobs_started"] == 6 == trace.summary()["jobs_discarded"] + 2


def test_staleness_p95_is_the_quantile_of_the_applied_jobs_so_far(problem):
    data, partition, model = problem
    cfg = ScheduleConfig("delay", 8, 40)
    trace = make_trace(cfg, 3, seed=1)
    result = run(trace, methods.get("afl"), hp(), model, data, partition, 0, eval_every=10)
    staleness = trace.staleness()
    for row in result.rows[1:]:
        assert row["staleness_p95"] == pytest.approx(np.quantile(staleness[: row["update"]], 0.95))
    assert math.isnan(result.rows[0]["staleness_p95"])
    assert trace.summary()["staleness_p95"] == pytest.approx(np.quantile(staleness, 0.95))


def test_on_grid_is_exact_on_a_hand_made_curve():
    # evaluations at virtual times 0, 10, 20 with accuracies 0.1, 0.5, 0.7
    got = on_grid([0, 10, 20], [0.1, 0.5, 0.7], [0, 5, 10, 15, 20, 25, -1])
    np.testing.assert_allclose(got[:5], [0.1, 0.3, 0.5, 0.6, 0.7])
    assert np.isnan(got[5]) and np.isnan(got[6])  # never extrapolated


def test_on_grid_keeps_the_later_of_two_evaluations_at_one_instant():
    got = on_grid([0, 10, 10, 20], [0.0, 0.2, 0.4, 0.6], [5, 10, 15])
    np.testing.assert_allclose(got, [0.2, 0.4, 0.5])  # 0 -> 0.4 over [0, 10]; then 0.4 -> 0.6


def test_on_grid_rejects_unsorted_x():
    with pytest.raises(ValueError, match="non-decreasing"):
        on_grid([0, 2, 1], [0, 1, 2], [1])


def test_crossing_is_the_exact_linear_crossing():
    x, y = [0, 10, 20], [0.1, 0.5, 0.7]
    assert crossing(x, y, 0.6) == pytest.approx(15.0)
    assert crossing(x, y, 0.3) == pytest.approx(5.0)
    assert crossing(x, y, 0.05) == 0.0  # already reached at the start
    assert math.isnan(crossing(x, y, 0.8))  # never reached


def two_seeds() -> pd.DataFrame:
    # seed 0 evaluated at times 0, 4, 8; seed 1 at 0, 5, 10 (a longer run)
    return pd.DataFrame({
        "seed": [0, 0, 0, 1, 1, 1],
        "update": [0, 10, 20, 0, 10, 20],
        "time": [0.0, 4.0, 8.0, 0.0, 5.0, 10.0],
        "grad_evals_total": [0, 30, 60, 0, 40, 80],
        "acc": [0.0, 0.4, 0.8, 0.0, 0.5, 0.6],
    })


def test_common_grid_ends_at_the_shortest_run():
    np.testing.assert_allclose(common_grid(two_seeds(), "time", 5), [0, 2, 4, 6, 8])
    with pytest.raises(ValueError, match="axis"):
        common_grid(two_seeds(), "wall", 5)


def test_mean_curve_averages_the_seeds_on_the_grid():
    mean = mean_curve(two_seeds(), "time", "acc", [0, 4, 8])
    # seed 0: 0, 0.4, 0.8; seed 1 at t = 4: 0.4, at t = 8: 0.5 + 0.1 * 3 / 5 = 0.56
    np.testing.assert_allclose(mean["mean"], [0.0, 0.4, 0.68])
    np.testing.assert_allclose(mean["min"], [0.0, 0.4, 0.56])
    np.testing.assert_allclose(mean["max"], [0.0, 0.4, 0.8])
    assert mean["n"].tolist() == [2, 2, 2]
    # on the compute axis: seed 0 at 60 evaluations is 0.8; seed 1 is 0.5 + 0.1 * 20 / 40
    at = value_at(two_seeds(), "grad_evals_total", "acc", 60)
    np.testing.assert_allclose(at.to_numpy(), [0.8, 0.55])
    assert math.isnan(value_at(two_seeds(), "time", "acc", 9.0)[0])  # seed 0 ended at 8
