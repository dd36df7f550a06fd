# The personalization regime study (issue 14; persafl.regime). Under a regime config
# (config/regime.yaml: a `regime:` section) its runs are tabulated per client and summarized;
# under any other config those tables are the committed ones and only the figure is drawn.
#   snakemake --cores 2 --configfile config/regime.yaml      # the study's tables and figures
#   snakemake paper_figures/fig_regime_fashion_mnist.pdf --force   # from the committed table
# Helpers: workflow/rules/regime_common.smk.

if config.get("regime"):

    rule regime_clients:
        input:
            regime_runs,
        output:
            clients=f"{REGIME}/clients.csv",
            runs=f"{REGIME}/final.csv",
        log:
            "results/logs/regime/clients_{dataset}.log",
        params:
            partitions=regime_partitions,
        conda:
            ENV
        shell:
            "python -m persafl.regime clients --runs {input} --partitions {params.partitions:q}"
            " --out {output.clients} --runs-out {output.runs} > {log} 2>&1"

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
        regime_summary_of,
    output:
        pdf=report("paper_figures/fig_regime_{dataset}.pdf", caption="../report/fig_regime.rst", category="Regime", subcategory="{dataset}"),
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
