"""The workflow profiles use only options snakemake and its SLURM plugin know (issue 16, 13/18)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_slurm_profile_names_jobs_and_keeps_logs():
    from snakemake_executor_plugin_slurm import ExecutorSettings

    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    known = {f"slurm-{f.name.replace('_', '-')}" for f in dataclasses.fields(ExecutorSettings)}
    plugin_keys = {k for k in profile if k.startswith("slurm-")}
    assert plugin_keys <= known, plugin_keys - known
    assert profile["slurm-jobname-prefix"] == "persafl"
    assert profile["slurm-delete-logfiles-older-than"] == 0
    assert not profile.get("slurm-keep-successful-logs")  # failed jobs' logs are kept anyway
