"""Per-rule wall-clock of a workflow run, from Snakemake's benchmark files.

    python benchmarks/rule_times.py [--root results/benchmarks] [--out FILE.md]
        [--runs results/runs]
        [--resources workflow/resources/train_groups.csv --config config/config.yaml]

Every training group writes ``results/benchmarks/train/dataset~D/partition~P/method~M.tsv``
(Snakemake's ``benchmark:``: seconds, max RSS, CPU time). This groups them by rule, data set and
method and prints a Markdown table: jobs, total and mean seconds, mean max RSS; the total
CPU-seconds of the jobs divided by the cores gives a lower bound of the wall clock of the run.

``--resources`` also writes (merging into an existing file, newer rows win) the measured table
the workflow derives each training group's SLURM runtime and memory from
(:mod:`persafl.resources`); ``--config`` names the sweep config the groups came from (for
their number of runs and threads).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

KEY = re.compile(r"(\w+)~([^/]+)")


def load(root: Path) -> pd.DataFrame:
    """One row per benchmark file: rule, the path's key~value parts, and its measurements."""
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root).with_suffix("")
        table = pd.read_csv(path, sep="\t")
        if table.empty:
            raise ValueError(f"{path}: empty benchmark file")
        row = {"rule": rel.parts[0], **dict(KEY.findall(str(rel)))}
        row.update(table.iloc[-1][["s", "max_rss", "cpu_time"]].to_dict())
        rows.append(row)
    if not rows:
        raise ValueError(f"{root}: no benchmark files (run the workflow first)")
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Jobs, total and mean seconds and mean max RSS (MB) per rule, data set and method."""
    keys = [k for k in ("rule", "dataset", "method") if k in frame.columns]
    grouped = frame.fillna({k: "-" for k in keys}).groupby(keys)
    table = grouped.agg(
        jobs=("s", "size"), total_s=("s", "sum"), mean_s=("s", "mean"), rss_mb=("max_rss", "mean")
    )
    return table.round(1).reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--resources", type=Path, help="write the measured group table here")
    parser.add_argument(
        "--runs", type=Path, help="also report evaluation's share of training (results/runs)"
    )
    parser.add_argument("--config", type=Path, nargs="+", help="sweep config(s) of the run")
    args = parser.parse_args(argv)
    if args.resources and not args.config:
        parser.error("--resources needs --config (the sweep the groups came from)")
    try:
        frame = load(args.root)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    table = summarize(frame)
    total = frame["s"].sum()
    text = table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False)
    text += f"\n\n{len(frame)} jobs, {total:.0f} job-seconds in all ({total / 3600:.2f} h).\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.resources:
        write_resources(frame, args.resources, args.config)
    if args.runs:
        share = eval_share(args.runs)
        print(share.to_markdown(index=False) if _has_tabulate() else share.to_string(index=False))
    return 0


def eval_share(root: Path) -> pd.DataFrame:
    """Per data set and method: evaluation's share of the training wall time, from every
    run's summary.json (``eval_seconds`` over the run's share of its group's wall time)."""
    import json

    rows = []
    for path in sorted(root.rglob("summary.json")):
        summary = json.loads(path.read_text())
        if "eval_seconds" not in summary:
            continue
        rel = dict(KEY.findall(str(path.relative_to(root))))
        rows.append(
            {
                "dataset": rel.get("dataset"),
                "method": rel.get("method"),
                "eval_s": summary["eval_seconds"],
                "wall_s": summary["wall_seconds"],
            }
        )
    if not rows:
        raise ValueError(f"{root}: no summary.json with eval_seconds")
    frame = pd.DataFrame(rows).groupby(["dataset", "method"]).sum().reset_index()
    frame["eval_share_%"] = (100 * frame["eval_s"] / frame["wall_s"]).round(1)
    return frame.round(1)


def write_resources(frame: pd.DataFrame, path: Path, configs: list[Path]) -> None:
    """Merge the training groups' measurements into ``path`` (persafl.resources format)."""
    from persafl import resources, sweep

    cfg = sweep.load_sweep_config(configs)
    train = frame[frame["rule"] == "train"].copy()
    runs, threads = {}, {}
    for group in sweep.group_keys(cfg):
        key = (group.dataset, group.partition, group.method)
        runs[key] = len(sweep.group_runs(cfg, group))
        threads[key] = cfg["datasets"][group.dataset]["resources"]["threads"]
    keys = list(zip(train["dataset"], train["partition"], train["method"], strict=True))
    train["runs"] = [runs.get(k, 0) for k in keys]
    train["threads"] = [threads.get(k, 1) for k in keys]
    train = train[train["runs"] > 0]
    rows = {r["group"]: r for r in resources.measured_rows(train)}
    if path.exists():
        old = pd.read_csv(path).to_dict("records")
        rows = {**{r["group"]: r for r in old}, **rows}
    out = pd.DataFrame(list(rows.values()), columns=list(resources.COLUMNS))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.sort_values("group").to_csv(path, index=False)
    print(f"wrote {len(rows)} training groups to {path}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
