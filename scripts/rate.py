"""Rule rate (or rate_shard): every record, or one shard's records, scored by the configured
judge (scores.jsonl + rating_cost.json).

Only content-defining settings are rule params (so changing them reruns the rule); budget,
limits and retries are read from the config at run time and never trigger a rerun.

The records are streamed from the file (alpagasus.data.stream), never all held: counted first
(from their index, or by one pass that validates every one before anything is sent), then
rated a window at a time (rate_records).
"""
from alpagasus.core import logs
from alpagasus.data.stream import count_records, iter_slice
from alpagasus.judging.rating import rate_records
from alpagasus.judging.sharding import shard_budget, shard_range

cfg = snakemake.config
logs.setup(snakemake.log[0], [j.get("api_key_env", "") for j in cfg["judges"].values()])
# rule rate_compare rates the same records with another judge (rating.compare).
judge = snakemake.wildcards.get("judge", cfg["rating"]["judge"])
n_records = count_records(snakemake.input.records)
rating = {**cfg["rating"], "judge": judge, "dimension": snakemake.params.dimension}
sharded = "shard" in snakemake.wildcards.keys()  # rule rate_shard
start, stop = 0, n_records
if sharded:
    start, stop = shard_range(n_records, int(snakemake.wildcards.shard), int(snakemake.params.shards))
    rating["max_usd"] = shard_budget(rating["max_usd"], start, stop, n_records)
rate_records(
    iter_slice(snakemake.input.records, start, stop),  # a shard's records: nothing before them parsed
    cfg["judges"],
    rating,
    snakemake.params.cache_dir,
    snakemake.output.scores,
    snakemake.output.cost,
    max_field_chars=snakemake.params.max_field_chars,
    first_index=start,
    shard_fields=sharded,
    n_records=stop - start,
)
