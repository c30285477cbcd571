"""Snakemake `test_set` rule: a pinned AlpaGasus test set, checked and normalised (alpagasus.data.testsets)."""

import logging

from alpagasus.core.logs import redirect_output
from alpagasus.data.testsets import write_test_set

sm = snakemake  # noqa: F821  (injected by Snakemake)

with redirect_output(sm.log[0]):
    n = write_test_set(sm.wildcards.name, sm.output[0], local_dir=sm.params.local_dir,
                       max_items=sm.params.max_items)
    logging.getLogger("alpagasus.data.testsets").info("%s: %d items -> %s", sm.wildcards.name, n, sm.output[0])
