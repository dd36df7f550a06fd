"""Write the anchor's partition into the pFedMe authors' data format, to run their code on it.

    python benchmarks/anchor/export_partition.py --dataset mnist --seed 0 --pfedme /tmp/pFedMe

Their loader (utils/model_utils.py: read_data, read_user_data) reads every .json file under
``data/<Mnist|Synthetic>/data/{train,test}/``, each ``{"users": [...], "user_data": {user:
{"x": [...], "y": [...]}}, "num_samples": [...]}``, orders the users by sorted name, and builds
float32 tensors (``torch.Tensor(x)``; MNIST rows viewed as 1x28x28) and int64 labels. We write
client c as user ``f_{c:05d}`` (so sorted order is ours), its samples in our index order, the
features of OUR data set (our MNIST standardization, our Synthetic generator), each value
written as the shortest decimal that reads back to the same float32: their tensors hold exactly
our samples (tests/test_anchor.py reads the files back).

The partition is the one the anchor runs use: persafl.anchor.anchor_config (config/anchor.yaml's
sweep config), seed ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

# our data set name -> the name their main.py takes (--dataset), which is also its data folder
THEIR_NAME = {"mnist": "Mnist", "synthetic": "Synthetic"}


def user_name(client: int) -> str:
    return f"f_{client:05d}"


def float32_strings(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shortest float32 decimal of each distinct value, index of each entry of ``x`` into it).

    Formatting distinct values only: standardized MNIST has at most 256 per pixel."""
    values, inverse = np.unique(x.astype(np.float32).ravel(), return_inverse=True)
    strings = np.array([str(v) for v in values], dtype=object)  # numpy: shortest repr
    return strings, inverse.reshape(x.shape)


def _rows(strings: np.ndarray, inverse: np.ndarray, indices: np.ndarray) -> str:
    return ",".join("[" + ",".join(strings[inverse[i]]) + "]" for i in indices)


def write_pfedme_json(x: np.ndarray, y: np.ndarray, split: list[np.ndarray], path: Path) -> None:
    """One JSON file in their format: client c's samples are ``x[split[c]]``, ``y[split[c]]``."""
    x = x.reshape(len(x), -1)
    strings, inverse = float32_strings(x)
    names = [user_name(c) for c in range(len(split))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.write('{"users": ' + json.dumps(names) + ', "user_data": {')
        for c, indices in enumerate(split):
            labels = json.dumps([int(v) for v in y[indices]])
            out.write(("," if c else "") + f'"{names[c]}": {{"x": [')
            out.write(_rows(strings, inverse, indices))
            out.write(f'], "y": {labels}}}')
        out.write('}, "num_samples": ' + json.dumps([int(len(s)) for s in split]) + "}")
    tmp.replace(path)


def export(data, partition, root: Path, dataset: str) -> Path:
    """Writes ``root/data/<Name>/data/{train,test}/anchor.json``; returns the data folder."""
    folder = root / "data" / THEIR_NAME[dataset] / "data"
    for split in ("train", "test"):
        for old in (folder / split).glob("*.json"):  # their loader reads every .json there
            old.unlink()
    x, y = data.x.numpy(), data.y.numpy()
    write_pfedme_json(x, y, partition.train, folder / "train" / "anchor.json")
    write_pfedme_json(x, y, partition.test, folder / "test" / "anchor.json")
    return folder


def read_back(folder: Path) -> tuple[list[str], dict, dict]:
    """Their read_data + read_user_data's tensors: (sorted users, {user: (x, y)} train, test)."""
    out = []
    for split in ("train", "test"):
        user_data: dict = {}
        for path in sorted((folder / split).glob("*.json")):
            user_data.update(json.loads(path.read_text())["user_data"])
        out.append(
            {
                u: (
                    torch.Tensor(d["x"]).type(torch.float32),
                    torch.Tensor(d["y"]).type(torch.int64),
                )
                for u, d in user_data.items()
            }
        )
    return sorted(out[0]), out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--anchor", type=Path, default=Path("config/anchor.yaml"))
    parser.add_argument("--dataset", required=True, choices=list(THEIR_NAME))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pfedme", type=Path, required=True, help="their work tree")
    args = parser.parse_args(argv)
    from persafl import sweep
    from persafl.anchor import anchor_config, load_anchor
    from persafl.data import load_dataset
    from persafl.partition import build_partition

    anchor = load_anchor(args.anchor)
    cfg = sweep.load_sweep_config([Path(anchor["sweep_config"])])
    config = anchor_config(cfg, args.dataset, "fedavg", 1, args.seed)  # partition only
    data_cfg = config["dataset"]
    data = load_dataset(data_cfg["name"], data_cfg["root"], **data_cfg["params"])
    partition = build_partition(config, data)
    folder = export(data, partition, args.pfedme, args.dataset)
    sizes = [len(t) for t in partition.train]
    print(
        f"{args.dataset}: {partition.num_clients} clients, {sum(sizes)} train, "
        f"{sum(len(t) for t in partition.test)} test samples -> {folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
