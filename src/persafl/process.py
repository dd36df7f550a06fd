"""Process-level settings of a training process (``python -m persafl.train``).

The paper config starts about 135 training processes (120 tuning points, 15 final groups), and
a tuning point trains for only 7-20 s, so what a process costs before and after its training is
part of the study's time. Two costs are avoidable (benchmarks/README.md "Process start and
exit"):

- ``torch.use_deterministic_algorithms`` imports ``torch._inductor`` only to set its
  ``deterministic`` option, about 1.3 s of imports (sympy, dynamo) for a compiler this project
  never calls, and about 1 s more at exit to tear those modules down;
- with deterministic algorithms on, torch fills every ``torch.empty`` with NaN
  (``torch.utils.deterministic.fill_uninitialized_memory``), a guard against reading memory
  nobody wrote. The engine never reads such memory: every result it computes is compared bit
  for bit between runs and against closed forms in the tests, and a NaN read would have shown
  as a diverged run. Off, a Synthetic group runs 3-5 % faster, with the same bits.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def use_deterministic_kernels() -> None:
    """Deterministic kernels, warning (not failing) where an op has none: what
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` sets, without importing
    ``torch._inductor``; and no NaN fill of uninitialized memory."""
    import torch
    import torch.utils.deterministic

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: the public call
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


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
