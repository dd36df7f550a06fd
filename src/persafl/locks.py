"""What the workflow says about snakemake's directory lock before snakemake does.

Snakemake's own lock message advises ``--unlock``; run while another snakemake is still working
in the same directory, that makes the other run fail later with a misleading "filesystem
latency" error. The workflow (common.smk) therefore prints :func:`lock_warning` when the
directory is locked, and refuses ``--unlock`` while :func:`other_snakemakes` finds one running.
"""

from __future__ import annotations

import os
from pathlib import Path


def other_snakemakes(workdir: str | Path) -> list[int]:
    """PIDs of other processes whose command line mentions snakemake and whose working
    directory is ``workdir`` (Linux ``/proc``; empty elsewhere). This process and its
    ancestors are left out."""
    workdir = Path(workdir).resolve()
    skip = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in skip:
        skip.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(entry.name)
            if pid in skip:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if _is_snakemake(argv) and Path(os.readlink(entry / "cwd")).resolve() == workdir:
                found.append(pid)
        except (OSError, ValueError):
            continue
    return sorted(found)


def _is_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``python -m snakemake ...`` or ``python .../snakemake ...`` (not,
    say, ``tail .snakemake/log/...``)."""
    named = any(Path(arg).name == "snakemake" for arg in argv)
    pairs = zip(argv[:-1], argv[1:], strict=True)
    return named or any(a == "-m" and b == "snakemake" for a, b in pairs)


def lock_warning(workdir: str | Path) -> str | None:
    """A warning when ``workdir/.snakemake/locks`` holds a lock, else None."""
    locks = Path(workdir) / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return None
    running = other_snakemakes(workdir)
    who = (
        f"snakemake pid {', '.join(map(str, running))} is running here"
        if running
        else ("no other snakemake seems to run here")
    )
    return (
        f"persafl: this directory is locked ({locks}; {who}). If another snakemake is still "
        "running in it, let it finish or stop it first: --unlock now makes it fail (with a "
        "misleading 'filesystem latency' error). Use --unlock only after a crash (kill -9, "
        "power loss)."
    )


def unlock_refusal(workdir: str | Path) -> str | None:
    """Why ``--unlock`` must not run now (another snakemake works here), or None."""
    running = other_snakemakes(workdir)
    if not running:
        return None
    return (
        f"persafl: refusing --unlock: snakemake pid {', '.join(map(str, running))} is still "
        "running in this directory and would fail; let it finish or stop it (kill PID) first"
    )
