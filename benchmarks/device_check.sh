#!/usr/bin/env bash
# The GPU check, run from the repo root on a machine with CUDA (one short script, so that a
# borrowed GPU is held for minutes): the GPU path against the CPU reference (tests that take the
# `device` fixture), then the client-throughput benchmark on the GPU. No install step: it needs
# torch, numpy, pandas, pyyaml, tqdm, pytest and hypothesis already there.
# Writes tests.txt, bench.txt and clients_cuda.{csv,md} to $OUT (default /tmp/device_check).
set -uo pipefail
out=${OUT:-/tmp/device_check}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
PERSAFL_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider \
  tests/test_fused.py tests/test_models.py tests/test_executor.py \
  -k "fused_step_equals or batched_gradients_equal or vectorized_equals" 2>&1 | tee "$out/tests.txt"
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_clients.py --device cuda \
  --clients 20 100 1000 --budget "${BENCH_BUDGET:-1.5}" --repeats 2 --mem-gb 16 \
  --out "$out" --tag clients_cuda 2>&1 | tee "$out/bench.txt"
