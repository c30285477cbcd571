"""Snakemake `test_set` rule: a pinned AlpaGasus test set, checked and normalised (alpagasus.data.testsets)."""

import logging
import sys

from alpagasus.core import logs
from alpagasus.data import DataError
from alpagasus.data.testsets import write_test_set

sm = snakemake  # noqa: F821  (injected by Snakemake)

logs.setup(sm.log[0])
log = logging.getLogger("alpagasus.data.testsets")
try:
    n = write_test_set(sm.wildcards.name, sm.output[0], local_dir=sm.params.local_dir,
                       max_items=sm.params.max_items)
except DataError as exc:
    # Offline, a changed file, a bad line: one line saying what is wrong and what to do.
    log.error("%s", exc)
    sys.exit(1)
log.info("%s: %d items -> %s", sm.wildcards.name, n, sm.output[0])
