# Stage 3: keep the best-rated records; a same-size random baseline; the score histogram.
# The rules that write training data are checkpoints: training follows their content, not their
# date (rules/common.smk, "reruns by content").



checkpoint select:
    input:
        records=f"{R}/alpaca_52k.json",
        scores=f"{R}/scores.jsonl",
    output:
        f"{R}/filtered_9k.json",
    params:
        rule=selection_rule(config["selection"]),
    log:
        f"{R}/logs/select.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/select.py"


checkpoint select_extra:
    input:
        records=f"{R}/alpaca_52k.json",
        scores=f"{R}/scores.jsonl",
    output:
        f"{R}/selections/{{name}}.json",
    wildcard_constraints:
        # Only the configured names (an overlay's `extra: null` leaves none).
        name="|".join(config["selection"]["extra"] or {}) or "(?!)",
    params:
        rule=lambda wc: selection_rule(config["selection"]["extra"][wc.name]),
    log:
        f"{R}/logs/select_{{name}}.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/select.py"


checkpoint random_baseline:
    input:
        records=f"{R}/alpaca_52k.json",
        selected=f"{R}/filtered_9k.json",
    output:
        f"{R}/random_9k.json",
    params:
        seed=config["selection"]["random_seed"],
    log:
        f"{R}/logs/random_baseline.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/random_baseline.py"


rule selection_summary:
    input:
        records=f"{R}/alpaca_52k.json",
        scores=f"{R}/scores.jsonl",
        random=f"{R}/random_9k.json",
    output:
        summary=report(f"{R}/selection_summary.json", caption="../report/selection_summary.rst",
                       category="1. Data selection", labels={"result": "selection summary"}),
        plot=report(f"{R}/plots/score_hist.png", caption="../report/score_hist.rst",
                    category="1. Data selection", labels={"result": "score histogram"}),
    params:
        rule=selection_rule(config["selection"]),
    log:
        f"{R}/logs/selection_summary.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/selection_summary.py"


# Selectors (selection.selectors, docs/selection.md "Selectors"): rank by any signal (the
# judge's score, or a file under {R}/signals/), keep by threshold / top_k / top_fraction, with
# near-duplicate removal and DEITA's diversity filter over an embedding signal. A checkpoint:
# training follows its content (rules/common.smk, "reruns by content"); its inputs:
# selector_inputs (rules/common.smk).

checkpoint select_signal:
    input:
        unpack(selector_inputs),
    output:
        selection=f"{R}/selections/{{name}}.json",
        details=f"{R}/selections/{{name}}.details.json",
    wildcard_constraints:
        name="|".join(SELECTORS) or "(?!)",
    params:
        rule=lambda wc: selector_rule_of(wc.name),  # what defines the output (literature resolved)
    log:
        f"{R}/logs/select_{{name}}.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/select_signal.py"
