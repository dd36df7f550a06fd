"""Tests of the schedule (engine.schedule) and the compute-time sampler (engine.speeds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persafl.engine.schedule import ScheduleConfig, Trace, Update, make_trace
from persafl.engine.speeds import ComputeTimes, straggler_clients, validate_speed

SPEEDS = [
    {"distribution": "exponential", "mean": 1.0},
    {"distribution": "lognormal", "mean": 2.0, "sigma": 1.5},
    {"distribution": "stragglers", "fraction": 0.3, "slowdown": 20.0},
    {"distribution": "constant", "mean": 0.5},
]


@st.composite
def schedules(draw: st.DrawFn) -> tuple[ScheduleConfig, int, int]:
    """Any valid (config, num_clients, seed) of every model and policy."""
    num_clients = draw(st.integers(1, 30))
    model = draw(st.sampled_from(["delay", "clock", "barrier"]))
    buffer_size = draw(st.integers(1, min(num_clients, 5))) if model == "clock" else 1
    per_round = None
    if model == "barrier":
        per_round = draw(st.none() | st.integers(1, num_clients))
    cfg = ScheduleConfig(
        model=model,
        staleness_bound=draw(st.integers(0, 10)),
        num_updates=draw(st.integers(1, 150)),
        policy=draw(st.sampled_from(["drop", "wait"])),
        buffer_size=buffer_size,
        speed=draw(st.sampled_from(SPEEDS)),
        clients_per_round=per_round,
    )
    return cfg, num_clients, draw(st.integers(0, 2**20))


def check_invariants(trace: Trace, cfg: ScheduleConfig, num_clients: int) -> None:
    """What every trace must satisfy, whatever the model and policy."""
    assert len(trace.updates) == cfg.num_updates
    assert [u.version for u in trace.updates] == list(range(cfg.num_updates))
    times = [u.time for u in trace.updates]
    assert all(later >= earlier for earlier, later in zip(times, times[1:], strict=False))
    for update in trace.updates:
        assert len(update.clients) == len(update.start_versions) >= 1
        assert len(set(update.clients)) == len(update.clients)  # one job per client at a time
        assert all(0 <= c < num_clients for c in update.clients)
        if cfg.model == "clock":
            assert len(update.clients) == cfg.buffer_size
    staleness = trace.staleness()
    assert staleness.min() >= 0
    assert staleness.max() <= cfg.staleness_bound
    assert trace.max_staleness == staleness.max()
    assert trace.jobs_started >= staleness.size + trace.dropped
    assert len(trace.dropped_until) == cfg.num_updates
    assert list(trace.dropped_until) == sorted(trace.dropped_until)
    assert trace.dropped_until[-1] <= trace.dropped
    assert trace.wait_time >= 0


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_every_trace_keeps_the_invariants(case: tuple[ScheduleConfig, int, int]) -> None:
    cfg, num_clients, seed = case
    check_invariants(make_trace(cfg, num_clients, seed), cfg, num_clients)


@settings(max_examples=100, deadline=None)
@given(schedules())
def test_same_seed_gives_the_same_trace(case: tuple[ScheduleConfig, int, int]) -> None:
    cfg, num_clients, seed = case
    assert make_trace(cfg, num_clients, seed) == make_trace(cfg, num_clients, seed)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 30),
    st.sampled_from(["delay", "clock"]),
    st.sampled_from(["drop", "wait"]),
    st.sampled_from(SPEEDS),
    st.integers(0, 1000),
)
def test_bound_zero_is_synchronous_one_client_at_a_time(
    num_clients: int, model: str, policy: str, speed: dict, seed: int
) -> None:
    cfg = ScheduleConfig(model, 0, 80, policy=policy, speed=speed)
    trace = make_trace(cfg, num_clients, seed)
    assert all(len(u.clients) == 1 for u in trace.updates)
    assert not trace.staleness().any()


@pytest.mark.parametrize("model", ["delay", "clock", "barrier"])
@pytest.mark.parametrize("policy", ["drop", "wait"])
def test_different_seeds_give_different_traces(model: str, policy: str) -> None:
    cfg = ScheduleConfig(model, 3, 200, policy=policy, clients_per_round=None)
    traces = [make_trace(cfg, 10, seed) for seed in range(3)]
    assert traces[0] != traces[1] and traces[1] != traces[2] and traces[0] != traces[2]


def constant(model: str, bound: int, count: int, policy: str = "drop", **kw: int) -> ScheduleConfig:
    speed = {"distribution": "constant", "mean": 1.0}
    return ScheduleConfig(model, bound, count, policy=policy, speed=speed, **kw)


def test_drop_golden_example_bound_zero() -> None:
    # 3 equal clients, bound 0: client 0 wins every tie, the other two arrive one version late
    trace = make_trace(constant("clock", 0, 3), 3, seed=0)
    assert trace.updates == [Update(v, (0,), (v,), float(v + 1)) for v in range(3)]
    assert trace.dropped == 4 and trace.dropped_until == (0, 2, 4)
    assert trace.jobs_started == 9  # 3 at time 0, 3 at time 1, 3 at time 2
    assert trace.wait_time == 0.0


def test_wait_golden_example_bound_one() -> None:
    # 3 equal clients, bound 1: two may run at once; client 0's fresh update at time 2 is held
    # until client 2's older one is applied, else client 2 would arrive 2 versions late
    trace = make_trace(constant("clock", 1, 4, policy="wait"), 3, seed=0)
    assert trace.updates == [
        Update(0, (0,), (0,), 1.0),
        Update(1, (1,), (0,), 1.0),
        Update(2, (2,), (1,), 2.0),
        Update(3, (0,), (2,), 2.0),
    ]
    assert trace.wait_time == 1.0  # client 2 idled from time 0 to 1 before its admission
    assert trace.jobs_started == 4
    assert trace.dropped == 0


@pytest.mark.parametrize("buffer_size", [1, 2, 4])
@pytest.mark.parametrize("bound", [0, 1, 3])
def test_wait_never_deadlocks_with_extreme_stragglers(buffer_size: int, bound: int) -> None:
    speed = {"distribution": "stragglers", "fraction": 0.5, "slowdown": 1000.0}
    cfg = ScheduleConfig("clock", bound, 500, policy="wait", buffer_size=buffer_size, speed=speed)
    trace = make_trace(cfg, 8, seed=3)
    check_invariants(trace, cfg, 8)
    assert trace.wait_time > 0  # fast clients did have to wait for the stragglers


def test_wait_admits_bound_plus_one_clients_at_first() -> None:
    # equal speeds: exactly bound + 1 distinct clients start at version 0
    cfg = constant("clock", 2, 30, policy="wait")
    first = [u for u in make_trace(cfg, 10, seed=0).updates if u.start_versions == (0,)]
    assert sorted(c for u in first for c in u.clients) == [0, 1, 2]


def test_drop_with_tight_bound_and_stragglers_drops() -> None:
    speed = {"distribution": "stragglers", "fraction": 0.2, "slowdown": 10.0}
    tight = ScheduleConfig("clock", 1, 500, policy="drop", speed=speed)
    assert make_trace(tight, 20, seed=0).dropped > 0


def test_loose_bound_drops_nothing_and_wait_equals_drop() -> None:
    # bound far above n * slowdown: no arrival is ever too stale, nobody ever waits
    speed = {"distribution": "stragglers", "fraction": 0.2, "slowdown": 10.0}
    drop = make_trace(ScheduleConfig("clock", 5000, 500, speed=speed), 10, seed=1)
    wait = make_trace(ScheduleConfig("clock", 5000, 500, policy="wait", speed=speed), 10, seed=1)
    assert drop.dropped == 0 and drop.max_staleness > 10  # asynchrony did happen
    assert wait.updates == drop.updates
    assert wait.wait_time == 0.0 and wait.jobs_started == drop.jobs_started


def test_delay_tau_is_uniform_once_t_reaches_the_bound() -> None:
    bound, count = 4, 20000
    trace = make_trace(ScheduleConfig("delay", bound, count), 3, seed=5)
    taus = trace.staleness()
    assert all(taus[t] <= t for t in range(bound))  # no version before 0
    frequencies = np.bincount(taus[bound:], minlength=bound + 1) / (count - bound)
    assert np.allclose(frequencies, 1 / (bound + 1), atol=0.02)  # ~7 standard errors
    clients = np.bincount([u.clients[0] for u in trace.updates], minlength=3) / count
    assert np.allclose(clients, 1 / 3, atol=0.02)
    assert [u.time for u in trace.updates[:3]] == [0.0, 1.0, 2.0]


def test_delay_rejects_a_buffer() -> None:
    with pytest.raises(ValueError, match="schedule.buffer_size"):
        ScheduleConfig("delay", 2, 10, buffer_size=2)


def test_barrier_with_equal_speeds_is_full_rounds() -> None:
    speed = {"distribution": "constant", "mean": 2.0}
    trace = make_trace(ScheduleConfig("barrier", 3, 5, speed=speed), 7, seed=0)
    assert trace.updates == [Update(t, tuple(range(7)), (t,) * 7, 2.0 * (t + 1)) for t in range(5)]
    assert trace.wait_time == 0.0 and trace.jobs_started == 35


def test_barrier_samples_clients_per_round() -> None:
    cfg = ScheduleConfig("barrier", 0, 50, clients_per_round=3)
    trace = make_trace(cfg, 10, seed=0)
    assert all(len(u.clients) == 3 and list(u.clients) == sorted(u.clients) for u in trace.updates)
    assert len({u.clients for u in trace.updates}) > 10  # rounds differ
    assert len({c for u in trace.updates for c in u.clients}) == 10


@pytest.mark.parametrize("policy", ["drop", "wait"])
@pytest.mark.parametrize("bound", [0, 3])
def test_clock_with_buffer_n_and_equal_speeds_is_fedavg(policy: str, bound: int) -> None:
    clock = make_trace(constant("clock", bound, 20, policy, buffer_size=6), 6, seed=0)
    barrier = make_trace(constant("barrier", bound, 20), 6, seed=0)
    assert clock.updates == barrier.updates


def test_cumulative_statistics_match_a_direct_computation() -> None:
    speed = {"distribution": "stragglers", "fraction": 0.3, "slowdown": 5.0}
    cfg = ScheduleConfig("clock", 4, 300, buffer_size=2, speed=speed)
    trace = make_trace(cfg, 12, seed=2)
    table = trace.cumulative()
    for k in (0, 17, 299):
        upto = np.concatenate(
            [[u.version - s for s in u.start_versions] for u in trace.updates[: k + 1]]
        )
        assert table["staleness_mean"][k] == pytest.approx(upto.mean())
        assert table["staleness_max"][k] == upto.max()
        assert table["dropped"][k] == trace.dropped_until[k]
    assert trace.summary()["staleness_max"] == trace.max_staleness
    assert trace.summary()["num_updates"] == 300


def test_num_updates_override_and_bad_arguments() -> None:
    cfg = ScheduleConfig("clock", 2, 10)
    assert len(make_trace(cfg, 5, 0, num_updates=7).updates) == 7
    with pytest.raises(ValueError, match="buffer_size"):
        make_trace(ScheduleConfig("clock", 2, 10, buffer_size=6), 5, 0)
    with pytest.raises(ValueError, match="clients_per_round"):
        make_trace(ScheduleConfig("barrier", 0, 10, clients_per_round=6), 5, 0)
    with pytest.raises(ValueError, match="num_clients"):
        make_trace(cfg, 0, 0)


def test_from_dict_round_trip_fills_defaults() -> None:
    cfg = ScheduleConfig.from_dict({"model": "clock", "staleness_bound": 8, "num_updates": 100})
    assert cfg.policy == "drop" and cfg.buffer_size == 1
    assert cfg.speed == {"distribution": "exponential", "mean": 1.0}
    assert ScheduleConfig.from_dict(cfg.to_dict()) == cfg
    stragglers = ScheduleConfig("clock", 1, 5, speed={"distribution": "stragglers"})
    assert stragglers.speed == {
        "distribution": "stragglers",
        "fraction": 0.2,
        "slowdown": 10.0,
        "mean": 1.0,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"model": "async"}, r"schedule.model: got 'async'"),
        ({"policy": "skip"}, r"schedule.policy: got 'skip'"),
        ({"staleness_bound": -1}, r"schedule.staleness_bound: got -1, expected an integer >= 0"),
        ({"staleness_bound": True}, r"schedule.staleness_bound: got True"),
        ({"num_updates": "100"}, r"schedule.num_updates: got '100'"),
        ({"buffer_size": 0}, r"schedule.buffer_size: got 0"),
        ({"clients_per_round": 3}, r"schedule.clients_per_round: got 3 with model 'clock'"),
        ({"speed": {"distribution": "gamma"}}, r"schedule.speed.distribution: got 'gamma'"),
        ({"speed": {"distribution": "constant", "sigma": 1}}, r"unknown key\(s\) \['sigma'\]"),
        ({"speed": {"distribution": "exponential", "mean": 0}}, r"schedule.speed.mean: got 0.0"),
        ({"speed": {"distribution": "stragglers", "fraction": 2}}, r"speed.fraction: got 2.0"),
        ({"speed": {"distribution": "stragglers", "slowdown": 0.5}}, r"speed.slowdown: got 0.5"),
    ],
)
def test_bad_configs_name_the_key(change: dict, message: str) -> None:
    config = {"model": "clock", "staleness_bound": 8, "num_updates": 100, **change}
    with pytest.raises(ValueError, match=message):
        ScheduleConfig.from_dict(config)


def test_missing_key_and_nested_path() -> None:
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['num_updates'\]"):
        ScheduleConfig.from_dict({"model": "clock", "staleness_bound": 1})
    with pytest.raises(ValueError, match=r"^run.schedule.staleness_bound"):
        ScheduleConfig.from_dict(
            {"model": "clock", "staleness_bound": -2, "num_updates": 1}, path="run.schedule"
        )


def test_compute_times_are_a_function_of_client_and_job() -> None:
    speed = validate_speed({"distribution": "lognormal", "mean": 2.0, "sigma": 0.5})
    forward, backward = ComputeTimes(speed, 4, 9), ComputeTimes(speed, 4, 9)
    ahead = [forward(c, j) for c in range(4) for j in range(600)]
    behind = [backward(c, j) for c in reversed(range(4)) for j in reversed(range(600))]
    assert ahead == behind[::-1]
    assert np.mean(ahead) == pytest.approx(2.0, rel=0.1)  # mean, not median, is 2
    assert ComputeTimes(speed, 4, 10)(0, 0) != forward(0, 0)
    assert ComputeTimes(speed, 4, 9).sequence(2, 600).tolist() == ahead[1200:1800]


def test_barrier_round_lasts_as_long_as_its_slowest_client() -> None:
    speed = {"distribution": "lognormal", "mean": 1.0, "sigma": 1.0}
    trace = make_trace(ScheduleConfig("barrier", 0, 40, speed=speed), 5, seed=7)
    times = ComputeTimes(speed, 5, 7)
    ends = [0.0] + [u.time for u in trace.updates]
    for t in range(40):
        assert ends[t + 1] - ends[t] == pytest.approx(max(times(c, t) for c in range(5)))
    expected_wait = sum(
        max(times(c, t) for c in range(5)) - times(c, t) for t in range(40) for c in range(5)
    )
    assert trace.wait_time == pytest.approx(expected_wait)


def test_stragglers_are_a_fixed_slower_subset() -> None:
    speed = validate_speed({"distribution": "stragglers", "fraction": 0.25, "slowdown": 10.0})
    slow = straggler_clients(speed, 20, seed=4)
    assert len(slow) == 5 and slow == straggler_clients(speed, 20, seed=4)
    times = ComputeTimes(speed, 20, 4)
    means = np.array([np.mean([times(c, j) for j in range(500)]) for c in range(20)])
    fast = [c for c in range(20) if c not in slow]
    assert means[sorted(slow)].min() > 4 * means[fast].max()
