"""Table of issue 11's Dirichlet(0.1) check (config/dirichlet.yaml) beside the majority baseline.

    snakemake --cores 2 --configfile config/dirichlet.yaml --directory /tmp/dirichlet \
        -- results/tables/table_final.csv
    python benchmarks/dirichlet/table.py --root /tmp/dirichlet --out benchmarks/dirichlet/table.md

Reads the workflow's aggregated ``results/tables/dataset~mnist/final.csv`` (one row per final
run: the last evaluation) and the tuning selections ``results/tuning/mnist/<method>.yaml``
under ``--root``, and writes per method and staleness bound the client-averaged test accuracy
of the global and the personalized model (mean and min..max over seeds) with the majority-class
baseline of the same clients beside it, plus the selected hyperparameters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

METHODS = ("afl", "persafl_me", "local")


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    """Per (method, tau): seeds, mean / min / max of global, personalized and majority accuracy."""
    rows = []
    for (method, tau), runs in final.groupby(["method", "tau"], sort=True):
        row = {"method": method, "tau": int(tau), "seeds": len(runs),
               "diverged": int((runs["status"] != "completed").sum())}
        for name in ("global_acc_ca", "personal_acc_ca", "majority_acc_ca"):
            values = 100 * runs[name]
            row[name] = values.mean()
            row[f"{name}_range"] = f"{values.min():.1f}..{values.max():.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def selections(root: Path) -> dict[str, str]:
    out = {}
    for method in METHODS:
        path = root / "results" / "tuning" / "mnist" / f"{method}.yaml"
        if path.is_file():
            chosen = yaml.safe_load(path.read_text())
            hp = ", ".join(f"{k} {v:g}" for k, v in sorted(chosen["hp"].items()))
            edge = "; edge: " + ", ".join(chosen["edge"]) if chosen.get("edge") else ""
            out[method] = hp + edge
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("/tmp/dirichlet"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dirichlet/table.md"))
    args = parser.parse_args()
    final = pd.read_csv(args.root / "results" / "tables" / "dataset~mnist" / "final.csv")
    table = summarize(final)
    table.to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.2f")
    chosen = selections(args.root)
    lines = [
        "| method | bound | seeds | global (%) | personalized (%) | majority class (%) |",
        "|---|---:|---:|---|---|---:|",
    ]
    for r in table.itertuples():
        g = "-" if pd.isna(r.global_acc_ca) else f"{r.global_acc_ca:.1f} ({r.global_acc_ca_range})"
        lines.append(
            f"| {r.method} | {r.tau} | {r.seeds} | {g} | {r.personal_acc_ca:.1f} "
            f"({r.personal_acc_ca_range}) | {r.majority_acc_ca:.1f} |"
        )
    lines += ["", "Tuned values (validation split, bound 8):", ""]
    lines += [f"- {m}: {v}" for m, v in chosen.items()]
    args.out.write_text(
        "MNIST, Dirichlet(0.1), 20 clients of unequal size, MLP 784-100-10, 2,000 updates, "
        "policy drop (config/dirichlet.yaml).\nClient-averaged final test accuracy, mean "
        "(min..max) over seeds; majority class: each client's most frequent train label.\n\n"
        + "\n".join(lines) + "\n"
    )
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
