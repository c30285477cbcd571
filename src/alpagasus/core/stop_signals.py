"""What each signal means to each process of the pipeline, in one place.

* SIGTERM: stop now (preemption, ``scancel``, Slurm's kill at the time limit).
* SIGUSR1: the warning a GPU job asks Slurm for ``slurm.signal_before_end_s`` before its time
  limit (``--signal=USR1@N``). Slurm sends it to every process of the job step, so each one
  says what it does with it:

  - training (``StopFlag``): save the state at the end of the current step, exit 128 + signal;
    the rerun resumes there;
  - the launcher of a multi-process run (``forwarding_to_group``): pass it to every rank, and
    tell torch's launcher (``LAUNCHER_ENV``) to wait for them instead of dying on it;
  - generation and Snakemake (``ignoring_time_limit_warning``, ``ignore_time_limit_warning``):
    go on; generation saves every batch as it finishes, and Snakemake reruns the stopped job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Passed from the launcher to the ranks (SIGINT too: a Ctrl-C by hand).
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# torch's launcher dies on SIGUSR1 without waiting for the ranks unless told to handle it;
# then it passes it on and gives them time to save.
LAUNCHER_ENV = {"TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"}


class StopFlag:
    """Remembers the first stop signal; the training loop saves and exits at the next step
    boundary. Installed for the whole run, so that a signal during a long setup (loading 13B)
    does not kill without a trace."""

    def __init__(self):
        self.signum = 0
        self._old: dict = {}

    def __enter__(self) -> "StopFlag":
        for s in STOP_SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        if not self.signum:
            self.signum = signum
            print(f"alpagasus.training: got signal {signum}; saving at the end of this step",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


def ignore_time_limit_warning() -> None:
    """For a process that must outlive the warning and has nothing to save (Snakemake)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@contextlib.contextmanager
def ignoring_time_limit_warning():
    """The same for a block (generation), restoring the previous handler after it."""
    try:
        old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


@contextlib.contextmanager
def forwarding_to_group(pgid: int):
    """While the block runs, the forwarded signals go to process group ``pgid`` (a launcher
    started with ``start_new_session=True``, which passes them to every rank)."""

    def forward(signum, frame):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
