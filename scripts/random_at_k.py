"""Rule random_at_k: a seeded random subset of k records, every compared selector's opponent."""
from alpagasus.core import logs
from alpagasus.data import load_records, write_records
from alpagasus.selection.select import random_indices

logs.setup(snakemake.log[0])
records = load_records(snakemake.input.records)
k = int(snakemake.params.k)
if k > len(records):
    raise SystemExit(f"config evaluation.selectors.k: {k} is more than the {len(records)} records of "
                     f"{snakemake.input.records}")
write_records(snakemake.output[0], [records[i] for i in random_indices(len(records), k, snakemake.params.seed)])
