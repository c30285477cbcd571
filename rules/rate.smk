# Stage 2: every record rated by the judge. Paid judgements live in the cache (cache_dir),
# so rerunning this rule only sends what was never answered. rating.shards > 1 splits it into
# N jobs and a gather (RATING_SHARDS, rate_params: rules/common.smk).


if RATING_SHARDS == 1:

    rule rate:
        input:
            records=f"{R}/alpaca_52k.json",
        output:
            **rate_outputs(),
        params:
            **rate_params(),
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

else:
    # rating.shards: N independent jobs over contiguous slices of the records (each a job of
    # the judge's size: a GPU job for a local judge with gpus), then a gather that checks each
    # shard against its records. The shard count is in the file names, so another count rates
    # into other files (from the cache: nothing is paid twice) and stale shards are never mixed in.

    rule rate_shard:
        input:
            records=f"{R}/alpaca_52k.json",
        output:
            scores=SHARD_SCORES,
            cost=SHARD_COST,
        wildcard_constraints:
            shard=r"\d+",
        params:
            **rate_params(),
            shards=RATING_SHARDS,
        log:
            f"{R}/logs/rate_shard/{{shard}}-of-{RATING_SHARDS}.log",
        benchmark:
            f"{R}/benchmarks/rate_shard/{{shard}}-of-{RATING_SHARDS}.tsv"
        resources:
            **judge_job(config["rating"]["judge"]),
        conda:
            "../envs/api.yaml"
        script:
            "../scripts/rate.py"

    rule rate:
        input:
            records=f"{R}/alpaca_52k.json",
            scores=expand(SHARD_SCORES, shard=range(RATING_SHARDS)),
            costs=expand(SHARD_COST, shard=range(RATING_SHARDS)),
        output:
            **rate_outputs(),
        log:
            f"{R}/logs/rate.log",
        benchmark:
            f"{R}/benchmarks/rate.tsv"
        # Reads and writes one file: no job of its own on a cluster.
        localrule: True
        conda:
            "../envs/api.yaml"
        script:
            "../scripts/rate_gather.py"


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
