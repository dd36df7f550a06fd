"""The asynchronous engine's schedule: time, order and staleness, independent of the model.

A :class:`Trace` is computed before any training (a deterministic discrete-event simulation) and
the executor replays it. Update ``k`` has ``version == k`` and applies
``x_{k+1} = x_k - server_lr * mean_i Delta_i(x_{start_version_i})``; the staleness of a client
in it is ``k - start_version``, and ``0 <= staleness <= staleness_bound`` always holds.

Models (PersA-FL, "Asynchrony with bounded staleness"):

- ``delay``: delay sampling. At update t a uniform client and a uniform tau in
  {0..min(t, bound)}; start version t - tau; time t.
- ``clock``: a virtual clock. Each client's job times come from its speed distribution
  (:mod:`persafl.engine.speeds`); events in order of finish time, ties by client id. Arrivals fill a
  buffer of ``buffer_size`` K; a full buffer is one update, and its clients then download the
  new version and start again. A too-stale arrival is either discarded (policy ``drop``) or
  prevented by admission control (policy ``wait``, see
  :func:`persafl.engine.schedule_clock.clock_wait_trace`).
- ``barrier``: synchronous rounds (FedAvg / Per-FedAvg / pFedMe reference): ``clients_per_round``
  S clients sampled uniformly without replacement per round (all n by default), every one
  starting at version t; the round lasts as long as its slowest client. With ``train_all``
  (pFedMe's server: "every user trains, the sampled ones are aggregated") all n clients train
  each round and only the S sampled are aggregated: the unsampled models are discarded (pFedMe
  sends the new global model to everyone next round), so the server trajectory is the same as
  without it; what changes is the compute (``jobs_started`` = rounds x n) and the round's
  duration (the slowest of all n). The server's averaging (uniform or sample-weighted, mixing
  beta = ``server_lr``) is :mod:`persafl.engine.server`'s.

``speed`` is unused by ``delay``; ``staleness_bound`` and ``policy`` are unused by ``barrier``
(its staleness is always 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from persafl import rng
from persafl.engine.speeds import ComputeTimes, validate_speed

MODELS = ("delay", "clock", "barrier")
POLICIES = ("drop", "wait")
_REQUIRED = ("model", "staleness_bound", "num_updates")


def _default_speed() -> dict[str, Any]:
    return {"distribution": "exponential", "mean": 1.0}


def _check_int(path: str, value: Any, minimum: int) -> None:
    # bool is an int in Python; True as a staleness bound is a config mistake, not 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{path}: got {value!r}, expected an integer >= {minimum}")


@dataclass(frozen=True)
class ScheduleConfig:
    """How server updates are produced; validated on construction (ValueError naming the key)."""

    model: str
    staleness_bound: int
    num_updates: int
    policy: str = "drop"
    buffer_size: int = 1
    speed: dict[str, Any] = field(default_factory=_default_speed)
    clients_per_round: int | None = None
    train_all: bool = False

    def __post_init__(self) -> None:
        path = "schedule"
        if self.model not in MODELS:
            raise ValueError(f"{path}.model: got {self.model!r}, expected one of {list(MODELS)}")
        if self.policy not in POLICIES:
            raise ValueError(
                f"{path}.policy: got {self.policy!r}, expected one of {list(POLICIES)}"
            )
        _check_int(f"{path}.staleness_bound", self.staleness_bound, 0)
        _check_int(f"{path}.num_updates", self.num_updates, 1)
        _check_int(f"{path}.buffer_size", self.buffer_size, 1)
        if self.clients_per_round is not None:
            _check_int(f"{path}.clients_per_round", self.clients_per_round, 1)
            if self.model != "barrier":
                raise ValueError(
                    f"{path}.clients_per_round: got {self.clients_per_round!r} with model "
                    f"{self.model!r}; it is only used by model 'barrier' (use null)"
                )
        if not isinstance(self.train_all, bool):
            raise ValueError(f"{path}.train_all: got {self.train_all!r}, expected true or false")
        if self.train_all and self.model != "barrier":
            raise ValueError(
                f"{path}.train_all: got true with model {self.model!r}; it is only used by "
                "model 'barrier' (pFedMe's every-user-trains rounds)"
            )
        if self.model == "delay" and self.buffer_size != 1:
            raise ValueError(
                f"{path}.buffer_size: got {self.buffer_size!r}, model 'delay' applies one "
                "client per update: expected 1 (use model 'clock' for buffered updates)"
            )
        if self.model == "barrier" and self.buffer_size != 1:
            raise ValueError(
                f"{path}.buffer_size: got {self.buffer_size!r}, model 'barrier' takes its "
                "clients per update from clients_per_round: expected 1"
            )
        for name in ("staleness_bound", "num_updates", "buffer_size", "clients_per_round"):
            value = getattr(self, name)
            if value is not None:  # numpy integers -> int, so that to_dict() is JSON-ready
                object.__setattr__(self, name, int(value))
        # frozen: store the resolved speed (defaults filled in) so equal configs compare equal
        object.__setattr__(self, "speed", validate_speed(self.speed, f"{path}.speed"))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], path: str = "schedule") -> ScheduleConfig:
        """Build from a run config's ``schedule`` mapping; unknown or missing keys are errors."""
        if not isinstance(config, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {config!r}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        missing = [key for key in _REQUIRED if key not in config]
        if missing:
            raise ValueError(f"{path}: missing required key(s) {missing}")
        try:
            return cls(**dict(config))
        except ValueError as error:
            # messages name "schedule.<key>"; re-root them when nested under another path
            message = str(error)
            if path != "schedule" and message.startswith("schedule"):
                message = path + message[len("schedule") :]
            raise ValueError(message) from None

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (all defaults filled in), JSON-serializable."""
        return asdict(self)


@dataclass(frozen=True)
class Update:
    """One server update: ``x_{version+1} = x_version - lr * mean over clients``."""

    version: int
    clients: tuple[int, ...]
    start_versions: tuple[int, ...]
    time: float


@dataclass(frozen=True)
class Trace:
    """The whole schedule of a run.

    ``wait_time`` is the total client idle time: from finishing a job (or time 0) to starting
    the next (admission waits of policy ``wait``, a full buffer's early arrivals, the fast
    clients of a barrier round). ``jobs_started`` counts every client job started before the
    last update (applied, dropped, held or still running): the compute spent.
    ``dropped_until[k]`` is the number of arrivals dropped up to and including update k.
    """

    updates: list[Update]
    dropped: int
    wait_time: float
    num_clients: int
    config: ScheduleConfig
    jobs_started: int = 0
    dropped_until: tuple[int, ...] = ()

    @property
    def num_updates(self) -> int:
        return len(self.updates)

    def staleness(self) -> np.ndarray:
        """Staleness of every applied client job, in update order (int64)."""
        return np.fromiter(
            (u.version - s for u in self.updates for s in u.start_versions), dtype=np.int64
        )

    @property
    def max_staleness(self) -> int:
        values = self.staleness()
        return int(values.max()) if values.size else 0

    @property
    def mean_staleness(self) -> float:
        values = self.staleness()
        return float(values.mean()) if values.size else float("nan")

    def cumulative(self) -> dict[str, np.ndarray]:
        """Per update k (index 0..N-1), statistics over updates 0..k, for metrics rows.

        Keys: ``staleness_mean``, ``staleness_max``, ``dropped`` (cumulative drops),
        ``discarded`` (cumulative finished jobs whose result was never applied: the drops, plus
        the unsampled jobs of a ``train_all`` barrier round) and ``applied_jobs`` (cumulative
        jobs applied): the compute axis counts both (:mod:`persafl.timeaxis`).
        """
        sums = np.array([sum(u.version - s for s in u.start_versions) for u in self.updates])
        counts = np.array([len(u.start_versions) for u in self.updates])
        maxima = np.array([max(u.version - s for s in u.start_versions) for u in self.updates])
        dropped = np.array(self.dropped_until or (0,) * len(self.updates), dtype=np.int64)
        discarded = dropped.copy()
        if self.config.model == "barrier" and self.config.train_all:
            # every user trains each round; only the sampled ones are aggregated
            rounds = np.arange(1, len(self.updates) + 1, dtype=np.int64)
            discarded += rounds * (self.num_clients - counts)
        return {
            "staleness_mean": np.cumsum(sums) / np.cumsum(counts),
            "staleness_max": np.maximum.accumulate(maxima),
            "dropped": dropped,
            "discarded": discarded,
            "applied_jobs": np.cumsum(counts),
        }

    def staleness_quantile(self, q: float, jobs: int | None = None) -> float:
        """Quantile ``q`` (0..1, numpy's linear rule) of the staleness of the first ``jobs``
        applied jobs (all by default); NaN when there are none."""
        values = self.staleness()[:jobs]
        return float(np.quantile(values, q)) if values.size else float("nan")

    def summary(self) -> dict[str, Any]:
        """The ``trace`` block of summary.json."""
        return {
            "dropped": self.dropped,
            "wait_time": self.wait_time,
            "staleness_mean": self.mean_staleness,
            "staleness_max": self.max_staleness,
            "staleness_p95": self.staleness_quantile(0.95),
            "num_updates": self.num_updates,
            "jobs_started": self.jobs_started,
            "jobs_applied": int(sum(len(u.clients) for u in self.updates)),
            "jobs_discarded": int(self.cumulative()["discarded"][-1]) if self.updates else 0,
        }


def make_trace(
    cfg: ScheduleConfig, num_clients: int, seed: int, *, num_updates: int | None = None
) -> Trace:
    """Simulate the schedule: exactly ``num_updates`` (default ``cfg.num_updates``) updates."""
    _check_int("num_clients", num_clients, 1)
    _check_int("seed", seed, 0)
    count = cfg.num_updates if num_updates is None else num_updates
    _check_int("num_updates", count, 1)
    if cfg.model == "delay":
        return _delay_trace(cfg, num_clients, seed, count)
    if cfg.model == "barrier":
        return _barrier_trace(cfg, num_clients, seed, count)
    if cfg.buffer_size > num_clients:
        raise ValueError(
            f"schedule.buffer_size: got {cfg.buffer_size}, expected at most num_clients="
            f"{num_clients} (a buffer of K arrivals needs K distinct clients)"
        )
    from persafl.engine.schedule_clock import clock_drop_trace, clock_wait_trace  # circular import

    simulate = clock_drop_trace if cfg.policy == "drop" else clock_wait_trace
    return simulate(cfg, num_clients, seed, count)


def _delay_trace(cfg: ScheduleConfig, num_clients: int, seed: int, count: int) -> Trace:
    """Delay sampling: client uniform, tau uniform in {0..min(t, bound)}, time t."""
    gen = rng.generator(seed, "delay")
    clients = gen.integers(0, num_clients, size=count)
    steps = np.arange(count)
    taus = gen.integers(0, np.minimum(steps, cfg.staleness_bound) + 1)
    updates = [
        Update(t, (int(c),), (int(t - tau),), float(t))
        for t, c, tau in zip(steps.tolist(), clients.tolist(), taus.tolist(), strict=True)
    ]
    return Trace(updates, 0, 0.0, num_clients, cfg, count, (0,) * count)


def _barrier_trace(cfg: ScheduleConfig, num_clients: int, seed: int, count: int) -> Trace:
    """Synchronous rounds: all selected clients start at version t; staleness 0."""
    per_round = num_clients if cfg.clients_per_round is None else cfg.clients_per_round
    if per_round > num_clients:
        raise ValueError(
            f"schedule.clients_per_round: got {per_round}, expected at most num_clients="
            f"{num_clients}"
        )
    times = ComputeTimes(cfg.speed, num_clients, seed)
    if per_round == num_clients:
        # full participation: job t of every client runs in round t (vectorized: 100 clients x
        # 20,000 rounds is 2M jobs)
        everyone = tuple(range(num_clients))
        durations = np.stack([times.sequence(c, count) for c in everyone])  # [clients, rounds]
        longest = durations.max(axis=0)
        finish = np.cumsum(longest).tolist()  # sequential sums, as the clock adds them
        wait = float((longest[None, :] - durations).sum())  # fast clients idle at the barrier
        updates = [Update(t, everyone, (t,) * num_clients, finish[t]) for t in range(count)]
        return Trace(updates, 0, wait, num_clients, cfg, count * num_clients, (0,) * count)
    jobs = [0] * num_clients
    now = wait = 0.0
    updates = []
    for t in range(count):
        picked = rng.generator(seed, "round", t).choice(num_clients, per_round, replace=False)
        chosen = sorted(int(c) for c in picked)
        spans = []
        for client in range(num_clients) if cfg.train_all else chosen:
            spans.append(times(client, jobs[client]))
            jobs[client] += 1
        longest = max(spans)
        now += longest
        wait += sum(longest - d for d in spans)
        updates.append(Update(t, tuple(chosen), (t,) * per_round, now))
    started = count * (num_clients if cfg.train_all else per_round)
    return Trace(updates, 0, wait, num_clients, cfg, started, (0,) * count)
