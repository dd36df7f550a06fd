"""Setting up and training a group of runs in one process (``persafl.train``'s group mode).

Every run is set up (data, partition, trace; config errors raised) before any trains. Distinct
data sets are loaded once and pooled into one tensor per device, each run's partition shifted
to its data set's place in the pool, so that jobs of all runs can be gathered into one stacked
call (:mod:`persafl.engine.group`). ``device: auto`` is decided per step form (method,
hyperparameters, model) for the whole group by :mod:`persafl.engine.device`'s rule of thumb.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persafl.config import ConfigError

log = logging.getLogger("persafl.train")


@dataclass
class Run:
    """One run of a group, set up and ready to replay."""

    config: dict[str, Any]
    out: Path
    data: Any
    partition: Any  # as saved (indices into its own data set)
    pooled: Any  # indices into the group's pooled tensors
    trace: Any
    model: Any
    device: str = "cpu"
    replay: Any = None


def load_partition(config: dict[str, Any], data: Any, partition_file: Path | None) -> Any:
    """The saved partition (checked against the data) or one built from the config."""
    from persafl.partition import build_partition
    from persafl.partition_io import load_partition as load

    if partition_file is None:
        try:
            return build_partition(config, data)
        except ValueError as err:
            raise ConfigError(f"config section 'partition': {err}") from err
    partition = load(partition_file)
    top = max((int(t.max()) for t in [*partition.train, *partition.test] if len(t)), default=0)
    if top >= len(data.y):
        raise ConfigError(
            f"partition {partition_file} indexes sample {top}, but data set "
            f"{data.name!r} has {len(data.y)} samples: it was made for other data"
        )
    return partition


def shifted(partition: Any, offset: int) -> Any:
    """``partition`` with every index moved by ``offset`` (data sets pooled in a group)."""
    if offset == 0:
        return partition
    return dataclasses.replace(
        partition,
        train=[t + offset for t in partition.train],
        test=[t + offset for t in partition.test],
    )


def set_up(runs: list[tuple[dict[str, Any], Path, Path | None]]) -> list[Run]:
    """Data (pooled), partitions, traces and models of every run; devices decided."""
    from persafl.data import load_dataset
    from persafl.engine.schedule import ScheduleConfig, make_trace
    from persafl.models import build_model

    offsets: dict[str, tuple[Any, int]] = {}  # data config -> (data set, offset in the pool)
    size = 0
    setups: list[Run] = []
    for config, out, partition_file in runs:
        data_cfg = config["dataset"]
        key = json.dumps(data_cfg, sort_keys=True)
        if key not in offsets:
            data = load_dataset(data_cfg["name"], data_cfg["root"], **data_cfg["params"])
            offsets[key], size = (data, size), size + len(data.y)
        data, offset = offsets[key]
        partition = load_partition(config, data, partition_file)
        schedule = ScheduleConfig.from_dict(config["schedule"])
        trace = make_trace(schedule, len(partition.train), config["seed"])
        model_cfg = config["model"]
        model = build_model(
            model_cfg["name"], data.x.shape[1:], data.num_classes, **model_cfg["params"]
        )
        pooled = shifted(partition, offset)
        setups.append(Run(config, out, data, partition, pooled, trace, model))
    _choose_devices(setups)
    return setups


def _step_form(config: dict[str, Any]) -> str:
    """Runs with one step form can share stacked calls (and must share a device)."""
    keys = ("method", "model", "backend")
    return json.dumps({k: config[k] for k in keys} | {"data": config["dataset"]}, sort_keys=True)


def _choose_devices(setups: list[Run]) -> None:
    """Explicit devices as asked; ``auto`` per step form by the rule of thumb."""
    import torch

    from persafl.engine.device import jobs_per_call, prefers_gpu
    from persafl.engine.jobs import JobTable

    forms: dict[str, list[Run]] = {}
    for run in setups:
        requested = run.config["device"]
        if requested == "auto":
            forms.setdefault(_step_form(run.config), []).append(run)
        elif requested == "cuda" and not torch.cuda.is_available():
            raise ConfigError("config key 'device': got 'cuda', but no CUDA device is available")
        else:
            run.device = requested
    for members in forms.values():
        device = "cpu"
        if torch.cuda.is_available():
            local = members[0].config["method"]["name"] == "local"
            stacks = [jobs_per_call(JobTable.from_trace(r.trace), local) for r in members]
            batch = int(members[0].config["method"]["hp"]["batch_size"])
            device = "cuda" if prefers_gpu(members[0].model, batch, stacks) else "cpu"
            log.info("device auto: %s (%.1f jobs per stacked call)", device, sum(stacks))
        for run in members:
            run.device = device


def prepare_replays(setups: list[Run], reporter: Any) -> None:
    """Pooled tensors per device, then each run's replay (``reporter(run)`` its callback)."""
    import torch

    from persafl import methods
    from persafl.engine.executor import prepare

    datasets: dict[int, Any] = {}
    for run in setups:  # first appearance, the order set_up gave the offsets in
        datasets.setdefault(id(run.data), run.data)
    parts = list(datasets.values())
    pool_x = parts[0].x if len(parts) == 1 else torch.cat([d.x for d in parts])
    pool_y = parts[0].y if len(parts) == 1 else torch.cat([d.y for d in parts])
    devices = {run.device for run in setups}
    tensors = {device: (pool_x.to(device), pool_y.to(device)) for device in devices}
    eval_cache: dict = {}  # runs of one partition share their gathered test samples
    for run in setups:
        config = run.config
        x, y = tensors[run.device]
        run.replay = prepare(
            run.trace,
            methods.get(config["method"]["name"]),
            config["method"]["hp"],
            run.model,
            run.data,
            run.pooled,
            config["seed"],
            backend=config["backend"],
            eval_every=config["eval"]["every"],
            callback=reporter(run),
            device=run.device,
            x=x,
            y=y,
            eval_cache=eval_cache,
        )
