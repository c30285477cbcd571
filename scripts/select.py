"""Rules select / select_extra: the kept records, in Alpaca's format and order."""
from alpagasus.core import logs
from alpagasus.selection.select import write_selection

logs.setup(snakemake.log[0])
write_selection(snakemake.input.records, snakemake.input.scores, snakemake.params.rule, snakemake.output[0])
