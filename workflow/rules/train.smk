# Training, one job per group: the runs of one method on one data set and partition (every
# staleness bound and seed) train in one process, their client jobs stacked together
# (persafl.engine.group). Each run still gets its own directory with summary.json written last;
# a changed run config retrains only its group, and an interrupted group reruns whole.

RUN = "dataset~{dataset}/partition~{partition}/method~{method}/tau~{tau}/seed~{seed}"


rule run_config:
    priority: SETUP_PRIORITY
    input:
        tuned=tuned_selection_of,  # the tuning selection of a tuned data set (tuning.smk)
    output:
        f"results/runs/{RUN}/run.yaml",
    log:
        f"results/logs/run_config/{RUN}.log",
    params:
        resolved=run_config_of,
        tuned=tuned_flag,
    conda:
        ENV
    shell:
        "python -m persafl.sweep write --json {params.resolved:q} {params.tuned} --out {output}"
        " > {log} 2>&1"


for group in sweep.group_keys(config):
    keys = sweep.group_runs(config, group)
    dirs = [sweep.run_dir(k) for k in keys]
    configs = [f"{d}/run.yaml" for d in dirs]
    parts = [f"{sweep.partition_dir(k.dataset, k.partition, k.seed)}/partition.npz" for k in keys]
    ds = config["datasets"][group.dataset]["resources"]
    need = group_resources(group, len(keys))

    rule:
        name:
            sweep.group_rule_name(group)
        input:
            configs=configs,
            partitions=parts,
        output:
            metrics=[f"{d}/metrics.csv" for d in dirs],
            clients=[f"{d}/clients.csv" for d in dirs],
            summaries=[f"{d}/summary.json" for d in dirs],
        log:
            f"results/logs/train/{sweep.group_dir(group)}.log",
        benchmark:
            f"results/benchmarks/train/{sweep.group_dir(group)}.tsv"
        params:
            runs=train_args(configs, parts, dirs),
        threads: ds["threads"]
        priority: group_priority(group, len(keys))
        resources:
            mem_mb=need["mem_mb"],
            runtime=need["runtime"],
        conda:
            ENV
        shell:
            "python -m persafl.train {params.runs} > {log} 2>&1"
