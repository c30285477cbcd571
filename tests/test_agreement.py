"""Judge agreement statistics on hand-worked inputs."""
import pytest

from alpagasus.selection.agreement import (content_hash, grid_index, judge_agreement, quadratic_kappa, score_agreement, set_overlap, write_agreement)


def test_grid_and_quadratic_kappa_by_hand():
    assert [grid_index(s) for s in (0, 4.74, 4.76, 5.0, 3.25)] == [0, 9, 10, 10, 7]
    # In grid steps a = 8, 9, 10, 10 and b = 8, 10, 10, 9: observed mean squared distance
    # (0 + 1 + 0 + 1) / 4 = 0.5; expected over all 16 pairings 22 / 16 = 1.375.
    assert quadratic_kappa([4, 4.5, 5, 5], [4, 5, 5, 4.5]) == pytest.approx(1 - 0.5 / 1.375)
    assert quadratic_kappa([3, 4, 5], [3, 4, 5]) == pytest.approx(1.0)
    assert quadratic_kappa([4.5, 4.5], [4.5, 4.5]) is None  # one category: undefined, not 1
    # Reversed ranking: full disagreement beyond chance.
    assert quadratic_kappa([1, 3, 5], [5, 3, 1]) == pytest.approx(-1.0)


def test_score_agreement_by_hand():
    a = [1.0, 2.0, 3.0, 4.0, None]
    b = [1.5, 1.0, 4.0, 5.0, 3.0]  # the last is left out: a did not score it
    got = score_agreement(a, b)
    assert got["records_both_scored"] == 4
    assert got["spearman"] == pytest.approx(0.8)  # ranks 1234 vs 2134: 1 - 6*2/(4*15)
    assert got["kendall_tau_b"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant of 6
    m = got["confusion_grid_0_5"]["matrix"]
    assert m[2][3] == 1 and m[4][2] == 1 and m[6][8] == 1 and m[8][10] == 1 and sum(map(sum, m)) == 4
    assert got["exact_agreement_grid_0_5"] == 0.0


def test_set_overlap_and_release_matching_by_content():
    assert set_overlap({"a", "b", "c"}, {"b", "c", "d", "e"}) == {
        "ours": 3, "theirs": 4, "both": 2, "precision": pytest.approx(2 / 3), "recall": 0.5, "jaccard": 0.4}
    recs = [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(6)]
    scores = {"x": [5, 4.5, 3, 4.5, 2, None], "y": [4.5, 4.5, 4.5, 3, 3, 5]}
    # The release lists records in another order, plus one that is not in this data.
    release = [recs[3], recs[0], {"instruction": "other", "input": "", "output": "z"}]
    got = judge_agreement(recs, scores, {"method": "threshold", "threshold": 4.5}, {"paper": release})
    assert got["judges"]["x"] == {"scored": 5, "kept": 3, "distinct_values": 4, "mean": pytest.approx(3.8)}
    assert got["pairs"][0]["kept_sets"] == {"ours": 3, "theirs": 4, "both": 2, "precision": pytest.approx(2 / 3),
                                            "recall": 0.5, "jaccard": 0.4}
    rel = got["releases"]["paper"]
    assert rel["records"] == 3 and rel["in_this_data"] == 2
    assert rel["by_judge"]["x"]["both"] == 2 and rel["by_judge"]["x"]["recall"] == 1.0
    assert rel["by_judge"]["y"]["both"] == 1 and rel["by_judge"]["y"]["precision"] == 0.25
    assert content_hash(recs[0]) == content_hash(dict(reversed(list(recs[0].items()))))


def test_write_agreement_files(tmp_path):
    import json

    recs = [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(20)]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    for name, shift in (("a", 0), ("b", 1)):
        rows = [{"index": i, "status": "scored", "score": ((i + shift) % 11) / 2} for i in range(20)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rel.json").write_text(json.dumps(recs[:5]))
    got = write_agreement(tmp_path / "d.json", {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl"},
                          {"method": "top_k", "k": 5}, "score", {"rel": tmp_path / "rel.json"},
                          tmp_path / "out.json", tmp_path / "out.png")
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(got))
    assert (tmp_path / "out.png").stat().st_size > 10_000


@pytest.mark.slow
def test_workflow_two_judges_logprobs_selection_and_release(tmp_path, api_key):
    """Through snakemake: the fake openai judge in logprobs mode, the verifier as a second judge,
    top_k by expected_score, a 'released' selection to compare with; then the report."""
    import json

    import yaml

    from alpagasus.data import load_records
    from alpagasus.core.io import read_jsonl
    from alpagasus.testing.fake_openai import FakeOpenAIServer
    from test_workflow import snakemake

    release = tmp_path / "released.json"
    with FakeOpenAIServer(api_key=api_key) as srv:
        cfg = {
            "data": {"source": "miniature", "miniature": {"n_records": 120}},
            "judges": {"fake": {"backend": "openai", "model": "gpt-fake", "base_url": srv.base_url, "concurrency": 8,
                                "timeout_s": 5, "score_mode": "logprobs"}},
            "rating": {"judge": "fake", "max_usd": 1.0, "compare": ["verifier"]},
            "selection": {"method": "top_k", "k": 30, "score": "expected_score",
                          "compare_to": {"released": str(release)}, "extra": None},
        }
        (tmp_path / "o.yaml").write_text(yaml.safe_dump(cfg))
        snakemake(tmp_path, "results/alpaca_52k.json", "--configfile", tmp_path / "o.yaml")
        records = load_records(tmp_path / "results/alpaca_52k.json")
        release.write_text(json.dumps(list(reversed(records[:40]))))  # another order: matched by content
        targets = ["results/filtered_9k.json", "results/selection_summary.json", "results/judge_agreement.json",
                   "results/random_9k.json"]
        snakemake(tmp_path, *targets, "--configfile", tmp_path / "o.yaml")
        srv.reset_log()
        proc = snakemake(tmp_path, *targets, "--configfile", tmp_path / "o.yaml", "-n")
        assert "Nothing to be done" in proc.stdout + proc.stderr
    res = tmp_path / "results"
    rows = read_jsonl(res / "scores.jsonl")
    kept = load_records(res / "filtered_9k.json")
    assert len(kept) == 30 and len(load_records(res / "random_9k.json")) == 30
    ranked = sorted((r["expected_score"] for r in rows if r["status"] == "scored"), reverse=True)
    kept_keys = {(r["instruction"], r["input"], r["output"]) for r in kept}
    kept_scores = [row["expected_score"] for row, rec in zip(rows, records)
                   if (rec["instruction"], rec["input"], rec["output"]) in kept_keys and row["status"] == "scored"]
    assert min(kept_scores) >= ranked[29] - 1e-12  # the 30 best by expected score (duplicates aside)
    summary = json.loads((res / "selection_summary.json").read_text())
    assert summary["score_used"]["field"] == "expected_score" and summary["score_used"]["distinct_values"] > 20
    agree = json.loads((res / "judge_agreement.json").read_text())
    assert agree["score_field"] == "expected_score" and [(p["judge_a"], p["judge_b"]) for p in agree["pairs"]] == [("fake", "verifier")]
    assert agree["releases"]["released"]["in_this_data"] == len({(r["instruction"], r["input"], r["output"]) for r in records[:40]})
    verifier_rows = read_jsonl(res / "compare/verifier/scores.jsonl")
    assert len(verifier_rows) == len(records) and all(r["judge"] == "verifier" for r in verifier_rows)
    assert (res / "plots/judge_agreement.png").stat().st_size > 10_000


def test_report_page_shows_agreement_and_ties(tmp_path):
    import json

    from alpagasus.reporting.report import build

    test_write_agreement_files(tmp_path)
    summary = {"records": 20, "kept": 5, "kept_fraction": 0.25, "rule": {"method": "top_k", "k": 5},
               "random_baseline_size": 5, "unscored": 0, "paper_bins": {"5": 5},
               "score_used": {"field": "expected_score", "distinct_values": 17, "cut_value": 4.61,
                              "ties_at_cut": 3, "ties_at_cut_kept": 1, "largest_tie_group": 3}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "cost.json").write_text(json.dumps({"model": "m", "usd_this_run": 0.0}))
    build(selection_summary=tmp_path / "summary.json", score_hist=tmp_path / "out.png", rating_cost=tmp_path / "cost.json",
          checkpoints=[], winrates=[], judge_costs=[], out_path=tmp_path / "r.html",
          agreement=[tmp_path / "out.json", tmp_path / "out.png"])
    page = (tmp_path / "r.html").read_text()
    assert "Judge agreement" in page and "a vs b" in page and "kappa (quadratic, 0.5 grid)" in page
    assert "17 distinct values" in page and "3 records tie, 1 of them kept" in page
