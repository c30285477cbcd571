# Judge agreement: more judges rate the same records (rating.compare, each with its own cache
# entries), and the kept sets are compared with released selections (selection.compare_to).


rule rate_compare:
    input:
        records=f"{R}/alpaca_52k.json",
    output:
        scores=f"{R}/compare/{{judge}}/scores.jsonl",
        cost=f"{R}/compare/{{judge}}/rating_cost.json",
    wildcard_constraints:
        judge="[A-Za-z0-9_\\-]+",
    params:
        judge=lambda wc: judge_identity(wc.judge),
        # dimension, and the prompt where it is not the paper's (rating.prompt)
        **identity.rating_identity(config["rating"]),
        max_field_chars=config["data"]["max_field_chars"],
        cache_dir=CACHE,
    log:
        f"{R}/logs/rate_compare_{{judge}}.log",
    resources:
        **judge_job_by_wildcard(),
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/rate.py"


rule judge_agreement:
    input:
        records=f"{R}/alpaca_52k.json",
        scores=[judge_scores_file(j) for j in agreement_judges()],
        releases=list(config["selection"]["compare_to"].values()),
    output:
        json=f"{R}/judge_agreement.json",
        plot=f"{R}/plots/judge_agreement.png",
    params:
        judges=agreement_judges(),
        selection=selection_rule(config["selection"]),
        releases=config["selection"]["compare_to"],
    log:
        f"{R}/logs/judge_agreement.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/judge_agreement.py"
