# Per-record signals (issue #17, docs/selection.md "Signals"): one job and one file per signal
# configured under `signals:`, {R}/signals/{name}.jsonl in record order (an embedding also
# {name}.npy). A causal LM's losses and an embedding's vectors are cached per record under
# cache_dir by what the model is (its weights' sha256), so new records compute only themselves;
# selections read these files and never rerun a signal.
#   snakemake results/selectors/signals/ifd.jsonl --cores 2 --configfile config/selectors.yaml
#   snakemake signals --cores 2 --configfile config/selectors.yaml      # every configured signal

rule signals:
    """Every configured signal."""
    input:
        signal_outputs(),


localrules:
    signals,


rule signal_lm:
    input:
        records=f"{R}/alpaca_52k.json",
        models=signal_models,
    output:
        f"{R}/signals/{{signal}}.jsonl",
    wildcard_constraints:
        signal=signal_names("ifd", "perplexity"),
    params:
        signal=signal_params,
        # The prompt the losses are conditioned on is the one the models are trained with.
        template=lambda wc: config["training"]["template"],
        cache_dir=CACHE,
    log:
        f"{R}/logs/signals/{{signal}}.log",
    benchmark:
        f"{R}/benchmarks/signals/{{signal}}.tsv"
    threads: signal_threads
    resources:
        **signal_job_by_wildcard(),
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/signal_lm.py"


rule signal_length:
    input:
        records=f"{R}/alpaca_52k.json",
        models=signal_models,
    output:
        f"{R}/signals/{{signal}}.jsonl",
    wildcard_constraints:
        signal=signal_names("length"),
    params:
        signal=signal_params,
    log:
        f"{R}/logs/signals/{{signal}}.log",
    resources:
        **signal_job_by_wildcard(),
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/signal_length.py"


rule signal_embedding:
    input:
        records=f"{R}/alpaca_52k.json",
    output:
        npy=f"{R}/signals/{{signal}}.npy",
        jsonl=f"{R}/signals/{{signal}}.jsonl",
    wildcard_constraints:
        signal=signal_names("embedding"),
    params:
        signal=signal_params,
        cache_dir=CACHE,
    log:
        f"{R}/logs/signals/{{signal}}.log",
    benchmark:
        f"{R}/benchmarks/signals/{{signal}}.tsv"
    threads: signal_threads
    resources:
        **signal_job_by_wildcard(),
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/signal_embedding.py"
