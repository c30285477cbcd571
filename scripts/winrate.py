"""Rule winrate: the win/tie/lose table of one model size, and its figure."""
from alpagasus.core import logs
from alpagasus.evaluation.winrate import write_winrate

logs.setup(snakemake.log[0])
p = snakemake.params
write_winrate(p.judgements, p.judge, snakemake.output.table, snakemake.output.plot,
              title=f"{snakemake.wildcards.size}: pairwise judge {p.judge}, both orders",
              bootstrap_samples=p.bootstrap_samples, seed=p.seed)
