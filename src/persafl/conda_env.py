"""workflow/envs/persafl.yaml, the conda environment of ``snakemake --sdm conda``, generated from
requirements-lock.txt so that both pin exactly the same packages.

``python -m persafl.conda_env --write`` rewrites it; ``--check`` exits 1 when it is out of date
(a test does the same). The rules import persafl from the checkout (common.smk puts ``src/`` on
``PYTHONPATH``), so the environment holds only its dependencies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements-lock.txt"
OUTPUT = REPO / "workflow" / "envs" / "persafl.yaml"
PYTHON = "3.11"

HEADER = f"""\
# For `snakemake --sdm conda`: the pinned runtime of the rules, generated from
# requirements-lock.txt by `python -m persafl.conda_env --write` (do not edit by hand; a test
# checks that both agree). The persafl package itself is imported from the checkout (the
# workflow puts src/ on PYTHONPATH), so this environment does not install it. Conda must be
# installed; snakemake itself runs from the project's venv.
name: persafl
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python={PYTHON}
  - pip
  - pip:
"""


def lock_pins(text: str) -> list[str]:
    """The ``name==version`` lines of a pip lock file (comments and blanks dropped)."""
    pins = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [pin for pin in pins if pin]


def render(lock_text: str) -> str:
    return HEADER + "".join(f"      - {pin}\n" for pin in lock_pins(lock_text))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persafl.conda_env", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"rewrite {OUTPUT.name}")
    mode.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    args = parser.parse_args(argv)
    text = render(LOCK.read_text())
    if args.write:
        OUTPUT.write_text(text)
        return 0
    if not OUTPUT.is_file() or OUTPUT.read_text() != text:
        print(
            f"error: {OUTPUT} differs from {LOCK.name}; run python -m persafl.conda_env --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
