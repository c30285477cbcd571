"""The saturated verifier: writes "4.5" for near answers like a modern judge, while its token
probabilities keep the exact quality; the selection stage of config/saturated.yaml."""
import asyncio
import json
import os

import pytest
import yaml
from conftest import REPO

from alpagasus.judging.expected_score import expected_score
from alpagasus.judging.judges import JudgeRequest, make_judge
from alpagasus.judging.parsing import parse_rating


def rate(judge, output, reference):
    req = JudgeRequest("k", [], {"output": output, "reference": reference})
    return asyncio.run(judge.complete(req))


def test_saturated_text_hides_what_the_probabilities_keep():
    judge = make_judge("sat", {"backend": "verifier", "saturate": True, "score_mode": "logprobs"})
    exact, one_off, two_off, far = (rate(judge, a, "planet") for a in ("planet", "planer", "plaqer", "xyz"))
    assert [parse_rating(r.text) for r in (exact, one_off, two_off)] == [4.5, 4.5, 4.5]  # never 5
    assert parse_rating(far.text) < 4.5
    e = [expected_score(r.logprobs).expected for r in (exact, one_off, two_off, far)]
    assert e[0] > e[1] > e[2] > 4.5 > e[3]
    assert e[0] == pytest.approx(5 * 0.45 + 4.5 * 0.55)
    plain = make_judge("v", {"backend": "verifier"})
    assert plain.params == {} and judge.params == {"saturate": True} and judge.model != plain.model


@pytest.mark.slow
def test_saturated_overlay_selection_stage(tmp_path):
    """Threshold keeps exact answers and near misses alike; top_k by expected_score the exact ones first."""
    from alpagasus.data import load_records
    from alpagasus.data.miniature import solve
    from test_workflow import snakemake

    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"data": {"miniature": {"n_records": 600}},
                                     "selection": {"extra": {"top_expected": {"method": "top_k", "k": 200,
                                                                              "score": "expected_score"}}}}))
    res = tmp_path / "results/saturated"
    snakemake(tmp_path, "results/saturated/filtered_9k.json", "results/saturated/selections/top_expected.json",
              "results/saturated/selection_summary.json", "--configfile", REPO / "config/smoke.yaml",
              REPO / "config/saturated.yaml", small)
    records = load_records(res / "alpaca_52k.json")
    exact = [r for r in records if r["output"] == solve(r["instruction"], r["input"])]
    kept = load_records(res / "filtered_9k.json")
    assert len(kept) > len(exact)  # near misses pass the 4.5 threshold too
    top = load_records(res / "selections/top_expected.json")
    assert len(top) == 200 and all(r["output"] == solve(r["instruction"], r["input"]) for r in top)
    summary = json.loads((res / "selection_summary.json").read_text())
    assert summary["score_counts"].get("5", 0) == 0 and summary["score_used"]["field"] == "score"
    assert summary["score_used"]["ties_at_cut"] == len(kept)  # everything kept ties at 4.5


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")  # a miniature on both cores (conftest.py)
def test_saturated_miniature_end_to_end(tmp_path):
    """The saturated run of docs/selection.md: both selections train, the exact verifier judges
    them pairwise. What is asserted is the DAG and the tables, not the models, so the trainings
    are cut to 30 steps (4 of CI's minutes); ALPAGASUS_FULL_RUNS=1 runs the documented command as
    it is and prints the figures docs/selection.md quotes."""
    import csv

    from alpagasus.core.io import read_jsonl
    from conftest import run_snakemake as _snakemake

    overlays = [REPO / "config/smoke.yaml", REPO / "config/saturated.yaml"]
    if not os.environ.get("ALPAGASUS_FULL_RUNS"):
        short = tmp_path / "short_training.yaml"
        short.write_text(yaml.safe_dump({"training": {"sizes": {"tiny": {"max_steps": 30, "save_every_steps": 30}}}}))
        overlays.append(short)
    _, wall = _snakemake(tmp_path, "--configfile", *overlays)
    res = tmp_path / "results/saturated"
    with open(res / "winrate_tiny.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("top_expected", "alpagasus")]
    r = rows[0]
    assert int(r["win"]) + int(r["tie"]) + int(r["lose"]) == int(r["n"]) > 0
    exact = {}
    for v in ("alpagasus", "top_expected"):
        gen = read_jsonl(res / "generations" / f"{v}-tiny" / "mini.jsonl")
        exact[v] = sum(g["answer"] == g["reference"] for g in gen) / len(gen)
    summary = json.loads((res / "selection_summary.json").read_text())
    assert summary["score_used"]["ties_at_cut"] == summary["kept"]  # the threshold keeps one tie group
    print("saturated miniature: %.0f s; exact match %s; win/tie/lose of top_expected: %s/%s/%s, winning score %s "
          "[%s, %s], p %s" % (wall, json.dumps(exact), r["win"], r["tie"], r["lose"], r["winning_score"],
                             r["ci_low"], r["ci_high"], r["p_value"]))
    assert "Judge agreement" not in (res / "report.html").read_text()  # nothing to compare configured
