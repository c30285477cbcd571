"""Rule rate with rating.shards > 1: the shards' rows checked and concatenated into scores.jsonl,
their ledgers summed into rating_cost.json (alpagasus.judging.sharding)."""
from alpagasus.core import logs
from alpagasus.data.stream import RecordsIndex
from alpagasus.judging.sharding import gather

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
# The records' content hashes (their index, or one pass over the file): never the records.
gather(RecordsIndex(sm.input.records), list(sm.input.scores), list(sm.input.costs),
       sm.output.scores, sm.output.cost, max_usd=sm.config["rating"]["max_usd"])
