# Tables from finished runs. Each figure reads the smallest table it needs, so that asking for
# one figure runs only the training it shows: per (dataset, tau) curves for the accuracy
# figure, per dataset final accuracies for the staleness figure, partition counts (no training)
# for the heat map; results/tables/ holds the tables of the whole sweep.


onsuccess:
    # diverged runs are results, not failures: say so at the end instead of exiting silently
    divergence_warning()


# One cell: the runs of one (dataset, partition, method, tau) over the seeds. The tables below
# merge cells (--tables), so no job lists, or prints, every run of the sweep.
rule aggregate_cell:
    input:
        cell_runs,
    output:
        curves="results/tables/cells/dataset~{dataset}/partition~{partition}/method~{method}/tau~{tau}/curves.csv",
        final="results/tables/cells/dataset~{dataset}/partition~{partition}/method~{method}/tau~{tau}/final.csv",
    log:
        "results/logs/aggregate/cells/dataset~{dataset}/partition~{partition}/method~{method}/tau~{tau}.log",
    params:
        out_dir="results/tables/cells/dataset~{dataset}/partition~{partition}/method~{method}/tau~{tau}",
        fail=FAIL_ON_DIVERGENCE,
    conda:
        ENV
    shell:
        "python -m persafl.aggregate --runs {input} --out-dir {params.out_dir}"
        " --runs-tables-only {params.fail} > {log} 2>&1"


rule aggregate_accuracy:
    input:
        accuracy_runs,
    output:
        curves="results/tables/dataset~{dataset}/tau~{tau}/curves.csv",
        final="results/tables/dataset~{dataset}/tau~{tau}/final.csv",
    log:
        "results/logs/aggregate/dataset~{dataset}/tau~{tau}.log",
    params:
        out_dir="results/tables/dataset~{dataset}/tau~{tau}",
        fail=FAIL_ON_DIVERGENCE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    shell:
        "python -m persafl.aggregate --tables {input} --out-dir {params.out_dir} {params.fail}"
        " > {log} 2>&1"


rule aggregate_dataset:
    input:
        dataset_runs,
    output:
        curves="results/tables/dataset~{dataset}/curves.csv",
        final="results/tables/dataset~{dataset}/final.csv",
    log:
        "results/logs/aggregate/dataset~{dataset}.log",
    params:
        out_dir="results/tables/dataset~{dataset}",
        fail=FAIL_ON_DIVERGENCE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    shell:
        "python -m persafl.aggregate --tables {input} --out-dir {params.out_dir} {params.fail}"
        " > {log} 2>&1"


rule aggregate_all:
    input:
        all_runs,
    output:
        curves="results/tables/curves.csv",
        final="results/tables/final.csv",
        table=multiext("results/tables/table_final", ".csv", ".md", ".tex"),
    log:
        "results/logs/aggregate/all.log",
    params:
        fail=FAIL_ON_DIVERGENCE,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    shell:
        "python -m persafl.aggregate --tables {input} --out-dir results/tables {params.fail}"
        " > {log} 2>&1"


# The heat map's table is a copy of the partition CLI's partition_counts.csv (its format is
# pinned in docs/design.md): no training involved. (persafl.aggregate --partitions refuses to
# run without runs, so it cannot serve a figure that must not wait for training.)
rule partition_table:
    input:
        partition_counts_of,
    output:
        "results/tables/partition_{dataset}.csv",
    log:
        "results/logs/aggregate/partition_{dataset}.log",
    conda:
        ENV
    shell:
        "cp {input} {output} > {log} 2>&1"
