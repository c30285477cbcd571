# Selectors compared at one size, and the paper's data-size curve (docs/evaluation.md
# "Selectors compared"). No judging of their own: their comparisons are generated
# (evaluation/selectors_table.py plan) and judged by rule judge_pair with the configured ones
# (rules/common.smk all_comparisons); the tables read the same judgement files back.

from alpagasus.evaluation.selectors_table import plan as harness_plan, random_variant

COMPARE = config["evaluation"]["selectors"]
HARNESS = harness_plan(config["evaluation"], config["training"]["seed"])


def harness_entries(kind, size):
    """The plan's entries with their judgement files, per test set."""
    return [{**e, "paths": {t: f"{R}/judgements/{size}/{e['model_a']}-vs-{e['model_b']}/{t}.jsonl"
                            for t in config["generation"]["test_sets"]}}
            for e in HARNESS[kind]]


def harness_selections(kind):
    """Selector name -> the selection file its training-seed variant trains on."""
    names = dict.fromkeys(e["selector"] for e in HARNESS[kind])
    return {n: variant_data(random_variant(COMPARE["k"]) if n == "random" else n) for n in names}


def harness_keys():
    """(size, kind) of every harness table, in the order of harness_outputs."""
    return [(size, kind) for size in config["evaluation"]["sizes"] for kind in ("selectors", "data_size")
            if HARNESS[kind]]


def harness_outputs():
    """The table and plot of each harness table, in pairs."""
    return [f for size, kind in harness_keys() for f in (f"{R}/{kind}_{size}.csv", f"{R}/plots/{kind}_{size}.png")]


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
