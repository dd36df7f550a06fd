"""The one-screen summary of docs/results.md: each claim, a verdict by a stated rule, and the
numbers it rests on, all computed from the committed tables (never typed by hand).

``python -m persafl.claims --write`` rewrites the block between the markers in docs/results.md
and README.md; ``--check`` fails when either block differs from what the committed tables
give (tests/test_claims.py runs it on the committed tree). The rules are in RULES, printed
under the table; a verdict is one of supported / partly / not supported / untestable here.

Tables read (relative to the repository root; a missing table makes its claims "untestable
here", never an error, so a partial study still gets a true summary):
- paper_figures/table_final.csv    personalized vs local vs global, staleness on updates,
                                   MAML vs ME, FO vs HF (at the manifest's accuracy_tau)
- results/tables/regime/dataset~*/summary.csv   per-client win rates by samples per client
- paper_figures/table_bounds.csv   staleness on updates, virtual time and computation
- paper_figures/table_time.csv     asynchronous vs synchronous time to the sync target
- benchmarks/hvp_control/tuned/table.csv (else benchmarks/hvp_control/table.csv, untuned)
                                   the HF drift with the exact Hessian-vector product
- paper_figures/table_anchor.csv   our synchronous protocol against the pFedMe authors' code
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

BEGIN = "<!-- claims:begin (python -m persafl.claims --write; do not edit by hand) -->"
END = "<!-- claims:end -->"
TARGETS = ("docs/results.md", "README.md")
HVP_CONTROL = "benchmarks/hvp_control/table.csv"
PERSONALIZED = ("persafl_maml_fo", "persafl_maml_hf", "persafl_me")
LABELS = {
    "afl": "A-FL",
    "local": "local",
    "persafl_maml_fo": "MAML FO",
    "persafl_maml_hf": "MAML HF",
    "persafl_me": "ME",
    "afl_finetune": "FedAvg+FT",
    "afl_masked": "label-masked global",
}
DATASETS = {"synthetic": "Synthetic", "mnist": "MNIST", "fashion_mnist": "FMNIST"}
REGIME_CLAIM = "personalized beats local and global per client, 10 samples to all (regime)"
NOISE_SE = 2.0  # a gap is "ahead" only beyond this many standard errors of the difference
TOLERANCE = 2.0  # points: "degrades little" (staleness) and "within" (anchor: 1 point)
RULES = (
    "Rules (points: accuracy percentage points, means over seeds). Personalized vs local and "
    "global: *supported* where the best PersA-FL method beats both on every data set, *partly* "
    "where it beats the global model somewhere. Regime: win rate = share of clients above "
    "max(local, global) of the same client; *partly* when a PersA-FL method wins on more than "
    f"half the clients somewhere. Staleness: tolerated when the largest bound loses at most "
    f"{TOLERANCE:g} points against bound 0; *partly* when that holds on some data sets or axes "
    "only. Asynchronous vs synchronous: *supported* when asynchronous reaches the synchronous "
    "run's target sooner in virtual time in every setting. ME vs MAML, HF vs FO (orderings the "
    "paper does not state; read as statements): *supported* when ahead on every data set, "
    f"*partly* on some; ahead means by more than {NOISE_SE:g} standard errors of the "
    "difference over seeds, otherwise a tie. Anchor: *supported* when every final gap is "
    "within 1 point on every data set, *partly* on some. *untestable here*: the table is "
    "not committed."
)


@dataclass(frozen=True)
class Claim:
    claim: str
    verdict: str
    numbers: str
    source: str


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _at_tau(final: pd.DataFrame, tau: int) -> pd.DataFrame:
    return final[final["tau"] == tau].set_index(["dataset", "method"])


def personalization(final: pd.DataFrame, tau: int) -> Claim:
    """Best PersA-FL method against A-FL's global model and local training, per data set."""
    at = _at_tau(final, tau)
    parts, beats_global, beats_both = [], [], []
    for dataset in final["dataset"].drop_duplicates():
        rows = at.loc[dataset]
        pers = rows.loc[[m for m in PERSONALIZED if m in rows.index], "acc_mean"]
        best = pers.idxmax()
        p, g = pers[best], rows.loc["afl", "global_acc_mean"]
        loc = rows.loc["afl", "local_acc_mean"]
        beats_global.append(p > g)
        beats_both.append(p > g and p > loc)
        parts.append(
            f"{DATASETS.get(dataset, dataset)}: {LABELS[best]} {_pct(p)} vs global {_pct(g)}, "
            f"local {_pct(loc)}"
        )
    verdict = "supported" if all(beats_both) else "partly" if any(beats_global) else "not supported"
    return Claim(
        f"personalized beats local and global (bound {tau})",
        verdict,
        "; ".join(parts),
        "table_final",
    )


def regime(summaries: list[pd.DataFrame]) -> Claim:
    """Per label skew, the best per-client win rate of any PersA-FL method (over data sets and
    sizes), beside the label-masked global model's."""
    if not summaries:
        return Claim(REGIME_CLAIM, "untestable here", "not run", "-")
    table = pd.concat(summaries, ignore_index=True)
    wins = table[table["win_rate"].notna()]
    pers = wins[wins["method"].isin(PERSONALIZED)]
    parts = []
    for skew, rows in pers.groupby("skew", sort=False):
        top = rows.loc[rows["win_rate"].idxmax()]
        parts.append(
            f"{skew} at most {100 * top['win_rate']:.0f} % ({LABELS[top['method']]}, "
            f"{DATASETS.get(top['dataset'], top['dataset'])}, {top['cap']}/client)"
        )
    masked = wins[wins["method"] == "afl_masked"]
    if not masked.empty:
        top = masked.loc[masked["win_rate"].idxmax()]
        parts.append(
            f"label-masked global at most {100 * top['win_rate']:.0f} % "
            f"({DATASETS.get(top['dataset'], top['dataset'])} {top['skew']})"
        )
    best = float(pers["win_rate"].max()) if not pers.empty else 0.0
    return Claim(
        REGIME_CLAIM,
        "partly" if best > 0.5 else "not supported",
        "best PersA-FL win rate: " + "; ".join(parts),
        "regime summary",
    )


def staleness_updates(final: pd.DataFrame) -> Claim:
    """Largest loss from bound 0 to the largest bound, over methods, per data set."""
    parts, ok = [], []
    for dataset, rows in final.groupby("dataset", sort=False):
        lo, hi = rows["tau"].min(), rows["tau"].max()
        acc = rows.pivot_table(index="method", columns="tau", values="acc_mean")
        loss = 100 * (acc[lo] - acc[hi])
        worst = loss.idxmax()
        ok.append(loss.max() <= TOLERANCE)
        name = DATASETS.get(dataset, dataset)
        parts.append(f"{name}: at most {loss.max():.1f} ({LABELS.get(worst, worst)})")
    verdict = "supported" if all(ok) else "partly" if any(ok) else "not supported"
    lo, hi = final["tau"].min(), final["tau"].max()
    return Claim(
        f"staleness tolerated, per server update (bound {lo} to {hi})",
        verdict,
        "loss " + "; ".join(parts),
        "table_final",
    )


AXES = (("acc_updates_mean", "updates"), ("acc_time_mean", "time"), ("acc_compute_mean", "work"))


def staleness_axes(bounds: pd.DataFrame, setting: str = "drop_exponential") -> Claim:
    """Bound 0 against the largest bound on three x-axes, per method, on the clock setting."""
    rows = bounds[bounds["setting"] == setting]
    parts, ok = [], []
    for method, sub in rows.groupby("method", sort=False):
        sub = sub.set_index("tau")
        lo, hi = sub.index.min(), sub.index.max()
        cells = []
        for column, axis in AXES:
            a, b = sub.loc[lo, column], sub.loc[hi, column]
            ok.append(100 * (a - b) <= TOLERANCE)
            cells.append(f"{axis} {_pct(a)}->{_pct(b)}")
        parts.append(f"{LABELS.get(method, method)} bound {lo}->{hi}: " + ", ".join(cells))
    verdict = "supported" if all(ok) else "partly" if any(ok) else "not supported"
    return Claim(
        "staleness tolerated on updates, virtual time, computation",
        verdict,
        "; ".join(parts) + " (Synthetic)",
        "table_bounds",
    )


def async_vs_sync(time: pd.DataFrame) -> Claim:
    """Virtual time to the synchronous target, asynchronous / synchronous."""
    ratio = time["ratio"].dropna()
    verdict = "supported" if len(ratio) and (ratio < 1).all() else "partly"
    return Claim(
        "asynchronous reaches accuracy sooner than synchronous",
        verdict,
        f"time ratio async/sync {ratio.min():.2f}-{ratio.max():.2f} over "
        f"{len(ratio)} settings (sync averages 5 clients at server_lr 1)",
        "table_time",
    )


def gap_standard_error(a: pd.Series, b: pd.Series) -> float:
    """Standard error of the difference of two seed means, in points (Welch: the seeds'
    standard deviations over their counts); 0 where a table has no spread columns."""
    if not {"acc_std", "n_seeds"} <= set(a.index):
        return 0.0
    var = a["acc_std"] ** 2 / a["n_seeds"] + b["acc_std"] ** 2 / b["n_seeds"]
    return 100 * float(var) ** 0.5


def _pair(final: pd.DataFrame, tau: int, first: str, second: str) -> tuple[list[int], str]:
    """Per data set: +1 when ``first`` is ahead of ``second`` by more than NOISE_SE standard
    errors, -1 when behind by as much, 0 (a tie, marked in the text) otherwise."""
    at = _at_tau(final, tau)
    signs, parts = [], []
    for dataset in final["dataset"].drop_duplicates():
        a, b = at.loc[(dataset, first)], at.loc[(dataset, second)]
        gap = 100 * (a["acc_mean"] - b["acc_mean"])
        margin = NOISE_SE * gap_standard_error(a, b)
        sign = 1 if gap > margin else -1 if gap < -margin else 0
        signs.append(sign)
        tie = " (tie)" if sign == 0 else ""
        name = DATASETS.get(dataset, dataset)
        parts.append(f"{name} {_pct(a['acc_mean'])} vs {_pct(b['acc_mean'])}{tie}")
    return signs, "; ".join(parts)


def _ahead(signs: list[int]) -> str:
    """supported: ahead beyond noise on every data set; partly: on some; not supported: none."""
    ahead = [s > 0 for s in signs]
    return "supported" if all(ahead) else "partly" if any(ahead) else "not supported"


def maml_vs_me(final: pd.DataFrame, tau: int) -> Claim:
    gaps, text = _pair(final, tau, "persafl_me", "persafl_maml_fo")
    return Claim(
        f"ME personalizes better than MAML FO (bound {tau})", _ahead(gaps), text, "table_final"
    )


def fo_vs_hf(
    final: pd.DataFrame, tau: int, control: pd.DataFrame | None, tuned: bool = False
) -> Claim:
    gaps, text = _pair(final, tau, "persafl_maml_hf", "persafl_maml_fo")
    if control is not None:
        hf = control[control["method"] == "persafl_maml_hf"].set_index("hvp")
        if {"finite_difference", "exact"} <= set(hf.index):
            fd, ex = hf.loc[["finite_difference"]].iloc[0], hf.loc[["exact"]].iloc[0]
            text += (
                f"; HF global model {fd['global_peak']:.1f}->{fd['global_final']:.1f} "
                f"(finite difference), ->{ex['global_final']:.1f} (exact HVP)"
                + ("" if tuned else ", untuned control")
            )
    return Claim(f"HF personalizes better than FO (bound {tau})", _ahead(gaps), text, "table_final")


def anchor(table: pd.DataFrame) -> Claim:
    """Final accuracy, ours minus the authors' code, at equal rounds; judged per data set."""
    rows = table[(table["statistic"] == "final") & table["ours_minus_code_sw"].notna()]
    within = rows.groupby("dataset", sort=False)["ours_minus_code_sw"].apply(
        lambda gaps: bool((gaps.abs() <= 1.0).all())
    )
    verdict = "supported" if within.all() else "partly" if within.any() else "not supported"
    text = "; ".join(
        f"{DATASETS.get(r.dataset, r.dataset)} {r.run} {r.ours_minus_code_sw:+.2f}"
        for r in rows.itertuples()
    )
    return Claim(
        "our synchronous protocol matches the pFedMe authors' code",
        verdict,
        f"ours - theirs, points (sample-weighted, final, equal rounds): {text}",
        "table_anchor",
    )


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def accuracy_tau(root: Path) -> int:
    """The bound of the committed accuracy figures (the manifest's fig_accuracy_* args)."""
    manifest = json.loads((root / "paper_figures" / "manifest.json").read_text())
    taus = {f["args"]["tau"] for f in manifest["figures"] if f.get("kind") == "accuracy"}
    if len(taus) != 1:
        raise ValueError(f"paper_figures/manifest.json: accuracy figures at bounds {taus}")
    return int(taus.pop())


def collect(root: Path) -> list[Claim]:
    """Every claim from the tables under ``root`` (a checkout or an archive of one)."""
    final = _read(root / "paper_figures" / "table_final.csv")
    claims: list[Claim] = []
    if final is not None:
        tau = accuracy_tau(root)
        claims.append(personalization(final, tau))
    summaries = [
        pd.read_csv(p) for p in sorted(root.glob("results/tables/regime/dataset~*/summary.csv"))
    ]
    claims.append(regime(summaries))
    if final is not None:
        claims.append(staleness_updates(final))
    bounds = _read(root / "paper_figures" / "table_bounds.csv")
    if bounds is not None:
        claims.append(staleness_axes(bounds))
    time = _read(root / "paper_figures" / "table_time.csv")
    if time is not None:
        claims.append(async_vs_sync(time))
    if final is not None:
        claims.append(maml_vs_me(final, tau))
        # the control at the final runs' tuned values when it has run, else at the base values
        tuned = _read(root / "benchmarks" / "hvp_control" / "tuned" / "table.csv")
        control = tuned if tuned is not None else _read(root / HVP_CONTROL)
        claims.append(fo_vs_hf(final, tau, control, tuned=tuned is not None))
    table = _read(root / "paper_figures" / "table_anchor.csv")
    if table is not None:
        claims.append(anchor(table))
    return claims


def config_files(root: Path) -> list[str]:
    """The config files the manifest says produced the committed set."""
    manifest = json.loads((root / "paper_figures" / "manifest.json").read_text())
    files = [f["path"] for f in manifest["config"]["files"]]
    tuning = [f["path"] for f in (manifest.get("tuning_config") or {}).get("files", [])]
    return files + [f"{path} (tuning)" for path in tuning if path not in files]


def final_runs_tuned(root: Path) -> bool:
    """Whether the config that made the final tables tunes (its `tuning.enabled`)."""
    import yaml

    manifest = json.loads((root / "paper_figures" / "manifest.json").read_text())
    first = root / manifest["config"]["files"][0]["path"]
    if not first.is_file():
        return False
    cfg = yaml.safe_load(first.read_text()) or {}
    return bool((cfg.get("tuning") or {}).get("enabled"))


def markdown(claims: list[Claim], configs: list[str], tuned: bool = False) -> str:
    made = ", ".join(f"`{c}`" for c in configs)
    hp = "tuned" if tuned else "the config's own, untuned (the base papers' settings)"
    lines = [
        f"Committed set (paper_figures/manifest.json): {made}; the regime tables come from "
        f"`config/regime.yaml`. Hyperparameters of the final runs (table_final): {hp}.",
        "",
        "| claim | verdict | numbers | table |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c.claim} | **{c.verdict}** | {c.numbers} | {c.source} |" for c in claims]
    return "\n".join([BEGIN, *lines, "", RULES, END])


def replace_block(text: str, block: str, where: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{where}: needs exactly one {BEGIN!r} ... {END!r} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return head + block + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persafl.claims", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."), help="where the tables are")
    parser.add_argument("--docs", type=Path, default=Path("."), help="where the targets are")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the blocks in place")
    mode.add_argument("--check", action="store_true", help="fail if a block is out of date")
    args = parser.parse_args(argv)
    block = markdown(collect(args.root), config_files(args.root), final_runs_tuned(args.root))
    if not (args.write or args.check):
        print(block)
        return 0
    stale = []
    for target in TARGETS:
        path = args.docs / target
        text = path.read_text()
        new = replace_block(text, block, target)
        if new != text:
            stale.append(target)
            if args.write:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python -m persafl.claims --write)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
