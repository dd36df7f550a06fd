"""A training process's start and exit (persafl.process): deterministic kernels without torch's
compiler stack, no torchvision for MNIST, no torch._dynamo for the baselines, and an exit that
skips the interpreter's teardown but loses no output. Each check runs in a fresh interpreter,
because what a process imported is the thing under test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    # buffered streams, as in a workflow job (PYTHONUNBUFFERED would hide a missing flush)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_deterministic_kernels_without_the_compiler() -> None:
    done = _python(
        """
        import sys, torch
        from persafl.process import use_deterministic_kernels
        use_deterministic_kernels()
        print(torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory,
              "torch._inductor" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "False"]


def test_exit_now_flushes_the_streams_and_the_log_and_keeps_the_code() -> None:
    # stdout to a pipe is block-buffered: without the flush the line would be lost
    done = _python(
        """
        import logging, sys
        from persafl.process import exit_now
        logging.basicConfig(stream=sys.stderr, format="%(message)s")
        logging.getLogger("t").warning("last words")
        print("written", end="")
        exit_now(3)
        """
    )
    assert done.returncode == 3
    assert done.stdout == "written"
    assert done.stderr.strip() == "last words"


def test_mnist_loader_and_baselines_import_neither_torchvision_nor_dynamo() -> None:
    done = _python(
        """
        import sys, numpy as np, torch
        import persafl.data.vision
        from persafl.baselines import client_baselines
        from persafl.models import build_model, init_params
        model = build_model("mlp", (6,), 3, hidden=4)
        x, y = torch.randn(12, 6), torch.arange(12) % 3
        hp = {"batch_size": 2, "local_lr": 0.1, "eval_adapt_steps": 2}
        out = client_baselines(model, hp, init_params(model, 0), x, y,
                               [np.arange(8)], [np.arange(8, 12)], 3, 0, 5)
        assert np.isfinite(out["finetune_acc"]).all()
        print(sorted(m for m in ("torchvision", "torch._dynamo", "torch._inductor")
                     if m in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
