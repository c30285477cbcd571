"""Rule alpaca_data: obtain the instruction set, validate it, write it as alpaca_52k.json."""
import logging
import os
import sys

from alpagasus.core import logs
from alpagasus.core.io import write_json
from alpagasus.data import DataError
from alpagasus.data.acquire import obtain_alpaca

logs.setup(snakemake.log[0])
# Where the Hub download is kept is read here, not a rule parameter: moving it reruns nothing.
hub_cache_dir = ((snakemake.config["data"].get("hub") or {}).get("cache_dir")
                 or os.path.join(snakemake.config["cache_dir"], "hub"))
# max_field_chars only says which fields the judge's prompt will clip (a warning), so it is no
# param of the data either.
try:
    summary = obtain_alpaca({**snakemake.params.data, "max_field_chars": snakemake.config["data"]["max_field_chars"]},
                            snakemake.output.records, snakemake.params.download_dir, hub_cache_dir)
except DataError as exc:
    # A bad input is one line naming file, row and field (and what to do), not a traceback.
    logging.getLogger("alpagasus").error("%s", exc)
    sys.exit(1)
write_json(snakemake.output.summary, summary)
