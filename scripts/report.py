"""Rule report: results/report.html."""
from alpagasus.core import logs
from alpagasus.reporting.report import build

logs.setup(snakemake.log[0])
i = snakemake.input
build(selection_summary=i.selection_summary, score_hist=i.score_hist, rating_cost=i.rating_cost,
      checkpoints=list(i.checkpoints), winrates=list(zip(snakemake.params.sizes, i.tables, i.plots)),
      judge_costs=list(i.judge_costs), out_path=snakemake.output[0],
      agreement=list(i.agreement) or None,
      title=f"alpagasus: {snakemake.config['results_dir']}")
