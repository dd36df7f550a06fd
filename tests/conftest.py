"""Shared fixtures.

``device``: where the tests that take it run their vectorized path: ``cpu`` unless the
environment sets ``PERSAFL_TEST_DEVICE`` (e.g. ``cuda`` on a GPU machine: the references stay on
the CPU, so those tests then check the GPU path against the CPU one).
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> str:
    name = os.environ.get("PERSAFL_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"PERSAFL_TEST_DEVICE={name}, but torch sees no CUDA device")
    return name
