# Stage 7: one self-contained HTML page of the whole run.


rule report:
    input:
        selection_summary=f"{R}/selection_summary.json",
        score_hist=f"{R}/plots/score_hist.png",
        rating_cost=f"{R}/rating_cost.json",
        checkpoints=compared_checkpoints(),
        tables=[f"{R}/winrate_{s}.csv" for s in config["evaluation"]["sizes"]],
        plots=[f"{R}/plots/winrate_{s}.png" for s in config["evaluation"]["sizes"]],
        judge_costs=[
            j["path"].replace(".jsonl", ".cost.json")
            for s in config["evaluation"]["sizes"]
            for j in judgement_files(s)
        ],
        agreement=agreement_outputs(),
    output:
        report(f"{R}/report.html", caption="../report/report_html.rst", category="0. The run on one page",
               labels={"result": "report.html"}),
    params:
        sizes=config["evaluation"]["sizes"],
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
