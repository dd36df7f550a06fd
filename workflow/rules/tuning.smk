# Leak-free tuning (persafl.tuning): per data set and method a grid of hyperparameters, each
# point trained on train-minus-validation of the data set's first partition with the tuning
# seeds; a selection per method by client-averaged validation accuracy at the final checkpoint,
# written to results/tuning/<dataset>/<method>.yaml, which the final runs' run.yaml read
# (run_config in train.smk). The test split is not in the tuning view of the partition.
# Helpers: the tuning block of common.smk.
wildcard_constraints:
    share="[0-9.]+",
    point="p[0-9a-f]+",


# The tuning view of a partition: its train split minus a validation part (drawn with the
# tuning seed vseed), and the validation part in place of test.
rule validation_split:
    priority: SETUP_PRIORITY
    input:
        config="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/config.yaml",
        partition="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/partition.npz",
    output:
        npz="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/validation~{share}/seed~{vseed}/partition.npz",
        stats="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/validation~{share}/seed~{vseed}/partition.json",
    log:
        "results/logs/validation_split/dataset~{dataset}/partition~{partition}/seed~{seed}/validation~{share}/seed~{vseed}.log",
    wildcard_constraints:
        vseed="[0-9]+",
    threads: 1
    resources:
        mem_mb=train_resource("mem_mb"),
        runtime=30,
    conda:
        ENV
    shell:
        "python -m persafl.tuning_cli split --config {input.config} --partition {input.partition}"
        " --share {wildcards.share} --seed {wildcards.vseed} --out {output.npz} > {log} 2>&1"


rule tuning_run_config:
    priority: SETUP_PRIORITY
    output:
        f"results/tuning/runs/{TUNE}/run.yaml",
    log:
        f"results/logs/tuning_run_config/{TUNE}.log",
    params:
        resolved=tuning_run_config_of,
    conda:
        ENV
    shell:
        "python -m persafl.sweep write --json {params.resolved:q} --out {output} > {log} 2>&1"


# One training group per grid point (its tuning seeds stacked): a changed grid value reruns only
# the points that hold it.
for point in tuning.tuning_group_keys(config):
    keys = [k for k in tuning.tuning_keys(config, point[0], point[2]) if k[:4] == point]
    dirs = [tuning.tuning_run_dir(k) for k in keys]
    configs = [f"{d}/run.yaml" for d in dirs]
    parts = [tuning.tuning_partition(config, k.dataset, k.partition, k.seed) for k in keys]
    where = tuning.tuning_group_dir(point)

    rule:
        name:
            "tune_" + "_".join(point)
        input:
            configs=configs,
            partitions=parts,
        output:
            metrics=[f"{d}/metrics.csv" for d in dirs],
            clients=[f"{d}/clients.csv" for d in dirs],
            summaries=[f"{d}/summary.json" for d in dirs],
        log:
            f"results/logs/tuning/{where}.log",
        benchmark:
            f"results/benchmarks/tuning/{where}.tsv"
        params:
            runs=train_args(configs, parts, dirs),
        threads: config["datasets"][point[0]]["resources"]["threads"]
        priority: tuning_priority(point)
        resources:
            mem_mb=config["datasets"][point[0]]["resources"]["mem_mb"],
            runtime=config["datasets"][point[0]]["resources"]["runtime"],
        conda:
            ENV
        shell:
            "python -m persafl.train {params.runs} > {log} 2>&1"


rule tuning_select:
    priority: SETUP_PRIORITY
    input:
        tuning_runs_of,
    output:
        selection="results/tuning/{dataset}/{method}.yaml",
        table="results/tuning/{dataset}/{method}.csv",
    log:
        "results/logs/tuning_select/{dataset}/{method}.log",
    params:
        grid=tuning_grid_of,
        meta=tuning_meta_of,
        runs=tuning_run_args,
    conda:
        ENV
    shell:
        "python -m persafl.tuning_cli select --dataset {wildcards.dataset}"
        " --method {wildcards.method} --grid {params.grid:q} --meta {params.meta:q}"
        " --out {output.selection} --table {output.table} {params.runs} > {log} 2>&1"


rule tuning_dataset_table:
    input:
        tuning_tables_of,
    output:
        "results/tables/tuning_{dataset}.csv",
    log:
        "results/logs/aggregate/tuning_{dataset}.log",
    conda:
        ENV
    shell:
        "python -m persafl.tuning_cli merge --out {output} {input} > {log} 2>&1"


rule tuning_table:
    input:
        [f"results/tables/tuning_{d}.csv" for d in TUNED],
    output:
        multiext("results/tables/table_tuning", ".csv", ".md"),
    log:
        "results/logs/aggregate/table_tuning.log",
    conda:
        ENV
    shell:
        "python -m persafl.tuning_cli table --out-dir results/tables {input} > {log} 2>&1"


rule fig_tuning:
    input:
        "results/tables/tuning_{dataset}.csv",
    output:
        pdf=report("paper_figures/fig_tuning_{dataset}.pdf", caption="../report/fig_tuning.rst", category="Tuning", subcategory="{dataset}"),
        png="paper_figures/fig_tuning_{dataset}.png",
    log:
        "results/logs/figures/fig_tuning_{dataset}.log",
    conda:
        ENV
    shell:
        "python -m persafl.figures tuning --table {input} --dataset {wildcards.dataset}"
        " --out {output.pdf} > {log} 2>&1"


rule copy_tuning_table:
    input:
        "results/tables/table_tuning.{ext}",
    output:
        "paper_figures/table_tuning.{ext}",
    log:
        "results/logs/figures/table_tuning_{ext}.log",
    wildcard_constraints:
        ext="csv|md",
    conda:
        ENV
    shell:
        "cp {input} {output} > {log} 2>&1"
