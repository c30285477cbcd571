"""Rule judging_estimate: requests, tokens and dollars of the pairwise stage, nothing sent."""
from alpagasus.core import logs
from alpagasus.evaluation.pairwise import estimate_judging

cfg = snakemake.config
logs.setup(snakemake.log[0])
estimate_judging(snakemake.params.comparisons, cfg["judges"], cfg["evaluation"], snakemake.params.cache_dir,
                 snakemake.output[0])
