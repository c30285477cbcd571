"""What a new user meets first (issue #20, item 8): `alpagasus --version` and `--help`, the main
job's plan (no selection nobody trains on), and a Slurm dry run that is readable."""
import argparse
from importlib.metadata import version

from test_chaos import cli

from alpagasus.core import cli as cli_mod


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
