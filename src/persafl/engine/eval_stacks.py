"""Stacks of clients for the padded evaluation forward passes (a pure planning function).

Evaluation runs every client's test set through a model in stacks: a stack of n clients is a
[n, L, ...] tensor padded to its longest test set L and masked. Stacking clients in index order
pads every client to the longest test set of all, and client sizes are skewed: the paper's
Synthetic(0.5, 0.5) clients hold 6 to 750 test samples (mean 97), so 7.7 times the real samples
went through the forward pass; MNIST's 2-label split 2.1 times. :func:`plan_stacks` sorts the
clients by test size and closes a stack before its padded size would exceed ``max_waste``
times its real samples, or ``max_elements`` scalars.
"""

from __future__ import annotations

import numpy as np

# Padded samples per real sample allowed in one stack (stacks cost a call each: a few, not one
# per client).
MAX_WASTE = 1.25


def plan_stacks(
    counts: np.ndarray, per_sample: int, max_elements: int, max_waste: float = MAX_WASTE
) -> list[np.ndarray]:
    """Client ids per stack, every client exactly once, largest test sets first.

    ``counts[c]`` is client c's number of test samples (0 allowed: such a client is padded to
    one masked sample), ``per_sample`` the scalars one padded sample costs (features and
    activations). A stack's length is its first client's count (sizes are descending within
    it); a client joins the open stack while ``(n + 1) * L <= max_waste * real`` and
    ``(n + 1) * L * per_sample <= max_elements``, where ``real`` counts at least one sample
    per client. A single client always forms a stack, whatever its size.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if max_waste < 1.0:
        raise ValueError(f"max_waste must be at least 1, got {max_waste}")
    order = np.argsort(-counts, kind="stable")
    stacks: list[list[int]] = []
    length = real = 0
    for client in order.tolist():
        size = max(1, int(counts[client]))
        if stacks:
            n = len(stacks[-1]) + 1
            fits = n * length * per_sample <= max_elements
            if fits and n * length <= max_waste * (real + size):
                stacks[-1].append(client)
                real += size
                continue
        stacks.append([client])
        length, real = size, size
    return [np.array(stack, dtype=np.int64) for stack in stacks]


def padded_length(counts: np.ndarray, stack: np.ndarray) -> int:
    """The padded test length of ``stack``: its longest test set (at least 1)."""
    return max(1, int(np.asarray(counts)[stack].max(initial=0)))
