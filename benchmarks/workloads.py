"""Shapes shared by bench_clients.py and engine_cells.py: MNIST-shaped random workloads."""

from __future__ import annotations

INPUT_SHAPE = (1, 28, 28)
# workload -> (model name, input shape, model params): MNIST-shaped MLP and CNN, and pFedMe's
# Synthetic MLP 60-20-10 (the model of the embedded default)
WORKLOADS = {
    "mlp": ("mlp", INPUT_SHAPE, {}),
    "cnn": ("cnn", INPUT_SHAPE, {}),
    "mlp_synthetic": ("mlp", (60,), {"hidden": 20}),
}
NUM_CLASSES = 10
BATCH_SIZE = 20


def sync(device: str) -> None:
    """Wait for queued GPU work (timings on CUDA are otherwise launch times)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
