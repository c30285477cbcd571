"""What a new user meets first (issue #20, item 8): `alpagasus --version` and `--help`, the main
job's plan (no selection nobody trains on), and a Slurm dry run that is readable."""
import argparse
import subprocess
import sys
from importlib.metadata import version

import pytest
from conftest import REPO
from test_chaos import cli
from test_workflow import planned_jobs

from alpagasus.core import cli as cli_mod
from alpagasus.core.config import load

SMOKE = REPO / "config" / "smoke.yaml"


def test_version_is_the_package_metadata():
    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"alpagasus {version('alpagasus')}"


def test_every_option_of_every_command_has_help():
    parser = cli_mod._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, p in {"alpagasus": parser, **commands}.items() for action in p._actions
               if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []
    rate_help = cli("rate", "--help").stdout
    assert "--log FILE" in rate_help and "--no-progress" in rate_help and "progress bar" in rate_help


def test_the_miniature_plans_only_selections_it_trains_on(tmp_path):
    cfg = load(REPO / "config" / "config.yaml", SMOKE)
    assert set(cfg["selection"].get("extra") or {}) <= set(cfg["training"]["variants"])
    assert "select_extra" not in planned_jobs(tmp_path, [], "--configfile", SMOKE)
    # An overlay on it that adds its own selection still gets exactly that one.
    saturated = load(REPO / "config" / "config.yaml", SMOKE, REPO / "config" / "saturated.yaml")
    assert set(saturated["selection"]["extra"]) == {"top_expected"}
    assert "select_extra" in planned_jobs(tmp_path, [], "--configfile", SMOKE, REPO / "config" / "saturated.yaml")


def test_the_slurm_dry_run_prints_no_empty_shell_commands(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "--directory", str(tmp_path),
                           "--configfile", str(SMOKE)], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("\nrule train:") == 3  # the jobs are all there ...
    assert "Shell command" not in out  # ... without a "Shell command: None" under each
