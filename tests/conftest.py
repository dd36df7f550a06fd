"""Shared fixtures.

``device``: where the tests that take it run their vectorized path: ``cpu`` unless the
environment sets ``PERSAFL_TEST_DEVICE`` (e.g. ``cuda`` on a GPU machine: the references stay on
the CPU, so those tests then check the GPU path against the CPU one).

SLURM's client without its controller: importing snakemake's SLURM executor plugin (which every
``snakemake`` command does, local runs included) runs ``scontrol show config`` and waits about
9 s for an absent controller before it gives up (``get_min_job_age`` of
snakemake-executor-plugin-slurm). The ~30 Snakemake commands of the tests would wait 4-5 min in
all. Where ``scontrol`` is installed but SLURM does not answer, the session puts a stand-in
``scontrol`` that fails at once first on PATH: the plugin then gets what it gets after waiting
(a failed command), and the tests that need SLURM are skipped anyway (:func:`slurm_answers`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch


@functools.cache
def slurm_answers() -> bool:
    """Whether a SLURM controller answers ``sinfo`` (one check per session)."""
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("scontrol") and not slurm_answers():
        shim = Path(tempfile.mkdtemp(prefix="persafl-no-slurm-"))
        stand_in = shim / "scontrol"
        stand_in.write_text("#!/bin/sh\necho 'scontrol: no SLURM controller (tests)' >&2\nexit 1\n")
        stand_in.chmod(0o755)
        os.environ["PATH"] = f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def device() -> str:
    name = os.environ.get("PERSAFL_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"PERSAFL_TEST_DEVICE={name}, but torch sees no CUDA device")
    return name
