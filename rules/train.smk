# Fine-tuning: a selected data set -> results/checkpoints/{variant}-{size}/ (issue #3).
# Included by the Snakefile, which defines `R = config["results_dir"]` before the includes.
# Every resource comes from config (training.sizes[size].resources), never a literal here.


wildcard_constraints:
    variant="[A-Za-z0-9_]+",
    size="[A-Za-z0-9_]+",


# A GGUF base model is converted once into a Hugging Face directory under models_dir
# (transformers cannot save a GGUF-loaded model, so it cannot be fine-tuned as it is).


rule convert_gguf:
    input:
        lambda wc: str(gguf.locate(GGUF_SOURCES[wc.model])),
    output:
        directory(f"{MODELS}/{{model}}"),
    wildcard_constraints:
        model="|".join(map(re.escape, GGUF_SOURCES)) or "(?!)",
    log:
        f"{MODELS}/logs/{{model}}.log",
    resources:
        **cpu_job(mem_mb=4000),
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/convert_gguf.py"


rule train:
    input:
        data=trained_on,  # by content (rules/common.smk, "reruns by content")
        base_model=lambda wc: converted_base_model(wc.size),
    output:
        # Only the loss curve and the log go into Snakemake's report, never the weights.
        report(directory(f"{R}/checkpoints/{{variant}}-{{size}}"), patterns=[r"{file,(loss_curve\.png|train_log\.json)}"],
               caption="../report/training.rst", category="2. Training", subcategory="{size}",
               labels={"model": "{variant}-{size}", "file": "{file}"}),
    log:
        f"{R}/logs/train/{{variant}}-{{size}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{variant}}-{{size}}.tsv"
    params:
        hparams=lambda wc: model_params(wc.size),
        data_sha256=trained_on_sha256,
        # A lambda: the template holds {instruction}/{input}, which are not wildcards.
        template=lambda wc: config["training"]["template"],
        seed=lambda wc: variant_seed(wc.variant),  # training.seed, or a seeded variant's (evaluation.seeds)
    threads: lambda wc: int(_res(wc.size, "resources")["cpus_per_task"])
    resources:
        **rule_resources("resources"),
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train.py"
