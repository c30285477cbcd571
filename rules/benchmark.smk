# Standard benchmarks through lm-evaluation-harness (evaluation.benchmarks; docs/evaluation.md
# "Benchmarks"): a checkpoint -> {R}/benchmarks/{variant}-{size}.json (lm-eval's results, as a
# GPU job like generation), and the paper's table {R}/benchmarks_{size}.csv.
# Included by the Snakefile after rules/generate.smk (uses common.smk's resource helpers).

rule lm_eval:
    input:
        checkpoint=f"{R}/checkpoints/{{variant}}-{{size}}",
        tasks=benchmark_task_files(),
    output:
        f"{R}/benchmarks/{{variant}}-{{size}}.json",
    wildcard_constraints:
        variant="[A-Za-z0-9_]+",
        size="[A-Za-z0-9_]+",
    log:
        f"{R}/logs/lm_eval/{{variant}}-{{size}}.log",
    benchmark:
        f"{R}/benchmarks/lm_eval/{{variant}}-{{size}}.tsv"
    params:
        # What the scores depend on; the batch size (speed) and the device are read at run time.
        tasks=BENCHMARKS["tasks"],
        include_path=BENCHMARKS["include_path"],
        limit=BENCHMARKS["limit"],
        dtype=BENCHMARKS["dtype"],
        seed=BENCHMARKS["seed"],
        bootstrap_iters=BENCHMARKS["bootstrap_iters"],
        allow_code_execution=BENCHMARKS["allow_code_execution"],
    threads: lambda wc: int(_res(wc.size, "generate_resources")["cpus_per_task"])
    resources:
        **rule_resources("generate_resources"),
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/benchmark.py"


rule benchmarks_table:
    input:
        lambda wc: [f"{R}/benchmarks/{m}.json" for m in benchmarked_models(wc.size)],
    output:
        table=report(f"{R}/benchmarks_{{size}}.csv", caption="../report/benchmarks_table.rst",
                     category="5. Benchmarks", subcategory="{size}", labels={"result": "benchmarks table"}),
        plot=report(f"{R}/plots/benchmarks_{{size}}.png", caption="../report/benchmarks_table.rst",
                    category="5. Benchmarks", subcategory="{size}", labels={"result": "benchmarks plot"}),
    wildcard_constraints:
        size="[A-Za-z0-9_]+",
    params:
        models=lambda wc: benchmarked_models(wc.size),
        tasks=BENCHMARKS["tasks"],
    log:
        f"{R}/logs/benchmarks_table_{{size}}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/benchmarks_table.py"
