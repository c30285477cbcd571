"""Rules selectors_table and data_size_table: a harness's table and figure (evaluation/selectors_table.py)."""
from alpagasus.core import logs
from alpagasus.evaluation.selectors_table import write_data_size, write_selectors

logs.setup(snakemake.log[0])
p, out, size = snakemake.params, snakemake.output, snakemake.wildcards.size
common = dict(bootstrap_samples=p.bootstrap_samples, seed=p.seed)
if snakemake.rule == "selectors_table":
    write_selectors(p.entries, p.selections, p.judge, p.k, out.table, out.plot,
                    title=f"{size}: selectors at k = {p.k} (judge {p.judge}, both orders, pooled)", **common)
else:
    write_data_size(p.entries, p.selections, p.judge, out.table, out.plot,
                    title=f"{size}: winning score against the full set by data size (judge {p.judge})", **common)
