"""Rule selection_summary: counts per score, kept size, unscored count, and the histogram."""
from alpagasus.core import logs
from alpagasus.selection.select import write_summary

logs.setup(snakemake.log[0])
write_summary(snakemake.input.records, snakemake.input.scores, snakemake.params.rule, snakemake.input.random,
              snakemake.output.summary, snakemake.output.plot)
