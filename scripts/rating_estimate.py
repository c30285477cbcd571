"""Rule rating_estimate: what rating will cost, before anything is sent (the records streamed,
a window at a time, as rule rate reads them)."""
from alpagasus.core import logs
from alpagasus.data.stream import count_records, iter_records
from alpagasus.judging.rating import estimate_rating

cfg = snakemake.config
logs.setup(snakemake.log[0])
n_records = count_records(snakemake.input.records)
estimate_rating(iter_records(snakemake.input.records), cfg["judges"], cfg["rating"], snakemake.params.cache_dir,
                snakemake.output[0], max_field_chars=snakemake.params.max_field_chars, n_records=n_records)
