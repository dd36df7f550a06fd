"""``device: auto``: the GPU only where it is faster, by a rule of thumb stated here.

A stacked gradient step on a GPU costs about a fixed latency, whatever the stack holds: on the
H200 the stacked MNIST-MLP step ran 2,010 times a second at 20 clients (40,205 client steps/s,
benchmarks/results/clients_cuda.md), about 0.5 ms of kernel launches. On the 2-core CPU the
same step costs its arithmetic, at about 100 GFLOP/s for stacked fully connected layers
(benchmarks/README.md). So the GPU pays off once one stacked gradient holds more than

    GPU_STEP_SECONDS x CPU_FLOPS = 0.5 ms x 100 GFLOP/s = 50 MFLOP,

counted as ``jobs per compute call x 6 x batch x parameters`` (forward and backward of a fully
connected model). Examples: the Synthetic MLP (1,430 parameters, batch 20: 0.17 MFLOP a job)
needs about 290 jobs per call, which asynchronous runs never reach (a single Synthetic run took
123 s on the H200 against 27 s on 2 CPU cores); the MNIST MLP (79,510 parameters: 9.5 MFLOP a
job) needs 6, which a group of asynchronous runs reaches. Convolutional models are arithmetic-
bound on a CPU and go to the GPU whenever there is one.

Jobs per call are known before training: they follow from the trace alone
(:func:`jobs_per_call`), so the choice is a pure function of the trace, model and batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from persafl.engine.jobs import JobTable

GPU_STEP_SECONDS = 0.5e-3
CPU_FLOPS = 100e9
THRESHOLD_FLOP = GPU_STEP_SECONDS * CPU_FLOPS


def compute_calls(jobs: JobTable, local: bool = False) -> int:
    """Stacked calls the vectorized backend makes for a trace (no cap on jobs ahead).

    Server methods: a call happens at update ``k`` when one of its jobs starts after the last
    call's update (its start model did not exist then), and computes every job started by
    ``k``. ``local``: a call computes the next job of every client, so it happens when a
    client's next job comes due and it is not yet computed.
    """
    if len(jobs) == 0:
        return 0
    if local:
        calls, computed = 0, np.zeros(int(jobs.client.max()) + 1, dtype=np.int64)
        seen = np.zeros_like(computed)
        for client in jobs.client.tolist():
            if seen[client] == computed[client]:  # this client's next job is not computed
                calls += 1
                computed += 1  # every client's next job, in one call
            seen[client] += 1
        return calls
    calls, computed_upto = 0, -1
    for k in range(len(jobs.first) - 1):
        starts = jobs.start[jobs.first[k] : jobs.first[k + 1]]
        if len(starts) and int(starts.max()) > computed_upto:
            calls += 1
            computed_upto = k
    return calls


def jobs_per_call(jobs: JobTable, local: bool = False) -> float:
    """Mean jobs per stacked call of one run."""
    calls = compute_calls(jobs, local)
    return len(jobs) / calls if calls else 0.0


def has_convolution(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def prefers_gpu(model: nn.Module, batch_size: int, stacked_jobs: Sequence[float]) -> bool:
    """Whether a GPU is faster for a group whose runs stack ``stacked_jobs`` jobs per call
    each (their calls coincide in a group, so their stacks add up)."""
    if has_convolution(model):
        return True
    params = sum(int(p.numel()) for p in model.parameters())
    return float(sum(stacked_jobs)) * 6 * batch_size * params >= THRESHOLD_FLOP
