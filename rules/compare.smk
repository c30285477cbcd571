# Selectors compared at one size, and the paper's data-size curve (docs/evaluation.md
# "Selectors compared"). No judging of their own: their comparisons are generated
# (evaluation/selectors_table.py plan) and judged by rule judge_pair with the configured ones
# (rules/common.smk all_comparisons); the tables read the same judgement files back.

# Helpers: rules/common.smk ("selectors compared").


# A checkpoint, as every rule that writes training data (rules/common.smk, "reruns by content").
checkpoint random_at_k:
    input:
        records=f"{R}/alpaca_52k.json",
    output:
        f"{R}/selections/random_k{{k}}.json",
    wildcard_constraints:
        k=str(COMPARE["k"]) if COMPARE["k"] is not None else "(?!)",
    params:
        k=lambda wc: int(wc.k),
        seed=config["selection"]["random_seed"],
    log:
        f"{R}/logs/select_random_k{{k}}.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/random_at_k.py"


rule selectors_table:
    input:
        judgements=lambda wc: [p for e in harness_entries("selectors", wc.size) for p in e["paths"].values()],
        selections=lambda wc: list(harness_selections("selectors").values()),
    output:
        table=report(f"{R}/selectors_{{size}}.csv", caption="../report/selectors_table.rst",
                     category="3. Pairwise evaluation", subcategory="{size}", labels={"result": "selectors at one k"}),
        plot=report(f"{R}/plots/selectors_{{size}}.png", caption="../report/selectors_plot.rst",
                    category="3. Pairwise evaluation", subcategory="{size}", labels={"result": "selectors plot"}),
    wildcard_constraints:
        size="[A-Za-z0-9_]+",
    params:
        entries=lambda wc: harness_entries("selectors", wc.size),
        selections=harness_selections("selectors"),
        k=COMPARE["k"],
        judge=config["evaluation"]["judge"],
        bootstrap_samples=config["evaluation"]["bootstrap_samples"],
        seed=config["evaluation"]["seed"],
    log:
        f"{R}/logs/selectors_{{size}}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/selectors_table.py"


rule data_size_table:
    input:
        judgements=lambda wc: [p for e in harness_entries("data_size", wc.size) for p in e["paths"].values()],
        selections=lambda wc: list(harness_selections("data_size").values()),
    output:
        table=report(f"{R}/data_size_{{size}}.csv", caption="../report/data_size.rst",
                     category="3. Pairwise evaluation", subcategory="{size}", labels={"result": "data-size table"}),
        plot=report(f"{R}/plots/data_size_{{size}}.png", caption="../report/data_size.rst",
                    category="3. Pairwise evaluation", subcategory="{size}", labels={"result": "data-size curve"}),
    wildcard_constraints:
        size="[A-Za-z0-9_]+",
    params:
        entries=lambda wc: harness_entries("data_size", wc.size),
        selections=harness_selections("data_size"),
        judge=config["evaluation"]["judge"],
        bootstrap_samples=config["evaluation"]["bootstrap_samples"],
        seed=config["evaluation"]["seed"],
    log:
        f"{R}/logs/data_size_{{size}}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/selectors_table.py"
