"""The fake server's Batch API, through the official SDK: the status progression, the result
files' line format, validation (duplicate custom_ids), cancel, and its ground-truth counters."""
import json
import time

import openai
import pytest

from alpagasus.judging.prompts import rating_messages
from alpagasus.testing.fake_batches import BatchPlan
from alpagasus.testing.fake_openai import FakeOpenAIServer, rating_reply


def line(cid, messages):
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-test", "messages": messages, "max_tokens": 50}}


def upload(client, lines, name="in.jsonl"):
    data = "".join(json.dumps(item) + "\n" for item in lines).encode()
    return client.files.create(file=(name, data), purpose="batch")


def wait(client, bid, timeout=10):
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = client.batches.retrieve(bid)
        if not seen or seen[-1] != b.status:
            seen.append(b.status)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b, seen
        time.sleep(0.02)
    raise AssertionError(f"batch {bid} still {seen[-1]}")


def test_progression_and_result_lines_match_the_chat_endpoint(api_key):
    msgs = [rating_messages(f"Say {i}.", "", f"{i}") for i in range(6)]
    with FakeOpenAIServer(api_key=api_key) as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.15)
        client = openai.OpenAI(base_url=srv.base_url, api_key=api_key)
        f = upload(client, [line(f"r{i}", m) for i, m in enumerate(msgs)])
        assert [x.id for x in client.files.list(purpose="batch")] == [f.id]
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "t"})
        assert b.status == "validating" and b.request_counts.total == 6
        b, seen = wait(client, b.id)
        assert seen == ["validating", "in_progress", "finalizing", "completed"]
        assert b.request_counts.completed == 6 and b.request_counts.failed == 0 and b.error_file_id is None
        rows = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
        assert [r["custom_id"] for r in rows] == [f"r{i}" for i in range(6)]
        for r, m in zip(rows, msgs):
            assert r["error"] is None and r["response"]["status_code"] == 200
            assert r["response"]["body"]["choices"][0]["message"]["content"] == rating_reply(m)
        assert [x.metadata for x in client.batches.list()] == [{"run": "t"}]
        assert sum(1 for e in srv.log() if e["paid"] and e["path"] == "/v1/batches") == 6


def test_duplicate_custom_ids_fail_validation_and_nothing_is_paid(api_key):
    m = rating_messages("a", "", "b")
    with FakeOpenAIServer(api_key=api_key) as srv:
        srv.batch_api.plan = BatchPlan(step_s=0.05)
        client = openai.OpenAI(base_url=srv.base_url, api_key=api_key)
        f = upload(client, [line("x", m), line("x", m)])
        b, _ = wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h").id)
        assert b.status == "failed" and "duplicate custom_id 'x'" in b.errors.data[0].message
        assert b.output_file_id is None and srv.paid_counts() == {}


@pytest.mark.parametrize("plan, status, code", [(BatchPlan(step_s=0.1, expire_first=1), "expired", "batch_expired"),
                                                (BatchPlan(step_s=0.3), "cancelled", "batch_cancelled")])
def test_expired_and_cancelled_batches_list_their_unfinished_lines(api_key, plan, status, code):
    msgs = [rating_messages(f"Q{i}", "", "A") for i in range(8)]
    with FakeOpenAIServer(api_key=api_key) as srv:
        srv.batch_api.plan = plan
        client = openai.OpenAI(base_url=srv.base_url, api_key=api_key)
        f = upload(client, [line(f"r{i}", m) for i, m in enumerate(msgs)])
        bid = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
        if status == "cancelled":
            assert client.batches.cancel(bid).status == "cancelling"
        b, _ = wait(client, bid)
        assert b.status == status
        done = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()] if b.output_file_id else []
        errs = [json.loads(x) for x in client.files.content(b.error_file_id).text.splitlines()]
        assert len(done) + len(errs) == 8 and b.request_counts.completed == len(done)
        assert all(e["error"]["code"] == code and e["response"] is None for e in errs)
        if status == "expired":
            assert len(done) == 4
        with pytest.raises(openai.BadRequestError):
            client.batches.cancel(bid)  # a finished batch cannot be cancelled


def test_wrong_key_is_refused_on_the_batch_endpoints(api_key):
    with FakeOpenAIServer(api_key=api_key) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            upload(client, [line("x", [])])
        assert srv.batch_api.uploads == {}


@pytest.mark.parametrize("plan", [BatchPlan(step_s=0.05, list_files=False), BatchPlan(step_s=0.05, list_batches=False)])
def test_a_server_without_a_list_endpoint_answers_404_there_and_serves_the_rest(api_key, plan):
    with FakeOpenAIServer(api_key=api_key) as srv:
        srv.batch_api.plan = plan
        client = openai.OpenAI(base_url=srv.base_url, api_key=api_key, max_retries=0)
        f = upload(client, [line("r0", rating_messages("Q", "", "A"))])
        b, _ = wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h").id)
        assert b.status == "completed" and client.files.retrieve(f.id).filename == "in.jsonl"
        assert json.loads(client.files.content(b.output_file_id).text)["custom_id"] == "r0"
        for listed, served in ((client.files.list, plan.list_files), (client.batches.list, plan.list_batches)):
            if served:
                assert len(list(listed())) >= 1
            else:
                with pytest.raises(openai.NotFoundError, match="Invalid URL"):
                    list(listed())
        assert sorted(c["status"] for c in srv.batch_api.calls if c["method"] == "GET" and
                      c["path"] in ("/v1/files", "/v1/batches")) == [200, 404]
