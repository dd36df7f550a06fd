"""Table of the HF controls (run.py): global and personalized accuracy, final and peak.

    python benchmarks/hvp_control/table.py --runs results/hvp_control \
        --out benchmarks/hvp_control/table.md

Reads each run's metrics.csv (client-averaged test accuracy per evaluation) and summary.json;
a run without summary.json (unfinished) is listed as missing, never as a result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from run import RUNS  # noqa: E402


def row(name: str, run_dir: Path) -> dict:
    method, hvp, activation = RUNS[name]
    out = {"run": name, "method": method, "hvp": hvp or "-", "activation": activation}
    if not (run_dir / "summary.json").exists():
        return {**out, "status": "missing"}
    summary = json.loads((run_dir / "summary.json").read_text())
    m = pd.read_csv(run_dir / "metrics.csv")
    peak = m.loc[m["global_acc_ca"].idxmax()]
    return {
        **out,
        "status": summary.get("status", "ok"),
        "global_peak": 100 * peak["global_acc_ca"],
        "global_peak_update": int(peak["update"]),
        "global_final": 100 * m["global_acc_ca"].iloc[-1],
        "global_drop": 100 * (peak["global_acc_ca"] - m["global_acc_ca"].iloc[-1]),
        "personal_final": 100 * m["personal_acc_ca"].iloc[-1],
        "updates": int(m["update"].iloc[-1]),
        "wall_s": round(float(summary.get("wall_seconds", float("nan")))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, default=Path("results/hvp_control"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/hvp_control/table.md"))
    parser.add_argument(
        "--tuned", action="store_true", help="the runs used the tuned values (run.py --tuned)"
    )
    args = parser.parse_args()
    table = pd.DataFrame([row(name, args.runs / name) for name in RUNS])
    for column in ("global_peak_update", "updates", "wall_s"):
        if column in table:
            table[column] = table[column].astype("Int64")  # counts, not floats (missing: <NA>)
    text = table.to_markdown(index=False, floatfmt=".1f")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "HF controls, Fashion-MNIST (config/config.yaml: 20 clients x 2 labels, MLP 784-100-10, "
        "bound 16, seed 0; "
        + (
            "each method's tuned values, paper_figures/table_tuning.csv"
            if args.tuned
            else "the config's base values, untuned"
        )
        + ").\nAccuracy: client-averaged test accuracy (%); peak = best "
        "evaluation of the global model, drop = peak - final.\n\n" + text + "\n"
    )
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
