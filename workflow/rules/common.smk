# Helpers of the workflow: config validation, the sweep grid and input functions. The sweep
# logic itself (expansion, run configs) lives in the tested package module persafl.sweep.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from persafl import locks, paper_files, resources, scheduler_timer, sweep, timestudy

# Snakemake 9 starts one more 1-second re-scheduling timer chain per job event while jobs wait
# for cores (0.43 of a core in the paper config): keep one pending timer (persafl.scheduler_timer)
scheduler_timer.install()

validate(config, "../schemas/config.schema.yaml")
try:
    sweep.check_sweep(config)
except sweep.SweepError as err:
    raise WorkflowError(f"persafl: {err}") from None

# snakemake's lock message advises --unlock, which breaks a run still going: say so first
# (not in jobs that snakemake itself starts with --nolock).
if "--unlock" in sys.argv and locks.unlock_refusal(os.getcwd()):
    raise WorkflowError(locks.unlock_refusal(os.getcwd()))
if "--nolock" not in sys.argv and "--unlock" not in sys.argv and locks.lock_warning(os.getcwd()):
    print(locks.lock_warning(os.getcwd()), file=sys.stderr)

REPO = Path(workflow.basedir).resolve()  # basedir: the folder of the Snakefile
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
ENV = "../envs/persafl.yaml"  # relative to workflow/rules/
ACCURACY_TAU = config["figures"]["accuracy_tau"]
DATASETS = sweep.datasets(config)
FETCHED = [d for d in DATASETS if d in ("mnist", "fashion_mnist")]  # persafl.data.fetch's sets

# The package is imported from this checkout in every job (venv, --sdm conda or SLURM alike).
# (shell.prefix is formatted like a shell command: literal braces are doubled.)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(REPO / 'src'))}"
             "${{PYTHONPATH:+:$PYTHONPATH}}; ")


def _sweep_args():
    """CLI arguments that make persafl.sweep resolve exactly this config: the config files in
    snakemake's merge order, then the --config overrides."""
    files = [os.path.abspath(f) for f in workflow.configfiles]
    args = ["--schema", str(SCHEMA)] + [a for f in files for a in ("--config", f)]
    overrides = dict(workflow.config_settings.config)
    if overrides:
        args += ["--override", json.dumps(overrides, default=str)]
    return " ".join(shlex.quote(a) for a in args)


SWEEP_ARGS = _sweep_args()
FAIL_ON_DIVERGENCE = "--fail-on-divergence" if config["fail_on_divergence"] else ""


def divergence_warning():
    """Print which of this config's finished runs diverged (the workflow's onsuccess)."""
    from persafl.aggregate_cli import divergence_summary

    text = divergence_summary(f"{sweep.run_dir(k)}/summary.json" for k in sweep.run_keys(config))
    if text:
        print(text, file=sys.stderr)

wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    partition="[A-Za-z0-9_.-]+",
    method="[a-z_]+",
    tau="[0-9]+",
    seed="[0-9]+",


# ---- paths ------------------------------------------------------------------------------


def run_files(keys):
    """Every file of each run that aggregation reads (it verifies the CSVs against the
    checksums in summary.json), so a changed or missing CSV reruns aggregation."""
    return [path for k in keys for path in sweep.run_files(k)]


def figure_partition(dataset):
    """The partition a data set's single-partition figures show (as the manifest records)."""
    return paper_files.figure_partition(config, dataset)


def paper_figures():
    """The figures and table copies of paper_figures/, as persafl.paper_files lists them."""
    return paper_files.paper_outputs(config)


def all_outputs():
    """Every cell table (the runs of one dataset, partition, method and tau over the seeds),
    then the figures: the committed figures and tables exist in a fresh checkout, so without
    targets outside them snakemake would take them as up to date and train nothing; the cell
    tables are not committed, so their runs train and everything downstream is redrawn. (Cells
    rather than runs: `all` then lists a few dozen files, not every run's.)"""
    if config.get("regime"):  # a regime study: its own tables and figures (regime.smk)
        return regime_outputs()
    cells = list(dict.fromkeys(f"{cell_dir(key)}/final.csv" for key in sweep.run_keys(config)))
    report_only = ["results/report/table_final.html"]  # the final table, shown in the report
    return cells + paper_figures() + ["paper_figures/manifest.json"] + report_only


# ---- input functions --------------------------------------------------------------------


def run_config_of(wildcards):
    """The resolved run config as JSON with sorted keys: the rule's only params, so a change
    reruns exactly the affected runs, and moving, splitting or reordering the config files
    reruns nothing."""
    return json.dumps(sweep.run_config(config, wildcards.dataset, wildcards.partition,
                                       wildcards.method, int(wildcards.tau), int(wildcards.seed)),
                      sort_keys=True)


def partition_config_of(wildcards):
    return json.dumps(sweep.partition_run_config(config, wildcards.dataset,
                                                 wildcards.partition, int(wildcards.seed)),
                      sort_keys=True)


def data_flag(wildcards):
    """Real data sets are fetched once before their partitions are built."""
    if wildcards.dataset in FETCHED:
        return [f"results/data/{wildcards.dataset}.fetched"]
    return []


def partition_file(wildcards):
    d = sweep.partition_dir(wildcards.dataset, wildcards.partition, int(wildcards.seed))
    return f"{d}/partition.npz"


MEASURED = resources.load_measured()


def group_resources(group, runs):
    """A training group's mem_mb and runtime: measured (workflow/resources/train_groups.csv)
    or, unmeasured, its data set's config resources (persafl.resources)."""
    fallback = config["datasets"][group.dataset]["resources"]
    return resources.group_resources(sweep.group_dir(group), runs, fallback, MEASURED)


# Setup jobs (data fetches, run configs, partitions, tuning selections) take seconds: they run
# as soon as they are ready, so a long training group is never held behind its own setup while
# a shorter group that is ready takes the core (Snakemake's priority is per job, not inherited).
SETUP_PRIORITY = 10**7


def tuning_priority(point):
    """A tuning group's priority: that of the final group its selection feeds, so the method
    whose final group is longest is tuned, and can start, first."""
    group = sweep.GroupKey(point[0], point[1], point[2])
    return group_priority(group, len(sweep.group_runs(config, group)))


def group_priority(group, runs):
    """A training group's Snakemake priority: its expected seconds, so the longest start first
    (persafl.resources.group_priority)."""
    fallback = config["datasets"][group.dataset]["resources"]
    return resources.group_priority(sweep.group_dir(group), runs, fallback, MEASURED)


def train_args(configs, partitions, dirs):
    """The train CLI's --config/--partition/--out triple of every run of a group."""
    return " ".join(
        f"--config {shlex.quote(c)} --partition {shlex.quote(p)} --out {shlex.quote(d)}"
        for c, p, d in zip(configs, partitions, dirs)
    )


def train_resource(name):
    def get(wildcards):
        return config["datasets"][wildcards.dataset]["resources"][name]
    return get


CELLS = "results/tables/cells"


def cell_dir(key):
    """The folder of a run's cell table: its runs over the seeds (aggregate_cell)."""
    parts = [f"dataset~{key.dataset}", f"partition~{key.partition}", f"method~{key.method}",
             f"tau~{key.tau}"]
    return "/".join([CELLS, *parts])


def cell_tables(keys):
    """The cell tables holding these runs: a few per data set, so no job lists every run."""
    return [f"{d}/{name}" for d in dict.fromkeys(cell_dir(k) for k in keys)
            for name in ("curves.csv", "final.csv")]


def cell_runs(wildcards):
    """The run files of one cell (aggregate_cell's input)."""
    keys = [k for k in sweep.run_keys(config, dataset=wildcards.dataset, tau=int(wildcards.tau))
            if k.partition == wildcards.partition and k.method == wildcards.method
            and k.tau == int(wildcards.tau)]
    return run_files(keys)


def dataset_runs(wildcards):
    return cell_tables(sweep.run_keys(config, dataset=wildcards.dataset))


def accuracy_runs(wildcards):
    return cell_tables(sweep.run_keys(config, dataset=wildcards.dataset,
                                      tau=int(wildcards.tau)))


def all_runs(wildcards):
    """The per data set tables (aggregate_all merges them)."""
    return [f"results/tables/dataset~{d}/{name}" for d in DATASETS
            for name in ("curves.csv", "final.csv")]


def partition_counts_of(wildcards):
    p = figure_partition(wildcards.dataset)
    seed = config["seeds"][0]
    return f"{sweep.partition_dir(wildcards.dataset, p, seed)}/partition_counts.csv"


def accuracy_curves(wildcards):
    return f"results/tables/dataset~{wildcards.dataset}/tau~{ACCURACY_TAU}/curves.csv"


def expected_accuracy_runs(wildcards):
    """What an accuracy figure's table must hold (persafl.figures --expect): its runs."""
    keys = sweep.run_keys(config, dataset=wildcards.dataset, tau=ACCURACY_TAU)
    return json.dumps({"runs": [[k.partition, k.method, k.tau, k.seed] for k in keys]})


def expected_dataset_runs(wildcards):
    keys = sweep.run_keys(config, dataset=wildcards.dataset)
    return json.dumps({"runs": [[k.partition, k.method, k.tau, k.seed] for k in keys]})


def expected_clients(wildcards):
    """What a partition heat map's table must hold: the figure partition's client count."""
    part = config["datasets"][wildcards.dataset]["partitions"][figure_partition(wildcards.dataset)]
    return json.dumps({"clients": part["num_clients"]})


def partition_of(wildcards):
    return figure_partition(wildcards.dataset)


def output_dir(wildcards, output):
    """The folder of a rule's first output (the train CLI's --out)."""
    return os.path.dirname(output[0])


# ---- the staleness and time study (workflow/rules/staleness.smk, issue 13) ---------------

STUDY_PATH = config.get("staleness_study")
STUDY = timestudy.load_study(REPO / STUDY_PATH) if STUDY_PATH else None
STUDY_TABLES = paper_files.STUDY_TABLES
STUDY_DATASETS = "|".join(STUDY["datasets"]) if STUDY else "none"


def study_figure_table(wildcards):
    """The committed table a study figure is drawn from (persafl.paper_files.study_specs)."""
    return paper_files.study_spec(config, wildcards.kind, wildcards.dataset).table


def study_figure_argv(wildcards, output):
    """The persafl.figures arguments of a study figure, as the manifest records them."""
    argv = paper_files.study_argv(config, wildcards.kind, wildcards.dataset, output.pdf)
    return " ".join(shlex.quote(a) for a in argv)


def study_run_files():
    """Every file of every study run (what the study's table job reads)."""
    return [f"{timestudy.run_dir(r)}/{name}" for r in timestudy.all_runs(STUDY)
            for name in ("metrics.csv", "clients.csv", "summary.json")]


# ---- tuning (workflow/rules/tuning.smk; persafl.tuning) -----------------------------------

from persafl import tuning

TUNE = "dataset~{dataset}/partition~{partition}/method~{method}/point~{point}/seed~{seed}"
TUNED = tuning.tuned_datasets(config)


def tuned_selection_of(wildcards):
    """A final run's selection file when its data set is tuned (run_config's input)."""
    if tuning.tuned(config, wildcards.dataset, wildcards.method):
        return [tuning.selection_path(wildcards.dataset, wildcards.method)]
    return []


def tuned_flag(wildcards):
    return " ".join(f"--tuned {shlex.quote(p)}" for p in tuned_selection_of(wildcards))


def tuning_run_config_of(wildcards):
    key = tuning.TuneKey(wildcards.dataset, wildcards.partition, wildcards.method,
                         wildcards.point, int(wildcards.seed))
    return json.dumps(tuning.tuning_run_config(config, key), sort_keys=True)


def require_tuned(wildcards):
    """Stop a target for a data set or method this config does not tune, naming what it does."""
    if not tuning.tuned(config, wildcards.dataset, wildcards.method):
        raise WorkflowError(
            f"persafl: no tuning of data set {wildcards.dataset!r}, method "
            f"{wildcards.method!r} in this config: tuned data sets {TUNED or 'none'}, methods "
            f"{list(config['methods'])} (enable the data set and give it a tuning.datasets "
            "section, or pass the config that tunes it with --configfile)"
        )


def tuning_dirs(wildcards):
    require_tuned(wildcards)
    return [tuning.tuning_run_dir(k) for k in
            tuning.tuning_keys(config, wildcards.dataset, wildcards.method)]


def tuning_runs_of(wildcards):
    return [f"{d}/{name}" for d in tuning_dirs(wildcards)
            for name in ("summary.json", "clients.csv")]


def tuning_run_args(wildcards):
    return " ".join(shlex.quote(d) for d in tuning_dirs(wildcards))


def tuning_grid_of(wildcards):
    require_tuned(wildcards)
    grid = config["tuning"]["datasets"][wildcards.dataset]["grids"][wildcards.method]
    return json.dumps(grid, sort_keys=True)


def tuning_meta_of(wildcards):
    section = config["tuning"]
    key = tuning.tuning_keys(config, wildcards.dataset, wildcards.method)[0]
    run = tuning.tuning_run_config(config, key)
    return json.dumps({
        "partition": key.partition,
        "seeds": list(section["seeds"]),
        "staleness_bound": run["schedule"]["staleness_bound"],
        "num_updates": run["schedule"]["num_updates"],
        "validation_share": section["validation_share"],
    })


def tuning_tables_of(wildcards):
    return [f"results/tuning/{wildcards.dataset}/{m}.csv" for m in config["methods"]]
