"""Client compute times for the virtual clock: validation of the ``speed`` config and a sampler.

A speed config is a small dict naming a distribution of the time one client job takes:

- ``{"distribution": "exponential", "mean": 1.0}``: i.i.d. exponential times;
- ``{"distribution": "lognormal", "mean": 1.0, "sigma": 1.0}``: log-normal with that *mean*
  (mu = log(mean) - sigma**2 / 2), heavier-tailed than exponential for large sigma;
- ``{"distribution": "stragglers", "fraction": 0.2, "slowdown": 10.0, "mean": 1.0}``: exponential
  times, and a fixed seeded subset of round(fraction * n) clients is ``slowdown`` times slower;
- ``{"distribution": "constant", "mean": 1.0}``: every job takes exactly ``mean``.

Job ``j`` of client ``i`` always takes the same time for a given seed, whatever the schedule
model or policy (so that runs with different policies are paired). Times are drawn in blocks of
:data:`BLOCK` per client from ``rng.generator(seed, "speed", client, block)``: one generator per
job would cost more than the whole simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from persafl import rng

BLOCK = 256  # draws per (client, block) generator: amortizes the SeedSequence cost

# distribution -> {parameter: default}; None marks a required parameter
SPEED_PARAMS: dict[str, dict[str, float | None]] = {
    "exponential": {"mean": 1.0},
    "lognormal": {"mean": 1.0, "sigma": 1.0},
    "stragglers": {"fraction": 0.2, "slowdown": 10.0, "mean": 1.0},
    "constant": {"mean": 1.0},
}


def validate_speed(speed: Any, path: str = "schedule.speed") -> dict[str, Any]:
    """Check a speed config and return it with defaults filled in.

    Raises ValueError naming the key path, the value and what was expected.
    """
    if not isinstance(speed, Mapping):
        raise ValueError(f"{path}: expected a mapping with key 'distribution', got {speed!r}")
    distribution = speed.get("distribution")
    if distribution not in SPEED_PARAMS:
        raise ValueError(
            f"{path}.distribution: got {distribution!r}, expected one of {sorted(SPEED_PARAMS)}"
        )
    allowed = SPEED_PARAMS[distribution]
    unknown = sorted(set(speed) - set(allowed) - {"distribution"})
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {unknown} for distribution {distribution!r}; "
            f"allowed: {sorted(allowed)}"
        )
    resolved: dict[str, Any] = {"distribution": distribution}
    for name, default in allowed.items():
        value = speed.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{path}.{name}: got {value!r}, expected a finite number")
        resolved[name] = float(value)
    for name in ("mean", "sigma"):
        if name in resolved and resolved[name] <= 0:
            raise ValueError(f"{path}.{name}: got {resolved[name]!r}, expected a number > 0")
    if distribution == "stragglers":
        if not 0.0 <= resolved["fraction"] <= 1.0:
            raise ValueError(f"{path}.fraction: got {resolved['fraction']!r}, expected 0..1")
        if resolved["slowdown"] < 1.0:
            raise ValueError(f"{path}.slowdown: got {resolved['slowdown']!r}, expected >= 1")
    return resolved


def straggler_clients(speed: Mapping[str, Any], num_clients: int, seed: int) -> frozenset[int]:
    """The fixed, seeded set of slow clients (empty unless the distribution is stragglers)."""
    if speed["distribution"] != "stragglers":
        return frozenset()
    count = int(round(speed["fraction"] * num_clients))
    chosen = rng.generator(seed, "stragglers").choice(num_clients, size=count, replace=False)
    return frozenset(int(c) for c in chosen)


class ComputeTimes:
    """Compute time of job ``job`` of client ``client``: ``times(client, job)``.

    A pure function of (speed, num_clients, seed, client, job); the blocks drawn so far are
    cached, so the result does not depend on the order of calls.
    """

    def __init__(self, speed: Mapping[str, Any], num_clients: int, seed: int) -> None:
        self.speed = validate_speed(speed)
        self.num_clients = num_clients
        self.seed = seed
        self.stragglers = straggler_clients(self.speed, num_clients, seed)
        self._blocks: dict[tuple[int, int], list[float]] = {}

    def __call__(self, client: int, job: int) -> float:
        if not 0 <= client < self.num_clients:
            raise ValueError(f"client {client} out of range 0..{self.num_clients - 1}")
        block, offset = divmod(job, BLOCK)
        key = (client, block)
        values = self._blocks.get(key)
        if values is None:
            values = self._draw(client, block)
            self._blocks[key] = values
        return values[offset]

    def sequence(self, client: int, count: int) -> np.ndarray:
        """Times of jobs 0..count-1 of ``client`` (the same values as ``self(client, j)``)."""
        for job in range(0, count, BLOCK):
            self(client, job)  # fills the cache, block by block
        drawn = [self._blocks[(client, job // BLOCK)] for job in range(0, count, BLOCK)]
        return np.concatenate(drawn)[:count]

    def _draw(self, client: int, block: int) -> list[float]:
        speed = self.speed
        distribution = speed["distribution"]
        if distribution == "constant":
            # no generator needed: equal times make exact ties (barrier equivalence relies on it)
            return [speed["mean"]] * BLOCK
        gen = rng.generator(self.seed, "speed", client, block)
        if distribution == "exponential":
            times = gen.exponential(speed["mean"], size=BLOCK)
        elif distribution == "lognormal":
            sigma = speed["sigma"]
            times = gen.lognormal(math.log(speed["mean"]) - sigma**2 / 2, sigma, size=BLOCK)
        else:  # stragglers
            times = gen.exponential(speed["mean"], size=BLOCK)
            if client in self.stragglers:
                times = times * speed["slowdown"]
        # a zero time would let a client finish twice at one instant; keep times positive
        return np.maximum(times, 1e-12).tolist()
