"""The Batch API judge through the real openai SDK against the fake server's /v1/files and
/v1/batches: the same scores as the online judge at half the price, expiry, failed batches and
error lines resent, lost answers never repeated, the budget, pairwise judging, the CLI."""
import json
import sqlite3
from collections import Counter

import pytest
from test_rating import unique_records

import alpagasus.judging.judges.openai_batch as openai_batch
from alpagasus.judging.judges.batch_journal import BatchJournal, split_lines
from alpagasus.core.io import read_jsonl
from alpagasus.evaluation.pairwise import judge_pair
from alpagasus.judging.rating import IncompleteRatingError, estimate_rating, rate_records
from alpagasus.testing.fake_batches import BatchPlan
from alpagasus.testing.fake_openai import FakeOpenAIServer, expected_rating


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_batch, "BACKOFF_BASE_S", 0.01)


def judge(server, backend="openai_batch", **over):
    cfg = {"backend": backend, "model": "gpt-test", "base_url": server.base_url, "api_key_env": "OPENAI_API_KEY",
           "temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "timeout_s": 5, "max_retries": 3,
           "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0}
    if backend == "openai_batch":
        cfg.update(poll_interval_s=0.05, max_poll_interval_s=0.2)
    else:
        cfg.update(concurrency=8)
    cfg.update(over)
    return {"fake": cfg}


def rate(records, judges, tmp_path, cache="cache", name="run", **rating):
    scores, ledger = tmp_path / f"{name}.scores.jsonl", tmp_path / f"{name}.cost.json"
    out = rate_records(records, judges, {"judge": "fake", **rating}, tmp_path / cache, scores, ledger, progress=False)
    return out, read_jsonl(scores)


def batch_paid(srv) -> Counter:
    return Counter(e["key"] for e in srv.log() if e["paid"] and e["path"] == "/v1/batches")


def expected(rec):
    from alpagasus.judging.prompts import rating_messages

    return expected_rating(rating_messages(rec["instruction"], rec["input"], rec["output"]))


def test_50001_requests_make_two_files_and_bytes_split_too():
    lines = [(f"k{i}", b"x" * 10 + b"\n") for i in range(50_001)]
    groups = split_lines(lines)
    assert [len(g) for g in groups] == [50_000, 1]
    assert [cid for g in groups for cid, _ in g] == [cid for cid, _ in lines]  # order kept, none lost or doubled
    groups = split_lines([(f"k{i}", b"y" * 99 + b"\n") for i in range(25)], max_bytes=1000)
    assert [len(g) for g in groups] == [10, 10, 5] and all(sum(len(l) for _, l in g) <= 1000 for g in groups)
    with pytest.raises(ValueError, match="request big: 2001 bytes"):
        split_lines([("big", b"z" * 2001)], max_bytes=1000)


def test_batch_scores_equal_online_at_half_price_each_line_paid_once(tmp_path, api_key):
    records = unique_records(40)
    with FakeOpenAIServer(api_key=api_key) as srv:
        online, online_rows = rate(records, judge(srv, "openai"), tmp_path, cache="c_online", name="online")
        batch, batch_rows = rate(records, judge(srv), tmp_path, cache="c_batch", name="batch")
        assert max(batch_paid(srv).values()) == 1 and sum(batch_paid(srv).values()) == 40
        assert srv.batch_api.created == 1 and list(srv.batch_api.uploads.values()) == [1]
    assert batch_rows == online_rows
    assert [r["score"] for r in batch_rows] == [expected(r) for r in records]
    assert batch["usd_this_run"] == pytest.approx(online["usd_this_run"] / 2, rel=1e-3)
    assert batch["estimate_before_run"]["usd_expected"] == pytest.approx(online["estimate_before_run"]["usd_expected"] / 2, abs=1e-4)
    assert batch["requests_sent"] == 40


def test_a_judgement_made_by_either_backend_is_reused_by_the_other(tmp_path, api_key):
    records = unique_records(20)
    with FakeOpenAIServer() as srv:
        rate(records[:10], judge(srv, "openai"), tmp_path)
        ledger, rows = rate(records, judge(srv), tmp_path)
        assert ledger["judgements_reused_from_cache"] == 10 and ledger["judgements_paid_this_run"] == 10
        srv.reset_log()
        ledger, _ = rate(records, judge(srv, "openai"), tmp_path)
        assert srv.log() == [] and ledger["judgements_reused_from_cache"] == 20
    assert [r["score"] for r in rows] == [expected(r) for r in records]


@pytest.mark.parametrize("plan, batches", [(BatchPlan(step_s=0.1, expire_first=1), 2),
                                           (BatchPlan(step_s=0.1, fail_first=1), 2)])
def test_expired_or_failed_batch_has_its_unfinished_requests_resubmitted(tmp_path, api_key, plan, batches):
    records = unique_records(30)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = plan
        ledger, rows = rate(records, judge(srv), tmp_path)
        objs = srv.batch_api.batch_objects()
    assert srv.batch_api.created == batches
    first = objs[0]
    assert first["status"] in ("expired", "failed")
    if first["status"] == "expired":  # half done: only the other half is sent again
        assert first["request_counts"]["completed"] == 15 and objs[1]["request_counts"]["total"] == 15
    else:
        assert objs[1]["request_counts"]["total"] == 30
    assert max(batch_paid(srv).values()) == 1 and sum(batch_paid(srv).values()) == 30
    assert [r["score"] for r in rows] == [expected(r) for r in records]
    assert ledger["failed_requests_by_kind"][f"batch_{first['status']}"] == 1


def test_error_lines_are_retried_in_new_batches_up_to_max_retries(tmp_path, api_key):
    records = unique_records(40)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05, line_error_500=0.3)
        ledger, rows = rate(records, judge(srv, max_retries=8), tmp_path)
        errors = [e for e in srv.log() if e["status"] == "500"]
        assert errors and srv.batch_api.created >= 2
        assert max(batch_paid(srv).values()) == 1 and sum(batch_paid(srv).values()) == 40
        assert ledger["failed_requests_by_kind"]["line_server_error"] == len(errors)
    assert [r["score"] for r in rows] == [expected(r) for r in records]
    # Every line fails: one batch and max_retries resends, then the records are left unscored.
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05, line_error_500=1.0)
        with pytest.raises(IncompleteRatingError, match="5 of 5 records have no score"):
            rate(records[:5], judge(srv, max_retries=1), tmp_path, cache="c2", name="fail")
        assert srv.batch_api.created == 2
    ledger = json.loads((tmp_path / "fail.cost.json").read_text())
    assert ledger["status_counts"]["failed"] == 5


@pytest.mark.parametrize("list_files", [True, False])
def test_lost_answers_to_upload_and_create_are_not_repeated(tmp_path, api_key, list_files):
    records = unique_records(12)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05, upload_drop_first=1, create_drop_first=1, http_500_first=2,
                                       list_files=list_files)
        ledger, rows = rate(records, judge(srv), tmp_path)
        # The dropped upload was found by name; on a server that cannot list files it is
        # uploaded again (free: the first copy is never used).
        assert list(srv.batch_api.uploads.values()) == [1 if list_files else 2]
        assert srv.batch_api.created == 1                   # the dropped creation by its metadata
        assert max(batch_paid(srv).values()) == 1 and len(batch_paid(srv)) == 12
    assert [r["score"] for r in rows] == [expected(r) for r in records]
    assert ledger["failed_requests_by_kind"].get("api_files_list_unavailable", 0) == (0 if list_files else 1)


def test_an_upload_cut_short_resumes_on_a_server_that_cannot_list_files(tmp_path, api_key, caplog):
    """A run stopped between "uploading" and "uploaded" (its answer lost; a kill does the same)
    left a file on the server it cannot find again without GET /v1/files: every rerun used to
    stop at that look-up (HTTP 404). It uploads again instead, and finishes."""
    records = unique_records(12)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05, upload_drop_first=1, list_files=False)
        with pytest.raises(IncompleteRatingError, match="resumed by the next run"):
            rate(records, judge(srv, api_retries=0), tmp_path, name="cut")
        (chunk,) = BatchJournal(tmp_path / "cache").load().values()
        assert chunk.upload_started and chunk.file_id is None and srv.batch_api.uploads[chunk.filename] == 1
        for attempt in ("again", "once more"):  # the fallback is not a one-off
            srv.batch_api.plan = BatchPlan(step_s=0.05, list_files=False)
            with caplog.at_level("WARNING"):
                ledger, rows = rate(records, judge(srv), tmp_path, name=attempt)
            if attempt == "again":
                assert srv.batch_api.uploads[chunk.filename] == 2 and srv.batch_api.created == 1
                assert ledger["judgements_paid_this_run"] == 12
                assert [r["score"] for r in rows] == [expected(r) for r in records]
            else:
                assert ledger["judgements_reused_from_cache"] == 12
        lookups = [c["status"] for c in srv.batch_api.calls if c["method"] == "GET" and c["path"] == "/v1/files"]
        assert lookups == [404]  # asked once, then uploaded again
        assert max(batch_paid(srv).values()) == 1 and len(batch_paid(srv)) == 12
    assert "cannot list its files (HTTP 404)" in caplog.text and chunk.filename in caplog.text


def test_a_lost_creation_found_already_finished_is_read_not_sent_again(tmp_path, api_key):
    # The batch whose creation's answer was lost has finished by the time it is looked up (as
    # after a kill during creation and a rerun hours later): its results are read, not resent.
    records = unique_records(8)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.001, create_drop_first=1)
        ledger, rows = rate(records, judge(srv), tmp_path)
        assert srv.batch_api.created == 1 and max(batch_paid(srv).values()) == 1
    assert [r["score"] for r in rows] == [expected(r) for r in records]
    assert ledger["judgements_paid_this_run"] == 8


def test_a_lost_creation_on_a_server_that_cannot_list_batches_is_made_again_and_said(tmp_path, api_key, caplog):
    """Without GET /v1/batches a creation whose answer was lost cannot be found: the run creates
    the batch again rather than stick, and says that the first may be paid for as well."""
    records = unique_records(6)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05, create_drop_first=1, list_batches=False)
        with caplog.at_level("WARNING"):
            ledger, rows = rate(records, judge(srv), tmp_path)
        assert srv.batch_api.created == 2 and list(srv.batch_api.uploads.values()) == [1]
        assert ledger["judgements_paid_this_run"] == 6  # read from one batch; the server ran both
        assert ledger["failed_requests_by_kind"]["api_batches_list_unavailable"] == 1
    assert [r["score"] for r in rows] == [expected(r) for r in records]
    assert "cannot list its batches (HTTP 404)" in caplog.text and "paid for as well" in caplog.text


def test_budget_gates_what_is_submitted(tmp_path, api_key):
    records = unique_records(30)
    with FakeOpenAIServer() as srv:
        judges = judge(srv, usd_per_1m_input_tokens=10_000.0, usd_per_1m_output_tokens=10_000.0)
        worst = (130 + 256) * 10_000 / 1e6 * 0.5  # about one request's worst case at the batch price
        with pytest.raises(IncompleteRatingError, match="over budget"):
            rate(records, judges, tmp_path, max_usd=10 * worst)
        ledger = json.loads((tmp_path / "run.cost.json").read_text())
        submitted = sum(b["request_counts"]["total"] for b in srv.batch_api.batch_objects())
        assert 0 < submitted < 30 and ledger["status_counts"]["budget"] == 30 - submitted
        assert ledger["usd_this_run"] <= 10 * worst
        ledger, _ = rate(records, judges, tmp_path, max_usd=None)
        assert ledger["judgements_paid_this_run"] == 30 - submitted
        assert max(batch_paid(srv).values()) == 1


def test_estimate_shows_online_and_batch_cost(tmp_path, api_key):
    records = unique_records(20)
    with FakeOpenAIServer() as srv:
        for backend in ("openai", "openai_batch"):
            est = estimate_rating(records, judge(srv, backend), {"judge": "fake"}, tmp_path / "cache", tmp_path / "e.json")
            both = est["usd_by_backend"]
            assert both["batch"]["usd_expected"] == pytest.approx(both["online"]["usd_expected"] / 2, abs=1e-4)
            own = both["batch" if backend == "openai_batch" else "online"]
            assert est["usd_expected"] == own["usd_expected"]
        assert srv.log() == [] and srv.batch_api.calls == []


def test_pairwise_through_a_batch_judge_gives_the_online_table(tmp_path, api_key):
    from test_pairwise import answers, make_test_set

    items = make_test_set(tmp_path)
    a, b = answers(tmp_path, "a", items), answers(tmp_path, "b", items, wrong_every=2)
    out = {}
    with FakeOpenAIServer(position_bias=1.0) as srv:
        for backend in ("openai", "openai_batch"):
            judge_pair(a, b, tmp_path / "mini.jsonl", judge(srv, backend), {"judge": "fake"}, tmp_path / backend,
                       tmp_path / f"{backend}.jsonl", tmp_path / f"{backend}.cost.json", model_a="A", model_b="B",
                       testset="mini", progress=False)
            out[backend] = read_jsonl(tmp_path / f"{backend}.jsonl")
        assert srv.batch_api.created == 1
    assert out["openai_batch"] == out["openai"]
    from alpagasus.evaluation.winrate import table_rows

    tables = {backend: table_rows([{"model_a": "A", "model_b": "B", "test_set": "mini",
                                    "path": tmp_path / f"{backend}.jsonl"}], "fake") for backend in out}
    assert tables["openai_batch"] == tables["openai"] and tables["openai"][0]["n"] == len(items)


def test_batches_command_lists_and_cancels(tmp_path, api_key, capsys):
    from alpagasus.core.cli import main

    records = unique_records(8)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05, expire_first=1)
        rate(records, judge(srv), tmp_path)
        assert main(["batches", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["status"], r["requests"], r["results_read"]) for r in rows] == [("expired", 8, True), ("completed", 4, True)]
        # An unfinished batch (planned by hand here, as a killed run leaves it) is cancelled.
        srv.batch_api.plan = BatchPlan(step_s=30)
        journal = BatchJournal(tmp_path / "cache")
        (chunk,) = journal.plan([[("k1", b"{}\n")]], model="gpt-test", base_url=srv.base_url, api_key_env="OPENAI_API_KEY")
        import openai

        client = openai.OpenAI(base_url=srv.base_url, api_key=api_key)
        fid = client.files.create(file=("x.jsonl", b'{"custom_id":"k1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}\n'), purpose="batch").id
        bid = client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h").id
        journal.append("uploaded", chunk.id, file_id=fid)
        journal.append("created", chunk.id, batch_id=bid)
        assert main(["batches", "--cache-dir", str(tmp_path / "cache"), "--cancel"]) == 0
        text = capsys.readouterr().out
        assert bid in text and "cancelling" in text and "cancel requested for 1 batch" in text
        assert client.batches.retrieve(bid).status == "cancelling"


def test_requests_over_the_per_file_limit_go_to_several_batches(tmp_path, api_key):
    records = unique_records(15)
    with FakeOpenAIServer() as srv:
        _, rows = rate(records, judge(srv, max_requests_per_file=7), tmp_path)
        sizes = sorted(b["request_counts"]["total"] for b in srv.batch_api.batch_objects())
        assert sizes == [1, 7, 7] and len(srv.batch_api.uploads) == 3
        assert max(batch_paid(srv).values()) == 1
    assert [r["score"] for r in rows] == [expected(r) for r in records]
    # Uploaded input files are not kept; the journal is.
    assert [p.name for p in (tmp_path / "cache/batches").glob("input-*")] == []


def test_wrong_key_stops_before_anything_is_uploaded_and_is_not_leaked(tmp_path, api_key):
    with FakeOpenAIServer(api_key="sk-the-right-one") as srv:
        with pytest.raises(IncompleteRatingError, match="401") as info:
            rate(unique_records(3), judge(srv), tmp_path)
        assert srv.batch_api.uploads == {} and srv.batch_api.created == 0
    assert api_key not in str(info.value)
    # The planned chunk is journaled; with the right key the rerun resumes it, not a new one.
    chunks = BatchJournal(tmp_path / "cache").load()
    assert len(chunks) == 1 and next(iter(chunks.values())).file_id is None


def test_replies_paid_but_missing_from_the_cache_are_read_again_not_paid_again(tmp_path, api_key):
    # A run killed between the server's answer and the cache write, or a cache restored from an
    # older copy: the journal knows which batch answered, so its output file is read again.
    records = unique_records(10)
    with FakeOpenAIServer() as srv:
        _, first = rate(records, judge(srv), tmp_path)
        with sqlite3.connect(tmp_path / "cache/judgements.sqlite") as con:  # all but the first 4 lost
            con.execute("DELETE FROM judgements WHERE key NOT IN (SELECT key FROM judgements ORDER BY key LIMIT 4)")
        ledger, rows = rate(records, judge(srv), tmp_path, name="again")
        assert srv.batch_api.created == 1 and max(batch_paid(srv).values()) == 1
    assert rows == first and ledger["judgements_reused_from_cache"] == 4


def test_two_runs_sharing_a_cache_dir_never_drive_one_batch_twice(tmp_path, api_key):
    # Rating and judging jobs share cache_dir; here two ratings with overlapping records run at
    # once. A chunk is driven by the run that holds its lock; the other waits for its results.
    import threading

    records = unique_records(30)
    results, errors = {}, []
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.3)

        def one(name, recs):
            try:
                results[name] = rate(recs, judge(srv), tmp_path, name=name)[1]
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=("a", records[:20])),
                   threading.Thread(target=one, args=("b", records[10:]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert max(batch_paid(srv).values()) == 1 and sum(batch_paid(srv).values()) == 30
        assert max(srv.batch_api.uploads.values()) == 1
    assert [r["score"] for r in results["a"]] == [expected(r) for r in records[:20]]
    assert [r["score"] for r in results["b"]] == [expected(r) for r in records[10:]]


def test_a_batch_cancelled_while_the_run_waits_stops_it_and_the_rerun_resends(tmp_path, api_key):
    import threading
    import time

    import openai

    records = unique_records(10)
    with FakeOpenAIServer() as srv:
        srv.batch_api.plan = BatchPlan(step_s=1.0)
        raised = []

        def run():
            try:
                rate(records, judge(srv), tmp_path)
            except IncompleteRatingError as exc:
                raised.append(exc)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 20
        while srv.batch_api.created == 0 and time.time() < deadline:
            time.sleep(0.02)
        (bid,) = [b["id"] for b in srv.batch_api.batch_objects()]
        openai.OpenAI(base_url=srv.base_url, api_key=api_key).batches.cancel(bid)
        t.join(timeout=30)
        assert raised and "no score yet" in str(raised[0])
        assert srv.batch_api.created == 1  # the cancel was obeyed, nothing resent
        ledger = json.loads((tmp_path / "run.cost.json").read_text())
        assert ledger["failed_requests_by_kind"]["batch_cancelled"] == 1
        srv.batch_api.plan = BatchPlan(step_s=0.05)
        _, rows = rate(records, judge(srv), tmp_path)
        assert srv.batch_api.created == 2 and max(batch_paid(srv).values()) == 1
    assert [r["score"] for r in rows] == [expected(r) for r in records]


def test_a_request_larger_than_a_batch_file_is_reported_the_rest_rated(tmp_path, api_key):
    records = unique_records(6)
    records[2] = {"instruction": "Summarise.", "input": "", "output": "word " * 1000}
    with FakeOpenAIServer() as srv:
        _, rows = rate(records, judge(srv, max_bytes_per_file=4096), tmp_path, allow_incomplete=True)
        assert sum(b["request_counts"]["total"] for b in srv.batch_api.batch_objects()) == 5
    assert [r["status"] for r in rows] == ["scored", "scored", "failed", "scored", "scored", "scored"]
    assert "bytes of a batch file" in rows[2]["error"]
