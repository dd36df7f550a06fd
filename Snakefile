# PersA-FL reproduction: sweep -> partitions -> training runs -> tables -> paper figures.
#   snakemake --cores 2                                   # paper scale (config/config.yaml)
#   snakemake --cores 2 --configfile config/synthetic.yaml   # synthetic only, minutes
#   snakemake --profile workflow/profiles/slurm           # on a SLURM cluster
# The sweep, paths and helpers are in workflow/rules/common.smk; the science in src/persafl.
# snakemake finds the local profile workflow/profiles/default through the `profiles` link at
# the repository root (it looks for profiles/default beside the Snakefile).

from snakemake.utils import min_version

min_version("9.0")


# A --configfile on the command line replaces the default instead of being merged into it
# (snakemake would otherwise merge config/test.yaml's datasets into the paper's). The default
# is the checkout's, also when running elsewhere with --directory.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/partition.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/staleness.smk"
include: "workflow/rules/regime_common.smk"
include: "workflow/rules/regime.smk"
include: "workflow/rules/anchor.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,
    run_config,
    partition_config,
    copy_table,
    report_table,
    aggregate_cell,
    partition_table,
    manifest,
    tuning_run_config,
    tuning_select,
    tuning_dataset_table,
    tuning_table,
    copy_tuning_table,


rule all:
    input:
        all_outputs(),
    default_target: True
