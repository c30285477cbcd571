"""Rule alpaca_data: obtain the instruction set, validate it, write it as alpaca_52k.json."""
import os

from alpagasus.core import logs
from alpagasus.data.acquire import obtain_alpaca
from alpagasus.core.io import write_json

logs.setup(snakemake.log[0])
# Where the Hub download is kept is read here, not a rule parameter: moving it reruns nothing.
hub_cache_dir = ((snakemake.config["data"].get("hub") or {}).get("cache_dir")
                 or os.path.join(snakemake.config["cache_dir"], "hub"))
# max_field_chars only says which fields the judge's prompt will clip (a warning), so it is no
# param of the data either.
summary = obtain_alpaca({**snakemake.params.data, "max_field_chars": snakemake.config["data"]["max_field_chars"]},
                        snakemake.output.records, snakemake.params.download_dir, hub_cache_dir)
write_json(snakemake.output.summary, summary)
