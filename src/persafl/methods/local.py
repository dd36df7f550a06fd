"""Local training: every client trains its own model alone, never aggregating.

The baseline every personalized method must beat (PersA-FL: Toghani, Lee, Uribe 2022;
pFedMe: Dinh, Tran, Nguyen 2020). The local step is A-FL's plain SGD step; the executor keeps
one model per client and never applies a server step, so the "personalized" model of client i
is simply its own model.
"""

from __future__ import annotations

from persafl.methods import afl
from persafl.methods.base import Method, identity_personalize

DEFAULTS: dict[str, float | int] = dict(afl.DEFAULTS)

METHOD = Method(
    name="local",
    defaults=DEFAULTS,
    batches_per_step=1,
    local_update=afl.local_update,
    personalize=identity_personalize,
    grads_per_step=lambda hp: 1,
    personalized=True,
)
