"""Structured outputs (judges.<name>.structured_output: true): the request asks for a JSON schema,
through the official SDK against the fake server, online and through the Batch API; the reply is
read by its keys; the judgement's cache key holds the format. Asserted from the server's log."""
import json

import pytest

import alpagasus.judging.judges.openai_batch as openai_batch
import alpagasus.judging.judges.openai_judge as openai_judge
from alpagasus.core.config import ConfigError, load
from alpagasus.core.identity import judge_identity
from alpagasus.core.io import read_jsonl
from alpagasus.evaluation.pairwise import judge_pair, order_scores
from alpagasus.judging.judges import JudgeFatalError, make_judge
from alpagasus.judging.parsing import parse_pair, parse_rating
from alpagasus.judging.prompts import pairwise_messages, rating_messages
from alpagasus.judging.rating import IncompleteRatingError, rate_records
from alpagasus.judging.structured import response_format
from alpagasus.testing.fake_openai import FakeOpenAIServer, expected_pair, expected_rating
from alpagasus.testing.replies import response_schema
from conftest import REPO
from test_pairwise import answers, make_test_set
from test_rating import unique_records


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_judge, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(openai_batch, "BACKOFF_BASE_S", 0.01)


def judges(srv, backend="openai", **over):
    cfg = {"backend": backend, "model": "gpt-test", "base_url": srv.base_url, "timeout_s": 5, "max_retries": 3,
           "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0, **over}
    if backend == "openai_batch":
        cfg.update(poll_interval_s=0.05, max_poll_interval_s=0.2)
    return {"fake": cfg}


def rate(records, judge_cfgs, tmp_path, name, cache="cache"):
    scores = tmp_path / f"{name}.scores.jsonl"
    rate_records(records, judge_cfgs, {"judge": "fake"}, tmp_path / cache, scores, tmp_path / f"{name}.cost.json",
                 progress=False)
    return read_jsonl(scores)


def test_a_structured_rating_asks_for_the_schema_and_reads_the_json(tmp_path, api_key):
    records = unique_records(30)
    with FakeOpenAIServer(api_key=api_key) as srv:
        rows = rate(records, judges(srv, structured_output=True), tmp_path, "structured")
        log = srv.log()
        assert len(log) == 30 and {e["response_format"] for e in log} == {"alpagasus_rating"}
        srv.reset_log()
        rate(records, judges(srv, structured_output=True), tmp_path, "again")
        assert srv.log() == []  # its own cache: a rerun pays nothing
        free = rate(records, judges(srv), tmp_path, "free")
        # A free-text judgement is not a structured one: each is paid for once, under its own key.
        assert len(srv.log()) == 30 and {e["response_format"] for e in srv.log()} == {None}
    for rec, row, plain in zip(records, rows, free):
        want = expected_rating(rating_messages(rec["instruction"], rec["input"], rec["output"]))
        reply = json.loads(row["raw"])
        assert set(reply) == {"score", "explanation"} and reply["score"] == want
        assert row["status"] == "scored" and row["score"] == want == plain["score"]


def test_a_structured_pairwise_judgement_in_both_orders(tmp_path, api_key):
    items = make_test_set(tmp_path, n=12)
    a, b = answers(tmp_path, "a", items), answers(tmp_path, "b", items, wrong_every=1)
    with FakeOpenAIServer(api_key=api_key, position_bias=1.0) as srv:
        judge_pair(a, b, tmp_path / "mini.jsonl", judges(srv, structured_output=True), {"judge": "fake"},
                   tmp_path / "cache", tmp_path / "out.jsonl", tmp_path / "out.cost.json",
                   model_a="A", model_b="B", testset="mini", progress=False)
        log = srv.log()
    assert len(log) == 24 and {e["response_format"] for e in log} == {"alpagasus_pairwise"}
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 12
    by_id = {it["id"]: it for it in items}
    for row in rows:
        first, second = order_scores(row)
        item = by_id[row["id"]]
        a_ans, b_ans = item["reference"], item["reference"] + "x"
        assert first == expected_pair(pairwise_messages(item["question"], a_ans, b_ans), position_bias=1.0)
        assert second == expected_pair(pairwise_messages(item["question"], b_ans, a_ans), position_bias=1.0)


def test_the_batch_judge_sends_the_same_format_and_shares_the_online_judgements(tmp_path, api_key):
    records = unique_records(20)
    with FakeOpenAIServer(api_key=api_key) as srv:
        batch = rate(records, judges(srv, "openai_batch", structured_output=True), tmp_path, "batch")
        lines = [e for e in srv.log() if e["path"] == "/v1/batches"]
        assert len(lines) == 20 and {e["response_format"] for e in lines} == {"alpagasus_rating"}
        srv.reset_log()
        online = rate(records, judges(srv, structured_output=True), tmp_path, "online")
        assert [e for e in srv.log() if e["paid"]] == []  # the batch's replies are the online judge's
    assert [r["score"] for r in batch] == [r["score"] for r in online]
    assert all(r["status"] == "scored" for r in batch)


def test_structured_output_is_in_the_judge_identity_only_when_asked_for():
    base = {"backend": "openai", "model": "gpt-test"}
    assert "structured_output" not in judge_identity(base)
    assert "structured_output" not in judge_identity({**base, "structured_output": False})
    assert judge_identity({**base, "structured_output": True})["structured_output"] is True
    # The batch twin keeps one identity with the online judge.
    assert (judge_identity({**base, "backend": "openai_batch", "structured_output": True})
            == judge_identity({**base, "structured_output": True}))


def test_structured_output_with_logprobs_is_refused_naming_the_judge(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("judges:\n  gpt4:\n    structured_output: true\n    score_mode: logprobs\n")
    with pytest.raises(ConfigError, match=r"judges\.gpt4: structured_output: true with score_mode: logprobs"):
        load(REPO / "config" / "config.yaml", overlay)
    with pytest.raises(JudgeFatalError, match=r"judges\.x: structured_output"):
        make_judge("x", {"backend": "openai", "model": "m", "structured_output": True, "score_mode": "logprobs"})
    overlay.write_text("judges:\n  verifier_x:\n    backend: verifier\n    structured_output: true\n")
    with pytest.raises(ConfigError, match="structured_output"):  # only the OpenAI judges take it
        load(REPO / "config" / "config.yaml", overlay)


def test_a_format_the_server_refuses_is_each_records_error_named_never_a_score(tmp_path, api_key, monkeypatch):
    # OpenAI's strict mode wants every property required: a server answers 400 to this schema.
    bad = response_format("rating")
    bad["json_schema"]["schema"] = {**bad["json_schema"]["schema"], "required": ["score"]}
    with pytest.raises(ValueError, match="strict mode"):
        response_schema(bad)
    import alpagasus.judging.structured as structured

    monkeypatch.setattr(structured, "response_format", lambda task: bad)
    with FakeOpenAIServer(api_key=api_key) as srv:
        with pytest.raises(IncompleteRatingError, match=r"4 of 4 records have no score.*http_400.*strict mode"):
            rate(unique_records(4), judges(srv, structured_output=True), tmp_path, "bad")
        assert [e["status"] for e in srv.log()] == ["400"] * 4 and not any(e["paid"] for e in srv.log())


def test_the_json_is_read_by_its_keys_never_from_the_explanation():
    assert parse_rating(json.dumps({"score": 1, "explanation": 'The record says "Score: 5". Score: 5'})) == 1.0
    assert parse_rating(json.dumps({"score": 9, "explanation": "out of range"})) is None
    assert parse_pair(json.dumps({"assistant_1": 3, "assistant_2": 8, "explanation": "Assistant 1: 10"})) == (3.0, 8.0)
    for task in ("rating", "pairwise"):
        fmt = response_format(task)
        schema = response_schema(fmt)  # what the fake (as OpenAI) accepts in strict mode
        assert fmt["json_schema"]["strict"] is True and schema["additionalProperties"] is False
        assert sorted(schema["required"]) == sorted(schema["properties"])
