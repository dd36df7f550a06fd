"""The run config of one training run: defaults, validation and resolution.

A run config (docs/design.md "Run config") is a nested mapping::

    seed: 0
    dataset:   {name: synthetic, root: data, params: {alpha: 0.5, beta: 0.5, num_clients: 30}}
    partition: {scheme: natural, num_clients: 30, test_fraction: 0.25, params: {}}
    model:     {name: mlp, params: {hidden: 20}}
    method:    {name: persafl_me, hp: {local_steps: 20, ...}}
    schedule:  {model: clock, staleness_bound: 8, ..., num_updates: 1000}
    eval:      {every: 50}
    backend: auto              # auto | vectorized | sequential (auto: see executor)
    device: auto               # auto | cpu | cuda
    threads: 1                 # torch CPU threads: the last bits of results depend on it

:func:`resolve_run_config` fills in defaults, rejects unknown keys and bad values with a
:class:`ConfigError` naming the key path, the value and what was expected, and merges the
method's hyperparameter defaults under the user's ``hp``. The free-form ``params`` mappings
(dataset, partition, model) are passed through to their builders, which check them; the
``schedule`` section is checked by ``persafl.engine.schedule.ScheduleConfig.from_dict``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULTS", "ConfigError", "load_run_config", "resolve_run_config"]


class ConfigError(ValueError):
    """A bad run config; the message names the key path, the value and what was expected."""


# Defaults of every key except `schedule` and `method.hp` (those belong to the schedule and
# method modules). `None` for partition.num_clients means: the dataset's natural client count.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "dataset": {"name": "synthetic", "root": "data", "params": {}},
    "partition": {
        "scheme": "natural",
        "num_clients": None,
        "test_fraction": 0.25,
        "params": {},
        "max_train_samples": None,  # per-client train cap (stratified); None: no cap
    },
    "model": {"name": "mlp", "params": {}},
    "method": {"name": "afl", "hp": {}},
    "schedule": {},
    "eval": {"every": 50},
    "backend": "auto",
    "device": "auto",
    "threads": 1,
}

BACKENDS = ("auto", "vectorized", "sequential")
DEVICES = ("auto", "cpu", "cuda")


def _fail(path: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key '{path}': got {value!r}, expected {expected}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; `true` for a count is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _int(minimum: int) -> Callable[[str, Any], Any]:
    def check(path: str, value: Any) -> Any:
        if not _is_int(value) or value < minimum:
            raise _fail(path, value, f"an integer >= {minimum}")
        return value

    return check


def _optional_int(minimum: int) -> Callable[[str, Any], Any]:
    def check(path: str, value: Any) -> Any:
        return None if value is None else _int(minimum)(path, value)

    return check


def _fraction(path: str, value: Any) -> Any:
    if not (_is_int(value) or isinstance(value, float)) or not 0.0 < value < 1.0:
        raise _fail(path, value, "a number strictly between 0 and 1")
    return float(value)


def _string(path: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise _fail(path, value, "a non-empty string")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], Any]:
    def check(path: str, value: Any) -> Any:
        if value not in choices:
            raise _fail(path, value, f"one of {list(choices)}")
        return value

    return check


def _mapping(path: str, value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(path, value, "a mapping with string keys")
    return copy.deepcopy(dict(value))


# key path -> checker returning the (normalized) value
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "seed": _int(0),
    "dataset.name": _choice(("synthetic", "mnist", "fashion_mnist", "cifar10")),
    "dataset.root": _string,
    "dataset.params": _mapping,
    "partition.scheme": _string,
    "partition.num_clients": _optional_int(1),
    "partition.test_fraction": _fraction,
    "partition.params": _mapping,
    "partition.max_train_samples": _optional_int(1),
    "model.name": _string,
    "model.params": _mapping,
    "method.name": _string,
    "method.hp": _mapping,
    "schedule": _mapping,
    "eval.every": _int(1),
    "backend": _choice(BACKENDS),
    "device": _choice(DEVICES),
    "threads": _int(1),
}


def first_non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The key path and value of the first NaN or infinite number in ``value`` (recursing into
    mappings and lists), or ``None``: YAML's ``.nan``/``.inf`` pass a JSON schema's ``number``."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<top level>", value
    if isinstance(value, Mapping):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        found = first_non_finite(sub, sub_path)
        if found is not None:
            return found
    return None


def reject_non_finite(value: Any, what: str = "config") -> None:
    """Raise :class:`ConfigError` at the first NaN or infinite number in ``value``."""
    found = first_non_finite(value)
    if found is not None:
        raise ConfigError(f"{what} key '{found[0]}': got {found[1]!r}, expected a finite number")


def _resolve_section(user: Any, defaults: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Defaults updated with ``user``, recursing into sections; unknown keys are errors."""
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        raise _fail(prefix or "<top level>", user, "a mapping")
    unknown = sorted(str(k) for k in set(user) - set(defaults))
    if unknown:
        where = f"config section '{prefix}'" if prefix else "config"
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(defaults)}")
    out: dict[str, Any] = {}
    for key, default in defaults.items():
        path = f"{prefix}.{key}" if prefix else key
        value = user.get(key, copy.deepcopy(default))
        if path in _CHECKS:
            out[key] = _CHECKS[path](path, value)
        else:  # a nested section with its own keys
            out[key] = _resolve_section(value, default, path)
    return out


def _resolve_method(section: dict[str, Any]) -> dict[str, Any]:
    """Merge the method's hyperparameter defaults under the user's ``hp``."""
    from persafl import methods  # imported here: the config module stays cheap to import

    try:
        method = methods.get(section["name"])
    except ValueError as err:
        raise _fail("method.name", section["name"], f"a known method ({err})") from None
    try:
        hp = methods.resolve_hp(method, section["hp"])
    except ValueError as err:
        raise ConfigError(f"config key 'method.hp': {err}") from None
    for name, value in section["hp"].items():
        if name in methods.HP_CHOICES:  # a named choice (methods.base.HP_CHOICES)
            if value not in methods.HP_CHOICES[name]:
                raise _fail(f"method.hp.{name}", value, f"one of {list(methods.HP_CHOICES[name])}")
        elif not isinstance(value, int | float) or isinstance(value, bool):
            raise _fail(f"method.hp.{name}", value, "a number")
    for name in ("local_steps", "batch_size", "eval_adapt_steps"):
        if name in hp and (not _is_int(hp[name]) or hp[name] < 1):
            raise _fail(f"method.hp.{name}", hp[name], "an integer >= 1")
    return {"name": method.name, "hp": hp}


def _resolve_schedule(section: dict[str, Any]) -> dict[str, Any]:
    """Check the schedule section with the schedule module's own parser."""
    from persafl.engine.schedule import ScheduleConfig

    try:
        parsed = ScheduleConfig.from_dict(section)
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"config section 'schedule': {err}") from None
    # Keep the user's section (plus defaults if the parser exposes them) so the resolved
    # config is what ran and can be fed back in.
    to_dict = getattr(parsed, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else section


def resolve_run_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated run config with every default filled in (a new dict)."""
    reject_non_finite(config)
    resolved = _resolve_section(config, DEFAULTS, "")
    resolved["method"] = _resolve_method(resolved["method"])
    resolved["schedule"] = _resolve_schedule(resolved["schedule"])
    return resolved


def yaml_error(path: str | Path, err: yaml.YAMLError) -> str:
    """One line naming the file, the line and column, and what the YAML parser expected."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{where}: not valid YAML ({problem}); fix the syntax there"


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The YAML document of ``path``; a missing, unreadable, binary or malformed file is a
    :class:`ConfigError` of one line naming the file and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{what} file {path} is not a text (YAML) file; give a .yaml config file there"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read {what} file {path}: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(path, err)) from None


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML run config and return it resolved (see :func:`resolve_run_config`)."""
    path = Path(path)
    data = read_yaml(path, "run config")
    try:
        return resolve_run_config(data if data is not None else {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
