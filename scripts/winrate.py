"""Rule winrate: the win/tie/lose table of one model size, and its figure; the win rates also go to
the tracked runs that trained the models (training.report_to)."""
from alpagasus.core import logs
from alpagasus.evaluation.winrate import write_winrate
from alpagasus.training.tracking import report_results, settings, winrate_metrics

logs.setup(snakemake.log[0])
p, size = snakemake.params, snakemake.wildcards.size
rows = write_winrate(p.judgements, p.judge, snakemake.output.table, snakemake.output.plot,
                     title=f"{size}: pairwise judge {p.judge}, both orders",
                     bootstrap_samples=p.bootstrap_samples, seed=p.seed)
results = snakemake.config["results_dir"]
metrics = winrate_metrics(rows)
report_results(settings(snakemake.config["training"], results),
               {m: f"{results}/checkpoints/{m}-{size}" for m in metrics}, metrics)
