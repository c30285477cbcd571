"""Rule random_at_k: a seeded random subset of k records, every compared selector's opponent."""
from alpagasus.core import logs
from alpagasus.selection.select import write_random_at_k

logs.setup(snakemake.log[0])
try:
    write_random_at_k(snakemake.input.records, int(snakemake.params.k), snakemake.params.seed, snakemake.output[0])
except ValueError as exc:
    raise SystemExit(str(exc)) from None
