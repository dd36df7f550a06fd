# The personalization regime study (issue 14; persafl.regime). Under a regime config
# (config/regime.yaml: a `regime:` section) its runs are tabulated per client and summarized;
# under any other config those tables are the committed ones and only the figure is drawn.
#   snakemake --cores 2 --configfile config/regime.yaml -- \
#       results/tables/regime/dataset~fashion_mnist/summary.csv
#   snakemake paper_figures/fig_regime_fashion_mnist.pdf          # from the committed table

REGIME = "results/tables/regime/dataset~{dataset}"

if config.get("regime"):
    from persafl import regime as regime_study

    try:
        regime_study.check_regime(config)
    except regime_study.RegimeError as err:
        raise WorkflowError(f"persafl: {err}") from None

    def regime_runs(wildcards):
        """Every run file of the study's bound on one data set (local runs at bound 0)."""
        tau = config["regime"]["tau"]
        return run_files(sweep.run_keys(config, dataset=wildcards.dataset, tau=tau))

    def regime_partitions(wildcards):
        return json.dumps(regime_study.partition_labels(config, wildcards.dataset))

    rule regime_clients:
        input:
            regime_runs,
        output:
            f"{REGIME}/clients.csv",
        log:
            "results/logs/regime/clients_{dataset}.log",
        params:
            partitions=regime_partitions,
        conda:
            ENV
        shell:
            "python -m persafl.regime clients --runs {input} --partitions {params.partitions:q}"
            " --out {output} > {log} 2>&1"

    rule regime_summary:
        input:
            f"{REGIME}/clients.csv",
        output:
            summary=f"{REGIME}/summary.csv",
            winrate=f"{REGIME}/winrate.md",
        log:
            "results/logs/regime/summary_{dataset}.log",
        params:
            out_dir=REGIME,
        conda:
            ENV
        shell:
            "python -m persafl.regime summary --clients {input} --out-dir {params.out_dir}"
            " > {log} 2>&1"


rule fig_regime:
    input:
        f"{REGIME}/summary.csv",
    output:
        pdf="paper_figures/fig_regime_{dataset}.pdf",
        png="paper_figures/fig_regime_{dataset}.png",
    log:
        "results/logs/figures/fig_regime_{dataset}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m persafl.figures regime --summary {input} --dataset {wildcards.dataset}"
        " --out {output.pdf} > {log} 2>&1"
