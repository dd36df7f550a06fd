"""Registry of client methods: ``get(name) -> Method`` and ``names()``.

afl (FedAsync-style, no personalization), persafl_maml_fo / persafl_maml_hf (Per-FedAvg's
MAML objective: Fallah, Mokhtari, Ozdaglar 2020), persafl_me (pFedMe's Moreau envelope: Dinh,
Tran, Nguyen 2020), local (each client alone); the PersA-FL variants follow Toghani, Lee,
Uribe 2022.
"""

from __future__ import annotations

import dataclasses

from persafl.methods import afl, local, maml, me
from persafl.methods.base import HP_CHOICES, HP_NAMES, PROTOCOL_DEFAULTS, Method, resolve_hp

__all__ = ["HP_CHOICES", "HP_NAMES", "PROTOCOL_DEFAULTS", "Method", "get", "names", "resolve_hp"]

_REGISTRY: dict[str, Method] = {
    method.name: method
    for method in (afl.METHOD, maml.METHOD_FO, maml.METHOD_HF, me.METHOD, local.METHOD)
}


def names() -> list[str]:
    """Registered method names, in a fixed order."""
    return list(_REGISTRY)


def get(name: str) -> Method:
    """The method called ``name``; ``ValueError`` listing the known names otherwise.

    Returns a copy with its own ``defaults`` dict, so a caller editing it cannot change the
    registry for everyone else.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(names())}")
    method = _REGISTRY[name]
    return dataclasses.replace(method, defaults=dict(method.defaults))
