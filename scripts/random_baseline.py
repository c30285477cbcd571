"""Rule random_baseline: a seeded random subset of the same size as the main selection."""
from alpagasus.core import logs
from alpagasus.selection.select import write_random

logs.setup(snakemake.log[0])
write_random(snakemake.input.records, snakemake.input.selected, snakemake.params.seed, snakemake.output[0])
