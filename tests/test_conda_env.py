"""workflow/envs/persafl.yaml pins exactly requirements-lock.txt (issue 16, item 14)."""

from __future__ import annotations

import yaml

from persafl import conda_env


def test_conda_env_is_generated_from_the_lock_file():
    assert conda_env.main(["--check"]) == 0


def test_conda_env_pins_every_locked_package_exactly():
    env = yaml.safe_load(conda_env.OUTPUT.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    lock = conda_env.lock_pins(conda_env.LOCK.read_text())
    assert pip == lock and all("==" in pin for pin in pip)
    for name in ("torch==2.14.1", "torchvision==0.29.1"):
        assert name in pip
    assert f"python={conda_env.PYTHON}" in env["dependencies"]
