"""Rule judge_agreement: results/judge_agreement.json and results/plots/judge_agreement.png."""
from alpagasus.core import logs
from alpagasus.selection.agreement import write_agreement
from alpagasus.selection.select import score_field

logs.setup(snakemake.log[0])
rule = snakemake.params.selection
write_agreement(snakemake.input.records, dict(zip(snakemake.params.judges, snakemake.input.scores)), rule,
                score_field(rule), dict(snakemake.params.releases), snakemake.output.json, snakemake.output.plot)
