"""Rating through the real openai SDK against the fake server: faults, budget, cache, secrets."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, stored_count

import alpagasus.judging.judges.openai_judge as openai_judge
from alpagasus.core.io import read_jsonl
from alpagasus.data.miniature import make_records
from alpagasus.judging.rating import IncompleteRatingError, estimate_rating, rate_records
from alpagasus.testing.fake_openai import FakeOpenAIServer, FaultPlan, expected_rating


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_judge, "BACKOFF_BASE_S", 0.01)


def judge_cfg(server, **over):
    cfg = {"backend": "openai", "model": "gpt-test", "base_url": server.base_url,
           "api_key_env": "OPENAI_API_KEY", "temperature": 0.0, "top_p": 1.0, "max_tokens": 256,
           "concurrency": 8, "timeout_s": 0.5, "max_retries": 8,
           "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0}
    cfg.update(over)
    return {"fake": cfg}


def rate(records, server, tmp_path, rating=None, judge=None, name="run", **kw):
    rating = {"judge": "fake", "dimension": "accuracy", "max_usd": None, **(rating or {})}
    scores, ledger = tmp_path / f"{name}.scores.jsonl", tmp_path / f"{name}.cost.json"
    out = rate_records(records, judge or judge_cfg(server), rating, tmp_path / "cache", scores, ledger,
                       progress=False, **kw)
    return out, scores


def unique_records(n, seed=0):
    recs, seen = [], set()
    for r in make_records(4 * n, 0.3, seed):
        k = (r["instruction"], r["input"], r["output"])
        if k not in seen:
            seen.add(k)
            recs.append(r)
    return recs[:n]


def test_every_record_scored_or_flagged_none_lost_none_paid_twice(tmp_path, api_key):
    records = unique_records(120)
    faults = FaultPlan(rate_429=0.1, error_500=0.05, error_503=0.05, hang=0.03, no_score=0.05,
                       drop=0.05, retry_after_s=0.05)
    with FakeOpenAIServer(faults=faults, api_key=api_key, latency_s=0.01) as srv:
        ledger, scores = rate(records, srv, tmp_path)
        log = srv.log()
        paid = srv.paid_counts()
    rows = read_jsonl(scores)
    assert [r["index"] for r in rows] == list(range(len(records)))
    status = Counter(r["status"] for r in rows)
    assert status["scored"] + status["unparsed"] == len(records), status
    assert status["unparsed"] > 0  # the no_score fault happened and was flagged, not zeroed
    for r, rec in zip(rows, records):
        if r["status"] == "scored":
            assert r["score"] == expected_rating_for(rec)
        else:
            assert r["score"] is None and r["raw"] and not any(c.isdigit() for c in r["raw"])
    # Every fault kind really happened, and nothing was paid twice.
    kinds = Counter(e["status"] for e in log)
    assert {"429", "500", "503", "hang", "drop", "no_score", "ok"} <= set(kinds), kinds
    assert max(paid.values()) == 1 and sum(paid.values()) == len(records)
    assert ledger["status_counts"]["unparsed"] == status["unparsed"]
    assert ledger["requests_sent"] == len(log)


def expected_rating_for(rec):
    from alpagasus.judging.prompts import rating_messages

    return expected_rating(rating_messages(rec["instruction"], rec["input"], rec["output"]))


def test_rerun_sends_nothing_and_threshold_free(tmp_path, api_key):
    records = unique_records(30)
    with FakeOpenAIServer() as srv:
        rate(records, srv, tmp_path, name="a")
        srv.reset_log()
        ledger, _ = rate(records, srv, tmp_path, name="b")
        assert srv.log() == []
    assert ledger["judgements_reused_from_cache"] == 30 and ledger["judgements_paid_this_run"] == 0
    assert (tmp_path / "a.scores.jsonl").read_text() == (tmp_path / "b.scores.jsonl").read_text()


def test_duplicates_judged_once_and_flagged(tmp_path, api_key):
    base = unique_records(5)
    records = base + [dict(base[1]), dict(base[3]), dict(base[1])]
    with FakeOpenAIServer() as srv:
        ledger, scores = rate(records, srv, tmp_path)
        assert len(srv.log()) == 5
    rows = read_jsonl(scores)
    assert [r["flags"] for r in rows[5:]] == [["duplicate_of_1"], ["duplicate_of_3"], ["duplicate_of_1"]]
    assert rows[5]["score"] == rows[1]["score"]
    assert ledger["estimate_before_run"]["duplicates_in_input"] == 3


def test_huge_field_is_truncated_and_flagged_never_sent_whole(tmp_path, api_key):
    records = unique_records(3)
    records[1] = {"instruction": "Summarise.", "input": "", "output": "word " * 2_000_000}  # 10 MB
    with FakeOpenAIServer() as srv:
        _, scores = rate(records, srv, tmp_path, max_field_chars=5000)
    rows = read_jsonl(scores)
    assert rows[1]["flags"] == ["truncated_output"] and rows[1]["status"] == "scored"
    assert rows[1]["usage"]["prompt_tokens"] < 2000  # about 5,000 characters, not 10 MB
    assert rows[0]["flags"] == [] and rows[2]["flags"] == []


def test_retries_run_out_leave_record_unscored_then_rerun_completes(tmp_path, api_key):
    records = unique_records(6)
    for r in (records[1], records[4]):
        r["instruction"] += " [flaky]"
    with FakeOpenAIServer(faults=FaultPlan(schedule=["500"] * 40)) as srv:
        judge = judge_cfg(srv, max_retries=1, concurrency=1)
        with pytest.raises(IncompleteRatingError, match="have no score yet"):
            rate(records, srv, tmp_path, judge=judge)
        assert not (tmp_path / "run.scores.jsonl").exists()  # no partial output pretending to be whole
        ledger = json.loads((tmp_path / "run.cost.json").read_text())
        assert ledger["status_counts"]["failed"] == 6 and ledger["failed_requests_by_kind"] == {"http_500": 12}
        # allow_incomplete: the file is written, failures are null with a status, never 0.
        srv.faults = FaultPlan(by_content={"[flaky]": "500"})  # two records, every attempt
        srv.reset()
        _, scores = rate(records, srv, tmp_path, judge=judge, rating={"allow_incomplete": True})
        rows = read_jsonl(scores)
        assert [r["status"] for r in rows] == ["scored", "failed", "scored", "scored", "failed", "scored"]
        assert all(r["score"] is None for r in rows if r["status"] == "failed")
        srv.faults = None
        srv.reset_log()
        rate(records, srv, tmp_path, judge=judge)
        assert len(srv.log()) == 2  # only the two that were never answered


def test_retry_after_is_honoured(tmp_path, api_key):
    records = unique_records(1)
    with FakeOpenAIServer(faults=FaultPlan(schedule=["429", "429"], retry_after_s=0.4)) as srv:
        rate(records, srv, tmp_path, judge=judge_cfg(srv, concurrency=1))
        t = [e["t"] for e in srv.log()]
    assert len(t) == 3 and t[1] - t[0] >= 0.35 and t[2] - t[1] >= 0.35


def test_budget_stops_cleanly_and_rerun_pays_only_the_rest(tmp_path, api_key):
    records = unique_records(40)
    with FakeOpenAIServer() as srv:
        judge = judge_cfg(srv, concurrency=2, usd_per_1m_input_tokens=10_000.0, usd_per_1m_output_tokens=10_000.0)
        worst = (130 + 256) * 10_000 / 1e6  # about one request's worst case
        with pytest.raises(IncompleteRatingError, match="over budget"):
            rate(records, srv, tmp_path, judge=judge, rating={"max_usd": 10 * worst})
        ledger = json.loads((tmp_path / "run.cost.json").read_text())
        assert ledger["usd_this_run"] <= 10 * worst
        first = ledger["judgements_paid_this_run"]
        assert 0 < first < 40 and ledger["status_counts"]["budget"] == 40 - first
        srv.reset_log()
        rate(records, srv, tmp_path, judge=judge, rating={"max_usd": None})
        assert len(srv.log()) == 40 - first
        assert max(srv.paid_counts().values()) == 1


def test_wrong_key_stops_the_run_without_leaking_it(tmp_path, api_key):
    with FakeOpenAIServer(api_key="sk-the-right-one") as srv:
        with pytest.raises(IncompleteRatingError, match="401") as info:
            rate(unique_records(5), srv, tmp_path)
    assert api_key not in str(info.value)


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAIServer() as srv:
        with pytest.raises(IncompleteRatingError, match="OPENAI_API_KEY is not set"):
            rate(unique_records(2), srv, tmp_path)
        assert srv.log() == []


def test_estimate_before_and_after(tmp_path, api_key):
    records = unique_records(20)
    with FakeOpenAIServer() as srv:
        judges = judge_cfg(srv)
        rating = {"judge": "fake", "expected_output_tokens": 50}
        est = estimate_rating(records, judges, rating, tmp_path / "cache", tmp_path / "est.json")
        assert srv.log() == []  # estimating sends nothing
        assert est["requests"] == 20 and est["usd_at_most"] > est["usd_expected"] > 0
        # gpt-test has no known tokenizer: bounded by bytes, and the file says so
        assert json.loads((tmp_path / "est.json").read_text())["token_count"] == "utf8_bytes"
        rate(records[:15], srv, tmp_path)
        est = estimate_rating(records, judges, rating, tmp_path / "cache", tmp_path / "est.json")
        assert est["requests"] == 5 and est["cached"] == 15


def _cache_lines(cache_dir: Path) -> int:
    return stored_count(cache_dir)


@pytest.mark.slow
def test_kill_dash_9_mid_run_then_rerun_equals_uninterrupted(tmp_path, api_key):
    records = unique_records(150)
    rec_path = tmp_path / "records.json"
    rec_path.write_text(json.dumps(records))
    with FakeOpenAIServer(latency_s=0.05) as srv:
        def config(name):
            cfg = {"results_dir": str(tmp_path / name), "cache_dir": str(tmp_path / name / "cache"),
                   "data": {"source": "local"}, "judges": judge_cfg(srv, concurrency=4, timeout_s=5),
                   "rating": {"judge": "fake"}, "selection": {"method": "threshold", "threshold": 4.5}}
            p = tmp_path / f"{name}.yaml"
            p.write_text(yaml.safe_dump(cfg))
            return p

        def cmd(name):
            return [sys.executable, "-m", "alpagasus", "rate", "--config", str(config(name)),
                    "--records", str(rec_path), "--out", str(tmp_path / name / "scores.jsonl"), "--no-progress"]

        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        # Uninterrupted reference run.
        subprocess.run(cmd("ref"), env=env, check=True, capture_output=True)
        srv.reset_log()
        cache = tmp_path / "killed" / "cache"
        proc = subprocess.Popen(cmd("killed"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while _cache_lines(cache) < 40 and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before_kill = len(srv.log())
        cached = _cache_lines(cache)
        assert 40 <= cached < 150, "the kill must land mid-run"
        srv.reset_log()
        subprocess.run(cmd("killed"), env=env, check=True, capture_output=True)
        rerun = srv.log()
    # The rerun asked only for what was not cached (the torn line, if any, is redone).
    # (distinct keys: on a loaded machine a request may time out and be retried)
    asked = {e["key"] for e in rerun}
    assert 150 - cached <= len(asked) <= 150 - cached + 1
    assert before_kill - cached <= 4 + 1  # at most the requests in flight were lost
    assert (tmp_path / "killed" / "scores.jsonl").read_text() == (tmp_path / "ref" / "scores.jsonl").read_text()


@pytest.mark.slow
def test_sigterm_mid_run_awaits_the_requests_in_flight_and_keeps_every_paid_reply(tmp_path, api_key):
    """scancel, a preemption or a time limit sends SIGTERM: the rating sends nothing more, awaits
    what is in flight (each reply cached), and stops with one line; the rerun pays only for the rest."""
    records = unique_records(150)
    rec_path = tmp_path / "records.json"
    rec_path.write_text(json.dumps(records))
    with FakeOpenAIServer(latency_s=0.3) as srv:
        cfg = {"results_dir": str(tmp_path / "r"), "cache_dir": str(tmp_path / "r" / "cache"),
               "data": {"source": "local"}, "judges": judge_cfg(srv, concurrency=8, timeout_s=10),
               "rating": {"judge": "fake"}, "selection": {"method": "threshold", "threshold": 4.5}}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "alpagasus", "rate", "--config", str(tmp_path / "c.yaml"),
               "--records", str(rec_path), "--out", str(tmp_path / "r" / "scores.jsonl"), "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        cache = tmp_path / "r" / "cache"
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while _cache_lines(cache) < 20 and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        paid = srv.paid_counts()
        assert proc.returncode != 0 and "stopped by SIGTERM" in err, err[-2000:]
        assert len(paid) < 150, "the signal must land mid-run"
        assert _cache_lines(cache) == len(paid)  # every reply paid for was kept, the in-flight ones too
        srv.reset_log()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        assert {e["key"] for e in srv.log() if e["paid"]}.isdisjoint(paid)  # nothing paid twice
        assert len(srv.paid_counts()) == 150 - len(paid)
