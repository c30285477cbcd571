"""`python -m snakemake` for the Slurm tests (tests/test_slurm.py), checking the jobs' status as
often as the test profile asks: every `seconds-between-status-checks` (1 s).

The Slurm executor plugin (2.x) adds 10 s to the wait after each status check that finds no job
finished, up to 180 s: right for a cluster's hours-long jobs, but on the test cluster it made
each seconds-long job wait ~12 s to be seen finished (a 20 s training ~33 s), link after link of
the DAG. Here every wait is the configured one. Nothing else differs from `python -m snakemake`:
the same plugin submits, and checks, every job; the jobs themselves run `python -m snakemake`.
"""
import sys

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor


def _keep_the_configured_interval(self, value):
    # None: RemoteExecutor.sleep and the plugin read seconds_between_status_checks.
    self._next_seconds_between_status_checks = None


RemoteExecutor.next_seconds_between_status_checks = (
    RemoteExecutor.next_seconds_between_status_checks.setter(_keep_the_configured_interval))

if __name__ == "__main__":
    from snakemake.cli import main

    sys.exit(main())
