"""The virtual clock of the asynchronous engine (drop and wait policies).

Split from :mod:`persafl.engine.schedule` (the config and trace types; it dispatches here).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import deque

from persafl.engine.schedule import ScheduleConfig, Trace, Update
from persafl.engine.speeds import ComputeTimes


class _Clients:
    """Running jobs of the virtual clock: a heap of (finish time, client, start version)."""

    def __init__(self, cfg: ScheduleConfig, num_clients: int, seed: int) -> None:
        self.times = ComputeTimes(cfg.speed, num_clients, seed)
        self.jobs = [0] * num_clients  # jobs started per client (index of the next job)
        self.heap: list[tuple[float, int, int]] = []

    def start(self, client: int, now: float, version: int) -> None:
        finish = now + self.times(client, self.jobs[client])
        self.jobs[client] += 1
        # (time, client) is unique (one job per client at a time): ties go to the lower id
        heapq.heappush(self.heap, (finish, client, version))

    def next_arrival(self) -> tuple[float, int, int]:
        if not self.heap:  # unreachable: see the no-deadlock argument in _clock_wait_trace
            raise RuntimeError("schedule: no client is running and no update can be applied")
        return heapq.heappop(self.heap)


def clock_drop_trace(cfg: ScheduleConfig, num_clients: int, seed: int, count: int) -> Trace:
    """Virtual clock, policy drop: a too-stale arrival is discarded, its client restarts.

    The version only changes when the buffer is flushed, so the staleness measured at arrival
    equals the staleness at application: checking on arrival keeps every applied one in bound.
    """
    bound, size = cfg.staleness_bound, cfg.buffer_size
    running = _Clients(cfg, num_clients, seed)
    for client in range(num_clients):
        running.start(client, 0.0, 0)
    version, dropped, wait = 0, 0, 0.0
    updates: list[Update] = []
    dropped_until: list[int] = []
    buffer: list[tuple[int, int, float]] = []  # (client, start version, arrival time)
    while len(updates) < count:
        now, client, start = running.next_arrival()
        if version - start > bound:
            dropped += 1
            running.start(client, now, version)  # the fresh model instead
            continue
        buffer.append((client, start, now))
        if len(buffer) < size:
            continue  # the client idles until its buffer is applied
        clients, starts, arrivals = zip(*buffer, strict=True)
        updates.append(Update(version, clients, starts, now))
        dropped_until.append(dropped)
        version += 1
        wait += sum(now - arrived for arrived in arrivals)
        if len(updates) < count:
            for buffered in clients:
                running.start(buffered, now, version)
        buffer = []
    started = sum(running.jobs)
    return Trace(updates, dropped, wait, num_clients, cfg, started, tuple(dropped_until))


def clock_wait_trace(cfg: ScheduleConfig, num_clients: int, seed: int, count: int) -> Trace:
    """Virtual clock, policy wait: admission control keeps every staleness in bound.

    Let s_0 <= s_1 <= ... be the start versions of the unapplied clients (running or arrived and
    held) and v the version. Applying them oldest first, K per update, gives s_i the staleness
    v + i // K - s_i: the set is *feasible* when that is <= bound for every i. Invariants:

    - admission: a client downloads v only if the set stays feasible; v is the largest start,
      so it lands last (index m) and the test is m // K <= bound, i.e. fewer than K * (bound + 1)
      unapplied clients (at v = 0: K * (bound + 1) start, bound + 1 when K = 1);
    - application: the K oldest held arrivals (by start, then client id) are applied when the
      rest stays feasible at v + 1; otherwise they are held. Only indices before the last
      removed one can break (later ones shift down by exactly K while v grows by 1).

    No deadlock: the K globally oldest unapplied clients are always applicable (the rest shift
    by K, v by 1: feasibility unchanged), and each of them arrives after a finite compute time.
    If nothing is running, all unapplied clients are held; there are at least K of them (else
    the idle clients would be admitted; K <= n), so the K oldest held are the K oldest: applied.
    """
    bound, size = cfg.staleness_bound, cfg.buffer_size
    capacity = size * (bound + 1)
    running = _Clients(cfg, num_clients, seed)
    idle = deque((0.0, client) for client in range(num_clients))  # (idle since, client), FIFO
    unapplied: list[int] = []  # sorted start versions of admitted, not yet applied clients
    held: list[tuple[int, int, float]] = []  # sorted (start version, client, arrival time)
    version, wait, now = 0, 0.0, 0.0
    updates: list[Update] = []
    while True:
        while len(held) >= size:
            batch = held[:size]
            remaining, last = _without(unapplied, [start for start, _, _ in batch])
            limit = max(0, last + 1 - size)
            if any(version + 1 + i // size - remaining[i] > bound for i in range(limit)):
                break  # applying now would make an older running client too stale: hold
            clients = tuple(client for _, client, _ in batch)
            updates.append(Update(version, clients, tuple(s for s, _, _ in batch), now))
            version += 1
            wait += sum(now - arrived for _, _, arrived in batch)
            unapplied, held = remaining, held[size:]
            idle.extend((now, client) for client in clients)
            if len(updates) == count:
                started = sum(running.jobs)
                return Trace(updates, 0, wait, num_clients, cfg, started, (0,) * count)
        while idle and len(unapplied) < capacity:
            since, client = idle.popleft()
            wait += now - since
            running.start(client, now, version)
            unapplied.append(version)  # the largest start version: the list stays sorted
        now, client, start = running.next_arrival()
        insort(held, (start, client, now))


def _without(values: list[int], removed: list[int]) -> tuple[list[int], int]:
    """Sorted ``values`` minus the sorted multiset ``removed``, and the last removed index."""
    indices = []
    for position, value in enumerate(removed):
        # equal values: take successive occurrences (which ones does not change the multiset)
        repeats = position - bisect_left(removed, value)
        indices.append(bisect_left(values, value) + repeats)
    remaining = list(values)
    for index in reversed(indices):
        del remaining[index]
    return remaining, indices[-1]
