"""Rule benchmarks_table: the paper's benchmarks table of one size (alpagasus.evaluation.benchmarks)."""
from alpagasus.core import logs
from alpagasus.evaluation.benchmarks import write_benchmarks_table

sm = snakemake  # noqa: F821  (injected by Snakemake)
logs.setup(sm.log[0])
write_benchmarks_table(list(zip(sm.params.models, sm.input)), sm.params.tasks, sm.output.table, sm.output.plot)
