"""Rule select_signal: a selector's kept records (Alpaca's format and order) and its details."""
from alpagasus.core import logs
from alpagasus.selection.by_signal import write_selection

logs.setup(snakemake.log[0])
inp = snakemake.input
write_selection(inp.records, snakemake.params.rule, snakemake.output.selection, snakemake.output.details,
                signal_path=inp.get("signal"), scores_path=inp.get("scores"),
                embedding_npy=inp.get("embedding_npy"), embedding_jsonl=inp.get("embedding_jsonl"),
                name=snakemake.wildcards.name)
