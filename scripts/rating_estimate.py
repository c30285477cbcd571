"""Rule rating_estimate: what rating will cost, before anything is sent."""
from alpagasus.core import logs
from alpagasus.data import load_records
from alpagasus.judging.rating import estimate_rating

cfg = snakemake.config
logs.setup(snakemake.log[0])
estimate_rating(load_records(snakemake.input.records), cfg["judges"], cfg["rating"], snakemake.params.cache_dir,
                snakemake.output[0], max_field_chars=snakemake.params.max_field_chars)
