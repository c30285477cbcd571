# alpagasus: the AlpaGasus recipe as one reproducible workflow.
#   snakemake --cores 2 --configfile config/smoke.yaml      # the offline miniature
#   snakemake results/filtered_9k.json --cores 4             # the paper's data selection
import os
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")

# Rule scripts import the library from src/, also without `pip install -e .`; set here so that
# jobs submitted to a cluster inherit it.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")) if p
)
import sys

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from alpagasus.config import check_references  # noqa: E402

check_references(config)

R = config["results_dir"]
CACHE = config["cache_dir"]

# Light rules run where snakemake runs, never on a cluster node.
localrules:
    all,
    select,
    select_extra,
    random_baseline,
    selection_summary,
    mini_test_set,
    rating_estimate,


include: "rules/data.smk"
include: "rules/rate.smk"
include: "rules/select.smk"


rule all:
    input:
        f"{R}/filtered_9k.json",
        f"{R}/random_9k.json",
        f"{R}/selection_summary.json",
        f"{R}/plots/score_hist.png",
        [f"{R}/selections/{name}.json" for name in config["selection"].get("extra") or {}],
    default_target: True
