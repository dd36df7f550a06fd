# The staleness and time study (issue 13): config/staleness.yaml, named by the sweep config's
# `staleness_study` key (config/config.yaml sets it; the CI and default configs do not, so their
# DAGs hold none of this). One training job per (setting, data set, method), then one table
# job, then the figures, each from a committed table (persafl.timefigures).
#   snakemake staleness --cores 2                     # train what is missing, draw everything
#   snakemake paper_figures/fig_time_synthetic.pdf    # one figure from its committed table

if STUDY:

    localrules:
        staleness,
        copy_study_table,

    for study_group in timestudy.groups(STUDY):
        study_dirs = [timestudy.run_dir(r) for r in timestudy.group_runs(STUDY, study_group)]

        rule:
            name:
                f"staleness_train_{study_group.name}"
            output:
                metrics=[f"{d}/metrics.csv" for d in study_dirs],
                clients=[f"{d}/clients.csv" for d in study_dirs],
                summaries=[f"{d}/summary.json" for d in study_dirs],
            log:
                f"results/logs/staleness/train/{study_group.name}.log",
            benchmark:
                f"results/benchmarks/staleness/{study_group.name}.tsv"
            params:
                study=STUDY_PATH,
                group=study_group.name,
                # the resolved run configs: a change retrains exactly this group
                runs=json.dumps([timestudy.run_config(STUDY, r) for r in
                                 timestudy.group_runs(STUDY, study_group)], sort_keys=True),
            threads: STUDY["threads"]
            resources:
                mem_mb=2000,
                runtime=120,
            conda:
                ENV
            shell:
                "python -m persafl.timestudy train --study {params.study} --group {params.group}"
                " > {log} 2>&1"

    rule staleness_tables:
        input:
            study_run_files(),
        output:
            multiext(f"{STUDY_TABLES}/", "curves.csv", "final.csv", "table_bounds.csv",
                     "table_bounds.md", "table_time.csv", "table_time.md"),
        log:
            "results/logs/staleness/tables.log",
        params:
            study=STUDY_PATH,
            out=output_dir,
        conda:
            ENV
        shell:
            "python -m persafl.timestudy tables --study {params.study} --out-dir {params.out}"
            " > {log} 2>&1"

    rule staleness:
        input:
            [f for spec in paper_files.study_specs(config) for f in spec.outputs]
            + list(paper_files.study_table_copies(config)),

    rule fig_study:
        input:
            study_figure_table,
        output:
            pdf=report("paper_figures/fig_{kind}_{dataset}.pdf", caption="../report/fig_study.rst", category="Staleness and time", subcategory="{kind}"),
            png="paper_figures/fig_{kind}_{dataset}.png",
        log:
            "results/logs/figures/fig_{kind}_{dataset}.log",
        wildcard_constraints:
            kind="axes|time|bounds",
            dataset=STUDY_DATASETS,
        params:
            argv=study_figure_argv,
        conda:
            ENV
        shell:
            "python -m persafl.figures {params.argv} > {log} 2>&1"

    rule copy_study_table:
        input:
            f"{STUDY_TABLES}/{{name}}.{{ext}}",
        output:
            "paper_figures/{name}.{ext}",
        log:
            "results/logs/figures/{name}_{ext}.log",
        wildcard_constraints:
            name="table_time|table_bounds",
            ext="csv|md",
        conda:
            ENV
        shell:
            "cp {input} {output} > {log} 2>&1"
