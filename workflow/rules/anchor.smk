# The synchronous anchor (issue 11; docs/results.md "Anchor"): FedAvg, Per-FedAvg and pFedMe
# under the base papers' protocol (persafl.anchor), with config/anchor.yaml's rounds and seeds,
# and table_anchor beside the pFedMe authors' code (its column read from the committed
# benchmarks/anchor/pfedme_code.csv; benchmarks/anchor/README.md reruns it). Its runs are not
# the sweep's: they live under results/anchor/ and only table_anchor reads them.
#   snakemake paper_figures/table_anchor.md --cores 2 --forcerun anchor_table
from persafl import anchor

# Inputs from the checkout (absolute), outputs in the working directory, like the sweep's.
ANCHOR_FILE = str(REPO / "config" / "anchor.yaml")
ANCHOR = anchor.load_anchor(ANCHOR_FILE)
ANCHOR_CODE = str(REPO / "benchmarks" / "anchor" / "pfedme_code.csv")
ANCHOR_KEYS = "dataset~{dataset}/partition~{partition}/method~{run}/tau~0/seed~{seed}"
ANCHOR_RUN = f"results/anchor/{ANCHOR_KEYS}"
ANCHOR_DIRS = [
    anchor.run_dir(dataset, run, seed)
    for dataset in ANCHOR["datasets"]
    for run in ANCHOR["runs"]
    for seed in ANCHOR["seeds"]
]



localrules:
    anchor_config,
    anchor_table,
    copy_anchor_table,


rule anchor_config:
    input:
        anchor=ANCHOR_FILE,
        sweep=ANCHOR["sweep_config"],
    output:
        f"{ANCHOR_RUN}/run.yaml",
    log:
        f"results/logs/anchor/{ANCHOR_KEYS}/run_config.log",
    wildcard_constraints:
        run="|".join(anchor.RUNS),
    conda:
        ENV
    shell:
        "python -m persafl.anchor run-config --anchor {input.anchor} --dataset {wildcards.dataset}"
        " --run {wildcards.run} --seed {wildcards.seed} --out {output} > {log} 2>&1"


rule anchor_train:
    input:
        f"{ANCHOR_RUN}/run.yaml",
    output:
        metrics=f"{ANCHOR_RUN}/metrics.csv",
        clients=f"{ANCHOR_RUN}/clients.csv",
        summary=f"{ANCHOR_RUN}/summary.json",
    log:
        f"results/logs/anchor/{ANCHOR_KEYS}/train.log",
    benchmark:
        f"results/benchmarks/anchor/{ANCHOR_KEYS}.tsv"
    wildcard_constraints:
        run="|".join(anchor.RUNS),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        ENV
    shell:
        'python -m persafl.train --config {input:q} --out "$(dirname {output.summary:q})"'
        " > {log} 2>&1"


rule anchor_table:
    input:
        runs=[f"{d}/summary.json" for d in ANCHOR_DIRS],
        code=ANCHOR_CODE,
    output:
        csv="results/tables/table_anchor.csv",
        md="results/tables/table_anchor.md",
    log:
        "results/logs/anchor/table_anchor.log",
    params:
        dirs=ANCHOR_DIRS,
    conda:
        ENV
    shell:
        "python -m persafl.anchor_table --code {input.code} --out {output.csv} {params.dirs:q}"
        " > {log} 2>&1"


rule copy_anchor_table:
    input:
        "results/tables/table_anchor.{ext}",
    output:
        "paper_figures/table_anchor.{ext}",
    log:
        "results/logs/figures/table_anchor_{ext}.log",
    wildcard_constraints:
        ext="csv|md",
    conda:
        ENV
    shell:
        "cp {input} {output} > {log} 2>&1"
