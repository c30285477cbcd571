# Stage 2: every record rated by the judge. Paid judgements live in the cache (cache_dir),
# so rerunning this rule only sends what was never answered.



rule rate:
    input:
        records=f"{R}/alpaca_52k.json",
    output:
        scores=f"{R}/scores.jsonl",
        cost=report(f"{R}/rating_cost.json", caption="../report/rating_cost.rst",
                    category="4. Cost of the judges", subcategory="rating", labels={"stage": "rating"}),
    params:
        judge=judge_identity(config["rating"]["judge"]),
        # dimension, and the prompt where it is not the paper's (rating.prompt)
        **identity.rating_identity(config["rating"]),
        max_field_chars=config["data"]["max_field_chars"],
        cache_dir=CACHE,
    log:
        f"{R}/logs/rate.log",
    benchmark:
        f"{R}/benchmarks/rate.tsv"
    resources:
        **judge_job(config["rating"]["judge"]),
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/rate.py"


rule rating_estimate:
    """What rating would cost now: `snakemake results/rating_estimate.json` before paying."""
    input:
        records=f"{R}/alpaca_52k.json",
    output:
        f"{R}/rating_estimate.json",
    params:
        max_field_chars=config["data"]["max_field_chars"],
        cache_dir=CACHE,
    log:
        f"{R}/logs/rating_estimate.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/rating_estimate.py"
