"""persafl.claims: verdict rules on tiny tables, and the committed summary blocks of README.md
and docs/results.md equal what the committed tables give (issue 17: the numbers quoted in
both are compared with the tables, not typed by hand)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from persafl import claims

CHECKOUT = Path(__file__).resolve().parents[1]


def _final(rows: list[tuple[str, str, int, float, float]]) -> pd.DataFrame:
    """table_final-shaped rows: (dataset, method, tau, acc, global); local fixed at 0.90."""
    return pd.DataFrame(
        [
            {
                "dataset": d,
                "method": m,
                "tau": t,
                "acc_mean": a,
                "global_acc_mean": g,
                "local_acc_mean": 0.90,
            }
            for d, m, t, a, g in rows
        ]
    )


def test_personalization_verdicts_follow_the_stated_rule() -> None:
    # d1: ME 0.95 beats global 0.80 and local 0.90; d2: ME 0.85 beats global 0.80 only
    rows = [
        ("d1", "afl", 4, 0.80, 0.80),
        ("d1", "persafl_me", 4, 0.95, 0.80),
        ("d2", "afl", 4, 0.80, 0.80),
        ("d2", "persafl_me", 4, 0.85, 0.80),
    ]
    assert claims.personalization(_final(rows), 4).verdict == "partly"
    both = [r if r[0] == "d1" else (*r[:3], 0.97, r[4]) for r in rows]
    both[2] = ("d2", "afl", 4, 0.80, 0.80)
    assert claims.personalization(_final(both), 4).verdict == "supported"
    neither = [(d, m, t, 0.70 if m != "afl" else a, g) for d, m, t, a, g in rows]
    assert claims.personalization(_final(neither), 4).verdict == "not supported"
    assert "ME 95.0 vs global 80.0, local 90.0" in claims.personalization(_final(rows), 4).numbers


def test_staleness_loss_is_bound_zero_minus_the_largest_bound_per_method() -> None:
    rows = [
        ("d", "afl", 0, 0.90, 0.90),
        ("d", "afl", 64, 0.89, 0.89),  # loses 1.0
        ("d", "persafl_me", 0, 0.95, 0.80),
        ("d", "persafl_me", 64, 0.92, 0.80),  # loses 3.0: beyond the 2-point tolerance
    ]
    claim = claims.staleness_updates(_final(rows))
    assert claim.verdict == "not supported"
    assert "at most 3.0 (ME)" in claim.numbers
    claim = claims.staleness_updates(_final(rows[:2]))
    assert claim.verdict == "supported" and "at most 1.0 (A-FL)" in claim.numbers


def test_anchor_is_judged_per_data_set() -> None:
    table = pd.DataFrame(
        {
            "dataset": ["a", "a", "b", "b"],
            "run": ["fedavg", "fedavg", "fedavg", "pfedme"],
            "statistic": ["final", "best over rounds", "final", "final"],
            "ours_minus_code_sw": [0.4, 5.0, 1.5, -0.2],  # the best-over-rounds 5.0 is ignored
        }
    )
    assert claims.anchor(table).verdict == "partly"  # a within 1 point, b not
    table.loc[2, "ours_minus_code_sw"] = -0.9
    assert claims.anchor(table).verdict == "supported"


def test_regime_win_rate_is_read_per_client_rows_not_recomputed_from_means() -> None:
    summary = pd.DataFrame(
        {
            "dataset": ["d"] * 3,
            "skew": ["s"] * 3,
            "cap": ["10", "30", "30"],
            "method": ["persafl_me", "persafl_me", "afl_masked"],
            "win_rate": [0.4, 0.6, 0.9],
        }
    )
    claim = claims.regime([summary])
    assert claim.verdict == "partly" and "s at most 60 % (ME, d, 30/client)" in claim.numbers
    assert claims.regime([]).verdict == "untestable here"


def test_a_block_needs_its_markers() -> None:
    with pytest.raises(ValueError, match="needs exactly one"):
        claims.replace_block("no markers here", "x", "README.md")
    text = f"a\n{claims.BEGIN}\nold\n{claims.END}\nb"
    assert claims.replace_block(text, "NEW", "f") == "a\nNEW\nb"


def test_committed_summary_blocks_match_the_committed_tables() -> None:
    """README.md and docs/results.md quote the same summary, computed from the tables."""
    from test_committed_figures import COMMITTED_PATHS, committed_root

    paths = (*COMMITTED_PATHS, "benchmarks/hvp_control", *claims.TARGETS)
    root = committed_root(CHECKOUT, paths)
    assert claims.main(["--root", str(root), "--docs", str(root), "--check"]) == 0
    block = claims.markdown(
        claims.collect(root), claims.config_files(root), claims.final_runs_tuned(root)
    )
    for target in claims.TARGETS:
        assert block in (root / target).read_text()


def test_an_ordering_within_the_seed_noise_is_a_tie_not_a_win() -> None:
    # d1: ME ahead by 3 points with std 0.5 over 5 seeds (SE of the gap 0.32): ahead;
    # d2: ahead by 0.1 point with std 0.5: within 2 standard errors, a tie
    rows = pd.DataFrame(
        [
            {"dataset": d, "method": m, "tau": 4, "acc_mean": a, "acc_std": 0.005, "n_seeds": 5}
            for d, m, a in [
                ("d1", "persafl_me", 0.93),
                ("d1", "persafl_maml_fo", 0.90),
                ("d2", "persafl_me", 0.901),
                ("d2", "persafl_maml_fo", 0.900),
            ]
        ]
    )
    claim = claims.maml_vs_me(rows, 4)
    assert claim.verdict == "partly"
    assert "d1 93.0 vs 90.0;" in claim.numbers and "d2 90.1 vs 90.0 (tie)" in claim.numbers
    tight = rows.assign(acc_std=0.0)  # no spread: any gap counts
    assert claims.maml_vs_me(tight, 4).verdict == "supported"
    behind = rows.assign(acc_mean=[0.90, 0.93, 0.90, 0.93])
    assert claims.maml_vs_me(behind, 4).verdict == "not supported"


def _tree(tmp_path: Path, readme: str, results: str) -> Path:
    from persafl import quoted

    (tmp_path / "paper_figures").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    pd.DataFrame({"acc_mean": [0.977, 0.8362], "tau": [16, 16]}).to_csv(
        tmp_path / "paper_figures" / "table_final.csv", index=False
    )
    for name, body in (("README.md", readme), ("docs/results.md", results)):
        (tmp_path / name).write_text(f"intro\n{quoted.BEGIN}\n{body}\n{quoted.END}\nrest\n")
    return tmp_path


def test_the_quoted_paragraph_must_match_and_quote_only_table_numbers(tmp_path) -> None:
    from persafl import quoted

    good = "HF reaches 97.7 % against 83.6 %, a gain of 14.1 points."
    assert quoted.problems(_tree(tmp_path / "a", good, good)) == []
    typo = good.replace("83.6 %", "83.5 %")  # a number no table holds
    assert quoted.problems(_tree(tmp_path / "b", typo, typo)) == [
        "README.md: 83.5 % is in no committed table"
    ]
    drift = quoted.problems(_tree(tmp_path / "c", good, good.replace("gain", "lead")))
    assert drift == ["docs/results.md and README.md quote different paragraphs"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "README.md").write_text("no markers\n")
    (tmp_path / "d" / "docs").mkdir()
    (tmp_path / "d" / "docs" / "results.md").write_text("no markers\n")
    assert "needs exactly one" in quoted.problems(tmp_path / "d")[0]


def test_the_committed_quoted_paragraph_holds() -> None:
    """On the committed files (not the working tree: `make reproduce` redraws the tables)."""
    from persafl import quoted
    from test_committed_figures import COMMITTED_PATHS, committed_root

    root = committed_root(CHECKOUT, (*COMMITTED_PATHS, "benchmarks/hvp_control", *quoted.TARGETS))
    assert quoted.problems(root) == []
