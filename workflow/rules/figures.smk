# Paper figures, each from an aggregated table only (never from raw runs), and the manifest
# that records, for every figure, the table and arguments it was drawn from (the list, tables
# and arguments are persafl.paper_files.figure_specs: the figures can be redrawn from the tables).


rule fig_accuracy:
    input:
        accuracy_curves,
    output:
        pdf=report("paper_figures/fig_accuracy_{dataset}.pdf", caption="../report/fig_accuracy.rst", category="Accuracy", subcategory="{dataset}"),
        png="paper_figures/fig_accuracy_{dataset}.png",
    log:
        "results/logs/figures/fig_accuracy_{dataset}.log",
    params:
        tau=ACCURACY_TAU,
        partition=partition_of,
        expect=expected_accuracy_runs,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m persafl.figures accuracy --curves {input} --dataset {wildcards.dataset}"
        " --tau {params.tau} --partition {params.partition} --out {output.pdf}"
        " --expect {params.expect:q} > {log} 2>&1"


rule fig_staleness:
    input:
        "results/tables/dataset~{dataset}/final.csv",
    output:
        pdf=report("paper_figures/fig_staleness_{dataset}.pdf", caption="../report/fig_staleness.rst", category="Staleness", subcategory="{dataset}"),
        png="paper_figures/fig_staleness_{dataset}.png",
    log:
        "results/logs/figures/fig_staleness_{dataset}.log",
    params:
        partition=partition_of,
        expect=expected_dataset_runs,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m persafl.figures staleness --final {input} --dataset {wildcards.dataset}"
        " --partition {params.partition} --out {output.pdf} --expect {params.expect:q}"
        " > {log} 2>&1"


rule fig_partition:
    input:
        "results/tables/partition_{dataset}.csv",
    output:
        pdf=report("paper_figures/fig_partition_{dataset}.pdf", caption="../report/fig_partition.rst", category="Partitions", subcategory="{dataset}"),
        png="paper_figures/fig_partition_{dataset}.png",
    log:
        "results/logs/figures/fig_partition_{dataset}.log",
    params:
        expect=expected_clients,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m persafl.figures partition --counts {input} --out {output.pdf}"
        " --expect {params.expect:q} > {log} 2>&1"


rule copy_table:
    input:
        "results/tables/table_final.{ext}",
    output:
        "paper_figures/table_final.{ext}",
    log:
        "results/logs/figures/table_final_{ext}.log",
    wildcard_constraints:
        ext="csv|md|tex",
    conda:
        ENV
    shell:
        "cp {input} {output} > {log} 2>&1"


# The report shows the final table inline as HTML (a .csv, .md or .tex would be a download).
rule report_table:
    input:
        "results/tables/table_final.csv",
    output:
        report("results/report/table_final.html", caption="../report/table_final.rst", category="Tables"),
    log:
        "results/logs/figures/report_table.log",
    conda:
        ENV
    shell:
        "python -m persafl.figures table --table {input} --out {output} > {log} 2>&1"


rule manifest:
    input:
        figures=paper_figures(),
        tuning=[tuning.selection_path(d, m) for d in TUNED for m in config["methods"]],
    output:
        "paper_figures/manifest.json",
    log:
        "results/logs/figures/manifest.log",
    params:
        sweep=SWEEP_ARGS,
        repo=REPO,
    conda:
        ENV
    shell:
        "python -m persafl.manifest {params.sweep} --repo {params.repo} --out {output}"
        " {input.figures} > {log} 2>&1"
