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
        generations=[answers_file(m, s, t) for s, m, t in answers_compared()],
        harnesses=harness_outputs(),  # rules/compare.smk: (table, plot) per size and kind
        benchmarks=benchmark_outputs(),  # rules/benchmark.smk: (table, plot) per size
    output:
        html=report(f"{R}/report.html", caption="../report/report_html.rst", category="0. The run on one page",
                    labels={"result": "report.html"}),
        loss_curves=[f"{R}/plots/loss_curves_{s}.png" for s in config["evaluation"]["sizes"]],
    params:
        sizes=config["evaluation"]["sizes"],
        generation_keys=answers_compared(),
        harness_keys=harness_keys(),
        config_files=config_files_used(),
        config_overrides=dict(workflow.config_settings.config),
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"


# A selection ready for the Hub (reporting/release.py): the records as Parquet and JSON with a
# dataset card saying how they were made; `alpagasus publish` uploads the directory.
rule release:
    input:
        selection=lambda w: variant_data(w.name),
        records=f"{R}/alpaca_52k.json",
        scores=f"{R}/scores.jsonl",
        rating_cost=f"{R}/rating_cost.json",
        data_summary=f"{R}/data_summary.json",
    output:
        directory(f"{R}/release/{{name}}"),
    wildcard_constraints:
        name="[A-Za-z0-9_]+",
    params:
        how=lambda w: release_how(w.name),
        data=identity.data_identity(config["data"]),
        license=config["data"]["license"],
        language=config["data"]["language"],
    log:
        f"{R}/logs/release/{{name}}.log",
    conda:
        "../envs/api.yaml"
    script:
        "../scripts/release.py"
