"""Rule judge_pair: model A vs model B on one test set, judged in both orders."""
from alpagasus.core import logs
from alpagasus.evaluation.pairwise import judge_pair

cfg = snakemake.config
logs.setup(snakemake.log[0], [j.get("api_key_env", "") for j in cfg["judges"].values()])
w = snakemake.wildcards
judge_pair(snakemake.input.a, snakemake.input.b, snakemake.input.test_set, cfg["judges"], cfg["evaluation"],
           snakemake.params.cache_dir, snakemake.output.judgements, snakemake.output.cost,
           model_a=f"{w.a}-{w.size}", model_b=f"{w.b}-{w.size}", testset=w.testset)
