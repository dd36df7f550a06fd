# One training run per (dataset, partition, method, staleness bound, seed). The train CLI
# writes summary.json last and atomically: a killed run leaves no summary.json, and snakemake
# reruns exactly the runs whose summary.json is missing.

RUN = "dataset~{dataset}/partition~{partition}/method~{method}/tau~{tau}/seed~{seed}"


rule run_config:
    output:
        f"results/runs/{RUN}/run.yaml",
    log:
        f"results/logs/run_config/{RUN}.log",
    params:
        resolved=run_config_of,
    conda:
        ENV
    shell:
        "python -m persafl.sweep write --json {params.resolved:q} --out {output} > {log} 2>&1"


rule train:
    input:
        config=f"results/runs/{RUN}/run.yaml",
        partition=partition_file,
    output:
        metrics=f"results/runs/{RUN}/metrics.csv",
        clients=f"results/runs/{RUN}/clients.csv",
        summary=f"results/runs/{RUN}/summary.json",
    log:
        f"results/logs/train/{RUN}.log",
    benchmark:
        f"results/benchmarks/train/{RUN}.tsv"
    params:
        out=output_dir,
    threads: train_resource("threads")
    resources:
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
    conda:
        ENV
    shell:
        "python -m persafl.train --config {input.config} --partition {input.partition}"
        " --out {params.out} > {log} 2>&1"
