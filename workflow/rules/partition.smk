# Real data sets are fetched once; each (dataset, partition, seed) split is built once and
# shared by every method and staleness bound.


rule fetch_data:
    priority: SETUP_PRIORITY
    output:
        touch("results/data/{dataset}.fetched"),
    log:
        "results/logs/fetch_data/{dataset}.log",
    params:
        root=config["data_root"],
    wildcard_constraints:
        dataset="mnist|fashion_mnist",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        ENV
    shell:
        "python -m persafl.data.fetch {wildcards.dataset} --root {params.root} > {log} 2>&1"


rule partition_config:
    priority: SETUP_PRIORITY
    output:
        "results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/config.yaml",
    log:
        "results/logs/partition_config/dataset~{dataset}/partition~{partition}/seed~{seed}.log",
    params:
        resolved=partition_config_of,
    conda:
        ENV
    shell:
        "python -m persafl.sweep write --json {params.resolved:q} --out {output} > {log} 2>&1"


rule partition:
    priority: SETUP_PRIORITY
    input:
        config="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/config.yaml",
        data=data_flag,
    output:
        npz="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/partition.npz",
        stats="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/partition.json",
        counts="results/partitions/dataset~{dataset}/partition~{partition}/seed~{seed}/partition_counts.csv",
    log:
        "results/logs/partition/dataset~{dataset}/partition~{partition}/seed~{seed}.log",
    threads: 1
    resources:
        mem_mb=train_resource("mem_mb"),
        runtime=30,
    conda:
        ENV
    shell:
        "python -m persafl.partition --config {input.config} --out {output.npz} > {log} 2>&1"
