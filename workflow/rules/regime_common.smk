# Helpers of the regime study's rules (workflow/rules/regime.smk; persafl.regime).

REGIME = "results/tables/regime/dataset~{dataset}"

if config.get("regime"):
    from persafl import regime as regime_study

    try:
        regime_study.check_regime(config)
    except regime_study.RegimeError as err:
        raise WorkflowError(f"persafl: {err}") from None


def regime_outputs():
    """`all` under a regime config: the study's tables and figures, never the paper figures
    (which its runs would otherwise redraw)."""
    tables = [f"{REGIME}/{name}".format(dataset=d) for d in DATASETS
              for name in ("clients.csv", "final.csv", "summary.csv", "winrate.md")]
    figures = [f"paper_figures/fig_regime_{d}.pdf" for d in config["figures"]["regime"]
               if d in DATASETS]
    return tables + figures


def regime_runs(wildcards):
    """Every run file of the study's bound on one data set (local runs at bound 0)."""
    tau = config["regime"]["tau"]
    return run_files(sweep.run_keys(config, dataset=wildcards.dataset, tau=tau))


def regime_partitions(wildcards):
    """{partition: {skew, cap}} of one data set, as JSON (persafl.regime clients)."""
    return json.dumps(regime_study.partition_labels(config, wildcards.dataset))


def regime_summary_of(wildcards):
    """The study's own table under a regime config; otherwise the committed one of this
    checkout (also when the workflow runs in another --directory, where it is not)."""
    table = f"{REGIME}/summary.csv".format(dataset=wildcards.dataset)
    return table if config.get("regime") else str(REPO / table)
