# Stage 6: pairwise judging in both orders, and the win/tie/lose tables. Each comparison and
# test set is its own job and file, so adding a comparison judges only the new pairs.


rule judge_pair:
    input:
        a=lambda wc: answers_file(wc.a, wc.size, wc.testset),
        b=lambda wc: answers_file(wc.b, wc.size, wc.testset),
        test_set=f"{R}/test_sets/{{testset}}.jsonl",
    output:
        judgements=f"{R}/judgements/{{size}}/{{a}}-vs-{{b}}/{{testset}}.jsonl",
        cost=report(f"{R}/judgements/{{size}}/{{a}}-vs-{{b}}/{{testset}}.cost.json",
                    caption="../report/judge_cost.rst", category="4. Cost of the judges",
                    subcategory="pairwise {size}", labels={"comparison": "{a} vs {b}", "test set": "{testset}"}),
    wildcard_constraints:
        a="[A-Za-z0-9_]+",
        b="[A-Za-z0-9_]+",
        size="[A-Za-z0-9_]+",
        testset="[A-Za-z0-9_]+",
    params:
        judge=judge_identity(config["evaluation"]["judge"]),
        cache_dir=CACHE,
    log:
        f"{R}/logs/judge/{{size}}/{{a}}-vs-{{b}}/{{testset}}.log",
    benchmark:
        f"{R}/benchmarks/judge/{{size}}/{{a}}-vs-{{b}}/{{testset}}.tsv"
    resources:
        **judge_job(config["evaluation"]["judge"]),
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/judge_pair.py"


rule winrate:
    input:
        lambda wc: [j["path"] for j in judgement_files(wc.size)],
    output:
        table=report(f"{R}/winrate_{{size}}.csv", caption="../report/winrate_table.rst",
                     category="3. Pairwise evaluation", subcategory="{size}", labels={"result": "win/tie/lose table"}),
        plot=report(f"{R}/plots/winrate_{{size}}.png", caption="../report/winrate_plot.rst",
                    category="3. Pairwise evaluation", subcategory="{size}", labels={"result": "win/tie/lose plot"}),
    wildcard_constraints:
        size="[A-Za-z0-9_]+",
    params:
        judgements=lambda wc: judgement_files(wc.size),
        judge=config["evaluation"]["judge"],
        bootstrap_samples=config["evaluation"]["bootstrap_samples"],
        seed=config["evaluation"]["seed"],
    log:
        f"{R}/logs/winrate_{{size}}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/winrate.py"


rule judging_estimate:
    """What judging a size would cost now: `snakemake results/judging_estimate_13b.json` once the
    answers exist, before paying for a single judgement."""
    input:
        lambda wc: [
            f
            for j in judgement_files(wc.size)
            for f in (
                answers_file(j["model_a"], wc.size, j["test_set"]),
                answers_file(j["model_b"], wc.size, j["test_set"]),
                f"{R}/test_sets/{j['test_set']}.jsonl",
            )
        ],
    output:
        f"{R}/judging_estimate_{{size}}.json",
    wildcard_constraints:
        size="[A-Za-z0-9_]+",
    params:
        comparisons=lambda wc: [
            {
                "name": f"{j['model_a']}-vs-{j['model_b']}/{j['test_set']}",
                "a": answers_file(j["model_a"], wc.size, j["test_set"]),
                "b": answers_file(j["model_b"], wc.size, j["test_set"]),
                "test_set": f"{R}/test_sets/{j['test_set']}.jsonl",
            }
            for j in judgement_files(wc.size)
        ],
        cache_dir=CACHE,
    log:
        f"{R}/logs/judging_estimate_{{size}}.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/judging_estimate.py"
