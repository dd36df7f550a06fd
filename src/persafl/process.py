"""Process-level settings of a training process (``python -m persafl.train``).

The paper config starts about 135 training processes (120 tuning points, 15 final groups), and
a tuning point trains for only 7-20 s, so what a process costs before and after its training is
part of the study's time (benchmarks/README.md "bench_process.py"):

- ``torch.use_deterministic_algorithms`` imports ``torch._inductor`` only to set its
  ``deterministic`` option: about 1.1 s of imports (dynamo, sympy) for a compiler this project
  never calls, and more at exit to tear those modules down. :func:`use_deterministic_kernels`
  sets the same flags without it;
- the interpreter's teardown at exit: :func:`exit_now` skips it.

Uninitialized memory stays filled with NaN under deterministic algorithms (torch's
``fill_uninitialized_memory``, a guard that makes a read of memory nobody wrote visible):
turning it off gave 3-5 % on a small Synthetic group and nothing measurable on the paper
config's groups, so it stays on.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def use_deterministic_kernels() -> None:
    """Deterministic kernels, warning (not failing) where an op has none: what
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` sets, without importing
    ``torch._inductor``."""
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: the public call
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def exit_now(code: int) -> NoReturn:
    """Exit with ``code`` without the interpreter's teardown of torch's modules (0.5-1 s).

    Only for the end of a command's ``__main__``: every file it wrote is closed by then (run
    files are written in ``with`` blocks and renamed into place); the log and the standard
    streams are flushed here.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
