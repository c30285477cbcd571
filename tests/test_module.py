"""The workflow used as a Snakemake module from another directory (`module alpagasus:
snakefile: <path>, config: config` and `use rule * from alpagasus`): its own files are found
through workflow.current_basedir / source_path, not the caller's basedir (snakemake issues
#2914, #3467), and the paper's config goes under what the caller passes; and from GitHub, as
`snakedeploy deploy-workflow` writes it, offline."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from alpagasus.data import load_records
from alpagasus.data.miniature import solve

CALLER = """\
module alpagasus:
    snakefile: "{snakefile}"
    config: config

use rule * from alpagasus
"""


def caller(tmp_path):
    work = tmp_path / "my_workflow"
    work.mkdir()
    (work / "Snakefile").write_text(CALLER.format(snakefile=REPO / "workflow" / "Snakefile"))
    return work


def snakemake(work, *args):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *map(str, args)], cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return proc


def test_another_workflow_runs_the_miniatures_selection_through_the_module(tmp_path):
    work = caller(tmp_path)
    # No configfile in the caller: only the miniature overlay, on the module's own config.yaml.
    snakemake(work, "results/smoke/filtered_9k.json", "results/smoke/release/alpagasus",
              "--configfile", REPO / "config" / "smoke.yaml")
    res = work / "results" / "smoke"
    records = load_records(res / "alpaca_52k.json")
    assert len(records) == 4000
    kept = load_records(res / "filtered_9k.json")
    assert kept == [r for r in records if r["output"] == solve(r["instruction"], r["input"])]
    assert (res / "release" / "alpagasus" / "README.md").is_file()
    assert json.loads((res / "rating_cost.json").read_text())["judge"] == "verifier"
    assert not (work / "config").exists()  # nothing was looked for in the caller's directory


def job_counts(out: str) -> dict[str, int]:
    """The first job table of a dry run: rule -> jobs."""
    table = out[out.index("job "):]
    rows = [line.split() for line in table.splitlines()[2:]]
    return {r[0]: int(r[1]) for r in rows[:next(i for i, r in enumerate(rows) if r[0] == "total")]}


def test_the_module_plans_exactly_what_the_workflow_plans_standalone(tmp_path):
    work = caller(tmp_path)
    smoke = REPO / "config" / "smoke.yaml"
    module = job_counts((p := snakemake(work, "-n", "--configfile", smoke)).stdout + p.stderr)
    alone = tmp_path / "standalone"
    alone.mkdir()
    standalone = job_counts((p := snakemake(alone, "-s", REPO / "Snakefile", "-n", "--configfile", smoke)).stdout
                            + p.stderr)
    assert module == standalone
    assert module["train"] == 3 and module["release"] == 2 and module["report"] == 1


def test_a_callers_config_holds_only_its_differences(tmp_path):
    work = caller(tmp_path)
    (work / "mine.yaml").write_text("results_dir: results/mine\nselection: {threshold: 4.0}\n")
    snakemake(work, "results/mine/filtered_9k.json", "--configfile", REPO / "config" / "smoke.yaml", work / "mine.yaml")
    records = load_records(work / "results" / "mine" / "alpaca_52k.json")
    kept = load_records(work / "results" / "mine" / "filtered_9k.json")
    assert len(kept) >= 2804 and len(kept) < len(records)  # the caller's threshold, the module's judge


# --- from GitHub, as `snakedeploy deploy-workflow` writes it, offline ----------------------------

OWNER_REPO = "alpagasus-test/alpagasus"


def published(tmp_path) -> tuple[Path, dict]:
    """This checkout's files (tracked and new, as CI's clone has them) committed and tagged in a
    repository that stands in for github.com/OWNER_REPO: git's own url.<base>.insteadOf sends
    every clone of that URL (snakedeploy's, and Snakemake's for github(...)) here. And an empty
    Snakemake source cache: nothing is read from a clone made before."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        if (REPO / f).is_file():
            (upstream / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, upstream / f)
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f'[user]\n\tname = t\n\temail = t@example.org\n'
                         f'[url "{upstream.as_uri()}"]\n\tinsteadOf = https://github.com/{OWNER_REPO}\n')
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(gitconfig), "GIT_CONFIG_NOSYSTEM": "1",
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "GIT_TERMINAL_PROMPT": "0"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "release"], ["tag", "v0-test"]):
        subprocess.run(["git", *cmd], cwd=upstream, env=env, check=True)
    return upstream, env


def test_snakedeploys_deployment_runs_the_miniatures_selection_from_github(tmp_path):
    pytest.importorskip("snakedeploy")
    upstream, env = published(tmp_path)
    dest = tmp_path / "deployed"
    proc = subprocess.run([sys.executable, "-c", "from snakedeploy.client import main; main()", "deploy-workflow", f"https://github.com/{OWNER_REPO}",
                           str(dest), "--tag", "v0-test"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    snakefile = (dest / "workflow" / "Snakefile").read_text()
    # What snakedeploy wrote: our workflow/Snakefile, from GitHub, at the tag; our config/ as the template.
    assert f'github("{OWNER_REPO}", path="workflow/Snakefile", tag="v0-test")' in snakefile
    assert (dest / "config" / "config.yaml").read_text() == (REPO / "config" / "config.yaml").read_text()
    assert (dest / "config" / "smoke.yaml").is_file() and not (dest / "rules").exists()
    # Run as its users run it: from the deployment, the miniature overlay that came with it. The
    # rules, scripts and the paper's config are read from the tag through Snakemake's source cache.
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "results/smoke/filtered_9k.json",
                           "--configfile", "config/smoke.yaml"], cwd=dest, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = load_records(dest / "results" / "smoke" / "alpaca_52k.json")
    kept = load_records(dest / "results" / "smoke" / "filtered_9k.json")
    assert len(records) == 4000 and kept == [r for r in records if r["output"] == solve(r["instruction"], r["input"])]
    assert (tmp_path / "cache" / "snakemake").is_dir()  # fetched into the empty source cache, not found elsewhere
