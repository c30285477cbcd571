"""Rule rate: every record scored by the configured judge (scores.jsonl + rating_cost.json).

Only content-defining settings are rule params (so changing them reruns the rule); budget,
limits and retries are read from the config at run time and never trigger a rerun.
"""
from alpagasus.core import logs
from alpagasus.data import load_records
from alpagasus.judging.rating import rate_records

cfg = snakemake.config
logs.setup(snakemake.log[0], [j.get("api_key_env", "") for j in cfg["judges"].values()])
# rule rate_compare rates the same records with another judge (rating.compare).
judge = snakemake.wildcards.get("judge", cfg["rating"]["judge"])
rate_records(
    load_records(snakemake.input.records),
    cfg["judges"],
    {**cfg["rating"], "judge": judge, "dimension": snakemake.params.dimension},
    snakemake.params.cache_dir,
    snakemake.output.scores,
    snakemake.output.cost,
    max_field_chars=snakemake.params.max_field_chars,
)
