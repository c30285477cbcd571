# Stage 7: one self-contained HTML page of the whole run.


def config_files_used():
    # The base config, then the overlays in the order given (later ones win), relative to the
    # workflow so that two checkouts of one run read alike. The commit and date are read by the
    # script: as params they would rerun the report on every commit and every day.
    base = Path(workflow.basedir)
    files = [base / "config" / "config.yaml", *workflow.overwrite_configfiles]
    return [str(Path(f).relative_to(base)) if Path(f).is_relative_to(base) else str(f) for f in files]


def answers_compared():
    # (size, model, test set) of every answer file that was judged, for exact match.
    return list(dict.fromkeys((s, m, j["test_set"]) for s in config["evaluation"]["sizes"]
                              for j in judgement_files(s) for m in (j["model_a"], j["model_b"])))


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
    output:
        html=report(f"{R}/report.html", caption="../report/report_html.rst", category="0. The run on one page",
                    labels={"result": "report.html"}),
        loss_curves=[f"{R}/plots/loss_curves_{s}.png" for s in config["evaluation"]["sizes"]],
    params:
        sizes=config["evaluation"]["sizes"],
        generation_keys=answers_compared(),
        config_files=config_files_used(),
        config_overrides=dict(workflow.config_settings.config),
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
