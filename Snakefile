# alpagasus: the AlpaGasus recipe as one reproducible workflow.
#   snakemake --cores 2 --configfile config/smoke.yaml      # the offline miniature
#   snakemake results/filtered_9k.json --cores 4             # the paper's data selection
#   snakemake --cores 2 --configfile config/rehearsal.yaml   # rehearse the cluster run on CPU (README)
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# This workflow's own files, wherever it is run from: read through workflow.current_basedir and
# workflow.source_path, never workflow.basedir, which is the *caller's* directory when this
# Snakefile is used as a module (`module alpagasus: snakefile: ...`; snakemake issues #2914, #3467).
WORKFLOW_DIR = Path(str(workflow.current_basedir))
# A local checkout's own file (its path is in the report's params: a cached copy's temporary
# path would rerun the report every time); a remote module's, through Snakemake's source cache.
BASE_CONFIG = WORKFLOW_DIR / "config" / "config.yaml"
if not BASE_CONFIG.is_file():
    BASE_CONFIG = Path(workflow.source_path("config/config.yaml"))

# The library. Rule scripts import the installed `alpagasus` (pip install -e . of this
# checkout, or the pinned package the envs install); a local checkout's src/ is the fallback,
# since Snakemake appends its own sys.path to every script's (in a conda env too). A module
# fetched from GitHub has no local src/: the installed package is used.
if (WORKFLOW_DIR / "src" / "alpagasus").is_dir():
    sys.path.insert(0, str(WORKFLOW_DIR / "src"))
from alpagasus.core.config import (check_workflow_inputs, merge, merge_overlays, read_yaml,  # noqa: E402
                                   selection_warnings, validate)
from alpagasus.core.stop_signals import ignore_time_limit_warning  # noqa: E402

# Slurm's warning before a GPU job's time limit (slurm.signal_before_end_s -> --signal=USR1@N)
# reaches every process of the job step, Snakemake's own included, and SIGUSR1 kills a process
# that does not handle it. Snakemake goes on; the trainer saves and exits, and Snakemake reruns
# the job, which resumes (alpagasus.core.stop_signals, docs/cluster.md).
ignore_time_limit_warning()


# Paths relative to this file, so `--directory elsewhere` works too.
configfile: BASE_CONFIG
# Used as a module (`config: config`), Snakemake skips the configfile above and passes the
# caller's config alone: the paper's config goes under it, so a caller's config (or its
# --configfile overlays) holds only what it changes. Standalone, this merge changes nothing (the
# base is already under every overlay).
PAPER_CONFIG = read_yaml(BASE_CONFIG)
config.update(merge(PAPER_CONFIG, config))


# `snakemake --report report.zip`: Snakemake's own report (results marked with report() in
# rules/, captions under report/, with every file's provenance); results/report.html stays the
# one-file view.
report: "report/workflow.rst"


# Snakemake merged the overlays already; reading them again with our loader stops a key written
# twice in one file (Snakemake's YAML keeps the last silently) and an overlay's `{}` that
# removes nothing, each with the file and line.
merge_overlays(
    PAPER_CONFIG,
    [(str(f), read_yaml(f)) for f in workflow.overwrite_configfiles or []],
)
# The schema (config/schema.yaml) and the cross-references, with one line naming the key; the
# schema's defaults are filled into `config` here, nested ones included, so no rule or script
# writes a default again. (snakemake.utils.validate with set_default=True fills nested ones
# too, but puts one shared mapping into every judge that takes a default `resources: {}`, and
# its error is hundreds of lines of JSON.)
validate(config)
check_workflow_inputs(config)
for warning in selection_warnings(config):
    print(f"WARNING: {warning}", file=sys.stderr)

# Light rules run where snakemake runs, never on a cluster node.
localrules:
    all,
    select,
    select_extra,
    select_signal,
    random_baseline,
    selection_summary,
    mini_test_set,
    test_set,
    rating_estimate,
    winrate,
    report,
    judging_estimate,
    judge_agreement,
    random_at_k,
    selectors_table,
    data_size_table,
    benchmarks_table,
    release,


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/rate.smk"
include: "rules/agreement.smk"
include: "rules/select.smk"
include: "rules/signals.smk"
include: "rules/train.smk"
include: "rules/generate.smk"
include: "rules/benchmark.smk"
include: "rules/judge.smk"
include: "rules/compare.smk"
include: "rules/report.smk"


rule all:
    input:
        [f"{R}/winrate_{size}.csv" for size in config["evaluation"]["sizes"]],
        [f"{R}/plots/winrate_{size}.png" for size in config["evaluation"]["sizes"]],
        f"{R}/report.html",
        f"{R}/filtered_9k.json",
        f"{R}/random_9k.json",
        f"{R}/selection_summary.json",
        f"{R}/plots/score_hist.png",
        [f"{R}/selections/{name}.json" for name in config["selection"]["extra"] or {}],
        agreement_outputs(),
        harness_outputs(),
        benchmark_outputs(),
        release_outputs(),
    default_target: True
