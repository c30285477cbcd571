"""Pairwise judging in both orders: fake server and verifier, tables, and the DAG."""
import csv
import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

import alpagasus.judging.judges.openai_judge as openai_judge
from alpagasus.core.io import read_jsonl, write_jsonl
from alpagasus.data.miniature import make_test_items, question_of
from alpagasus.evaluation.pairwise import IncompleteJudgingError, judge_pair, load_answers
from alpagasus.testing.fake_openai import FakeOpenAIServer, FaultPlan, expected_pair
from alpagasus.evaluation.winrate import COLUMNS, table_rows, write_winrate


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_judge, "BACKOFF_BASE_S", 0.01)


def make_test_set(tmp_path, n=20):
    items = [{**it, "question": question_of(it)} for it in make_test_items(n, seed=5)]
    write_jsonl(tmp_path / "mini.jsonl", items)
    return items


def answers(tmp_path, name, items, wrong_every=0):
    rows = [{"id": it["id"], "answer": (it["reference"] + "x") if wrong_every and k % wrong_every == 0 else it["reference"]}
            for k, it in enumerate(items)]
    write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return tmp_path / f"{name}.jsonl"


def judges(srv=None):
    j = {"verifier": {"backend": "verifier"}}
    if srv:
        j["fake"] = {"backend": "openai", "model": "gpt-4-fake", "base_url": srv.base_url, "concurrency": 8,
                     "timeout_s": 2, "max_retries": 6}
    return j


def run(tmp_path, a, b, judge, name="out", **eval_over):
    return judge_pair(a, b, tmp_path / "mini.jsonl", judges(eval_over.pop("srv", None)), {"judge": judge, **eval_over},
                      tmp_path / "cache", tmp_path / f"{name}.jsonl", tmp_path / f"{name}.cost.json",
                      model_a="A", model_b="B", testset="mini", progress=False)


def test_both_orders_sent_scores_as_the_judge_wrote_them(tmp_path, api_key):
    items = make_test_set(tmp_path)
    # Every answer differs (identical answers make both orders one prompt, judged once).
    a, b = answers(tmp_path, "a", items), answers(tmp_path, "b", items, wrong_every=1)
    with FakeOpenAIServer(position_bias=1.0) as srv:
        run(tmp_path, a, b, "fake", srv=srv)
        assert len(srv.log()) == 2 * len(items)
        srv.reset_log()
        run(tmp_path, a, b, "fake", name="again", srv=srv)
        assert srv.log() == []  # cached: a rerun pays nothing
    rows = read_jsonl(tmp_path / "out.jsonl")
    from alpagasus.judging.prompts import pairwise_messages

    for row in rows:
        m1 = pairwise_messages(row["question"], row["answer_a"], row["answer_b"])
        m2 = pairwise_messages(row["question"], row["answer_b"], row["answer_a"])
        assert tuple(row["order1"]["scores"]) == expected_pair(m1, 1.0)
        assert tuple(row["order2"]["scores"]) == expected_pair(m2, 1.0)


def test_unparsed_judgements_are_counted_never_ties(tmp_path, api_key):
    items = make_test_set(tmp_path, 10)
    a, b = answers(tmp_path, "a", items), answers(tmp_path, "b", items, wrong_every=1)
    with FakeOpenAIServer(faults=FaultPlan(schedule=["no_score"] * 3)) as srv:
        run(tmp_path, a, b, "fake", srv=srv)
    rows = table_rows([{"model_a": "A", "model_b": "B", "test_set": "mini", "path": tmp_path / "out.jsonl"}], "fake")
    (r,) = rows
    assert 1 <= r["unparsed"] <= 3 and r["n"] == 10 - r["unparsed"]
    assert r["win"] + r["tie"] + r["lose"] == r["n"]


def test_verifier_pairwise_prefers_the_correct_answers(tmp_path):
    items = make_test_set(tmp_path, 30)
    good, bad = answers(tmp_path, "good", items), answers(tmp_path, "bad", items, wrong_every=1)
    run(tmp_path, good, bad, "verifier")
    (r,) = table_rows([{"model_a": "good", "model_b": "bad", "test_set": "mini", "path": tmp_path / "out.jsonl"}], "verifier")
    assert (r["win"], r["tie"], r["lose"]) == (30, 0, 0)
    assert r["winning_score"] == 2.0 and r["position_consistency"] == 1.0 and r["p_value"] < 1e-8
    assert r["relative_score"] > 1.0


def test_mismatched_answer_files_are_a_clear_error(tmp_path):
    items = make_test_set(tmp_path, 5)
    a = answers(tmp_path, "a", items)
    write_jsonl(tmp_path / "b.jsonl", [{"id": it["id"], "answer": "x"} for it in items[:4]])
    with pytest.raises(ValueError, match=r"different items \(only in A: \['mini-4'\]"):
        run(tmp_path, a, tmp_path / "b.jsonl", "verifier")
    write_jsonl(tmp_path / "c.jsonl", [{"id": "mini-0"}])
    with pytest.raises(ValueError, match=r"c.jsonl: line 1: missing field 'answer'"):
        load_answers(tmp_path / "c.jsonl", items)


def test_missing_judgements_fail_the_step_and_rerun_completes(tmp_path, api_key):
    items = make_test_set(tmp_path, 6)
    a, b = answers(tmp_path, "a", items), answers(tmp_path, "b", items, wrong_every=2)
    with FakeOpenAIServer(faults=FaultPlan(schedule=["503"] * 30)) as srv:
        with pytest.raises(IncompleteJudgingError, match="missing"):
            j = judges(srv)
            j["fake"]["max_retries"] = 1
            judge_pair(a, b, tmp_path / "mini.jsonl", j, {"judge": "fake"}, tmp_path / "cache", tmp_path / "o.jsonl",
                       tmp_path / "o.cost.json", model_a="A", model_b="B", testset="mini", progress=False)
        assert not (tmp_path / "o.jsonl").exists()
        srv.faults = None
        srv.reset_log()
        run(tmp_path, a, b, "fake", srv=srv)
        paid_before = 12 - len(srv.log())
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 6 and paid_before >= 0


def test_table_pooled_row_and_csv(tmp_path):
    items = make_test_set(tmp_path, 12)
    good, half = answers(tmp_path, "good", items), answers(tmp_path, "half", items, wrong_every=2)
    run(tmp_path, good, half, "verifier", name="j1")
    run(tmp_path, half, good, "verifier", name="j2")
    js = [{"model_a": "good", "model_b": "half", "test_set": "s1", "path": tmp_path / "j1.jsonl"},
          {"model_a": "good", "model_b": "half", "test_set": "s2", "path": tmp_path / "j1.jsonl"},
          {"model_a": "half", "model_b": "good", "test_set": "s1", "path": tmp_path / "j2.jsonl"}]
    rows = write_winrate(js, "verifier", tmp_path / "w.csv", tmp_path / "w.png", title="t", bootstrap_samples=500)
    assert [(r["model_a"], r["test_set"]) for r in rows] == [("good", "s1"), ("good", "s2"), ("good", "pooled"), ("half", "s1")]
    assert (rows[0]["win"], rows[0]["tie"], rows[0]["lose"]) == (6, 6, 0)
    assert rows[2]["n"] == 24 and rows[2]["win"] == 12
    assert (rows[3]["win"], rows[3]["lose"]) == (0, 6) and rows[3]["winning_score"] == 0.5
    with open(tmp_path / "w.csv") as fh:
        data = list(csv.DictReader(fh))
    assert list(data[0]) == COLUMNS and len(data) == 4
    assert (tmp_path / "w.png").stat().st_size > 10_000


def _snakemake(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_dag_adding_a_comparison_judges_only_the_new_pairs(tmp_path, api_key):
    """References stand in for trained models, so the judging DAG runs without training."""
    items = [{**it, "question": question_of(it)} for it in make_test_items(15, seed=9)]
    for name, wrong in (("ref1", 0), ("ref2", 1), ("ref3", 1)):
        (tmp_path / name).mkdir()
        answers(tmp_path / name, "mini", items, wrong_every=wrong)
    with FakeOpenAIServer() as srv:
        base = {
            "results_dir": "res", "cache_dir": "cache",
            "data": {"source": "miniature", "miniature": {"n_records": 100, "n_test": 15}},
            "judges": {"fake": {"backend": "openai", "model": "gpt-4-fake", "base_url": srv.base_url,
                                "concurrency": 8, "timeout_s": 5}},
            "rating": {"judge": "verifier"},
            "generation": {"test_sets": ["mini"]},
            "training": {"sizes": {"tiny": {"base_model": None}}},
            "evaluation": {"judge": "fake", "sizes": ["tiny"], "comparisons": [["ref1", "ref2"]],
                           "references": {n: str(tmp_path / n) for n in ("ref1", "ref2", "ref3")},
                           "bootstrap_samples": 200},
        }
        # The references must answer the test set the DAG builds: same generator, same seed.
        (tmp_path / "c1.yaml").write_text(yaml.safe_dump(base))
        _snakemake(tmp_path, "res/test_sets/mini.jsonl", "--configfile", tmp_path / "c1.yaml")
        dag_items = read_jsonl(tmp_path / "res/test_sets/mini.jsonl")
        for name, wrong in (("ref1", 0), ("ref2", 1)):
            answers(tmp_path / name, "mini", dag_items, wrong_every=wrong)
        write_jsonl(tmp_path / "ref3/mini.jsonl", [{"id": it["id"], "answer": it["reference"] + "yy"} for it in dag_items])
        _snakemake(tmp_path, "res/winrate_tiny.csv", "--configfile", tmp_path / "c1.yaml")
        assert len(srv.log()) == 2 * 15
        srv.reset_log()
        base["evaluation"]["comparisons"].append(["ref1", "ref3"])
        (tmp_path / "c2.yaml").write_text(yaml.safe_dump(base))
        # The cost is shown before it is spent: only the new pair is to pay, and nothing is sent.
        _snakemake(tmp_path, "res/judging_estimate_tiny.json", "--configfile", tmp_path / "c2.yaml")
        est = json.loads((tmp_path / "res/judging_estimate_tiny.json").read_text())
        assert (est["requests"], est["cached"]) == (30, 30) and srv.log() == []
        assert est["jobs"]["ref1-vs-ref3/mini"]["requests"] == 30 and est["jobs"]["ref1-vs-ref2/mini"]["requests"] == 0
        _snakemake(tmp_path, "res/winrate_tiny.csv", "--configfile", tmp_path / "c2.yaml")
        assert len(srv.log()) == 2 * 15  # only ref1 vs ref3, both orders
    with open(tmp_path / "res/winrate_tiny.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("ref1", "ref2"), ("ref1", "ref3")]
    for r in rows:
        assert int(r["win"]) + int(r["tie"]) + int(r["lose"]) + int(r["unparsed"]) == 15
