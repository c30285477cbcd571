# Per-record signals (issue #17, docs/selection.md "Signals"): one job and one file per signal
# configured under `signals:`, {R}/signals/{name}.jsonl in record order (an embedding also
# {name}.npy). A causal LM's losses and an embedding's vectors are cached per record under
# cache_dir by what the model is (its weights' sha256), so new records compute only themselves;
# selections read these files and never rerun a signal.
#   snakemake results/selectors/signals/ifd.jsonl --cores 2 --configfile config/selectors.yaml
#   snakemake signals --cores 2 --configfile config/selectors.yaml      # every configured signal

from alpagasus.selection.signals import converted_models

SIGNALS = config["signals"]


def signal_names(*kinds):
    """A wildcard constraint matching the signals of these kinds (none: matches nothing)."""
    return "|".join(re.escape(n) for n, s in SIGNALS.items() if s["kind"] in kinds) or "(?!)"


def signal_outputs():
    """Every configured signal's files."""
    return [f"{R}/signals/{n}.{ext}" for n, s in SIGNALS.items()
            for ext in (("npy", "jsonl") if s["kind"] == "embedding" else ("jsonl",))]


def signal_job(name):
    """Slurm resources of a signal's job: the GPU partition and --gres when it asks for GPUs (a
    causal LM over 52k records), else a CPU job of its size."""
    res = SIGNALS[name]["resources"]
    gpus = int(res["gpus"])
    sized = dict(mem_mb=int(res["mem_mb"]), runtime=int(res["runtime_min"]), cpus_per_task=int(res["cpus_per_task"]))
    if gpus <= 0:
        return cpu_job(**sized)
    return dict(slurm_partition=partition(gpus), slurm_account=ACCOUNT, gres=gres(gpus), **sized)


def signal_job_by_wildcard():
    """signal_job of the {signal} wildcard, each resource a callable (as judge_job_by_wildcard)."""
    fallback = {"slurm_partition": "", "slurm_account": "", "gres": "", **SMALL_JOB}
    return {k: (lambda wc, k=k: signal_job(wc.signal).get(k, fallback[k])) for k in fallback}


def signal_params(wc):
    # What defines the values (alpagasus.core.identity): not the batch size, device or job size.
    return identity.signal_identity(SIGNALS[wc.signal])


def signal_models(wc):
    # The GGUF files it names, converted once by rule convert_gguf (rules/train.smk).
    return list(converted_models(SIGNALS[wc.signal], MODELS).values())


def signal_threads(wc):
    return int(SIGNALS[wc.signal]["resources"]["cpus_per_task"])


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
