# alpagasus: the AlpaGasus recipe as one reproducible workflow.
#   snakemake --cores 2 --configfile config/smoke.yaml      # the offline miniature
#   snakemake results/filtered_9k.json --cores 4             # the paper's data selection
#   snakemake --cores 2 --configfile config/rehearsal.yaml   # rehearse the cluster run on CPU (README)
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# Slurm's warning before a GPU job's time limit (slurm.signal_before_end_s -> --signal=USR1@N)
# reaches every process of the job step, Snakemake's own included, and SIGUSR1 kills a process
# that does not handle it. Snakemake ignores it; the trainer catches it, saves and exits, and
# Snakemake reruns the job, which resumes (docs/cluster.md).
import signal

signal.signal(signal.SIGUSR1, signal.SIG_IGN)


# Paths relative to this file, so `--directory elsewhere` works too.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


validate(config, "config/schema.yaml")

# The library. Rule scripts import the installed `alpagasus` (pip install -e . of this
# checkout); without one they fall back to this tree's src/, since Snakemake appends its own
# sys.path to every script's (in a conda env too).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
import yaml  # noqa: E402
from alpagasus.config import check_references, merge_overlays, selection_warnings  # noqa: E402

# Snakemake merged the overlays already; this only stops an overlay's `{}` that removes nothing.
merge_overlays(
    yaml.safe_load((Path(workflow.basedir) / "config" / "config.yaml").read_text()),
    [(str(f), yaml.safe_load(Path(f).read_text()) or {}) for f in workflow.overwrite_configfiles or []],
)
check_references(config)
for warning in selection_warnings(config):
    print(f"WARNING: {warning}", file=sys.stderr)

# Light rules run where snakemake runs, never on a cluster node.
localrules:
    all,
    select,
    select_extra,
    random_baseline,
    selection_summary,
    mini_test_set,
    test_set,
    rating_estimate,
    winrate,
    report,
    judging_estimate,


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/rate.smk"
include: "rules/select.smk"
include: "rules/train.smk"
include: "rules/generate.smk"
include: "rules/judge.smk"
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
        [f"{R}/selections/{name}.json" for name in config["selection"].get("extra") or {}],
    default_target: True
