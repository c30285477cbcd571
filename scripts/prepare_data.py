"""Rule alpaca_data: obtain the instruction set, validate it, write it as alpaca_52k.json."""
from alpagasus import logs
from alpagasus.data import obtain_alpaca
from alpagasus.io import write_json

logs.setup(snakemake.log[0])
summary = obtain_alpaca(snakemake.params.data, snakemake.output.records, snakemake.params.download_dir,
                        snakemake.params.hub_cache_dir)
write_json(snakemake.output.summary, summary)
