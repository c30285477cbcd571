"""The fake judge server, exercised through the real ``openai`` SDK over real HTTP.

These tests pin down what the rest of the suite relies on: replies the tests can predict,
faults that surface as the SDK exceptions production code will see, and a request log that is
a trustworthy record of what was paid for.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from alpagasus.judging.prompts import pairwise_messages, rating_messages
from alpagasus.testing.fake_openai import (NO_SCORE_REPLY, OTHER_REPLY, FakeOpenAIServer, FaultPlan, answer_score, expected_pair, expected_rating, request_key)

pytestmark = pytest.mark.timeout(60)

MODEL = "gpt-4-fake"
NUM = r"(\d+(?:\.\d+)?)"


def _client(srv: FakeOpenAIServer, timeout: float = 5.0, api_key: str = "test-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=api_key, max_retries=0, timeout=timeout)


def _ask(client: openai.OpenAI, messages: list[dict]) -> str:
    r = client.chat.completions.create(model=MODEL, messages=messages, temperature=0.0, max_tokens=64)
    assert r.choices[0].finish_reason == "stop"
    assert r.model == MODEL
    return r.choices[0].message.content


def _records(n: int) -> list[list[dict]]:
    return [rating_messages(f"Instruction number {i}", "" if i % 3 else f"input {i}", f"output {i}") for i in range(n)]


def _rating_of(text: str) -> float:
    """A deliberately small parser: the first number in the first line."""
    m = re.search(NUM, text.split("\n", 1)[0])
    assert m, f"no score in {text!r}"
    return float(m.group(1))


def _pair_of(text: str) -> tuple[float, float]:
    m = re.match(rf"Assistant 1:\s*{NUM}\nAssistant 2:\s*{NUM}", text) or re.match(rf"{NUM}[ ,]+{NUM}\n", text)
    assert m, f"no pair of scores in {text!r}"
    return float(m.group(1)), float(m.group(2))


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


# --- replies ----------------------------------------------------------------------------------


def test_rating_replies_carry_the_expected_score_in_varied_shapes(server):
    client = _client(server)
    shapes, scores = set(), set()
    for msgs in _records(40):
        text = _ask(client, msgs)
        assert _rating_of(text) == expected_rating(msgs)
        head, expl = text.split("\n", 1)
        assert not re.search(r"\d", expl), "explanations must not hold digits"
        shapes.add(re.sub(NUM, "N", head))
        scores.add(expected_rating(msgs))
    # The point of varied shapes and scores is to exercise parsers and thresholds.
    assert shapes == {"N", "Score: N", "Score:N", "N/N", "**N**", "Rating: N out of N"}
    assert len(scores) >= 4
    log = server.log()
    assert [e["kind"] for e in log] == ["rating"] * 40
    assert all(e["status"] == "ok" and e["paid"] for e in log)


def test_replies_are_deterministic_and_usage_is_counted():
    msgs = _records(1)[0]
    with FakeOpenAIServer() as a, FakeOpenAIServer(seed=7) as b:
        ca = _client(a)
        r1 = ca.chat.completions.create(model=MODEL, messages=msgs)
        r2 = ca.chat.completions.create(model=MODEL, messages=msgs)
        r3 = _client(b).chat.completions.create(model=MODEL, messages=msgs)
    assert r1.choices[0].message.content == r2.choices[0].message.content == r3.choices[0].message.content
    text = r1.choices[0].message.content
    prompt_len = sum(len(m["content"]) for m in msgs)
    assert r1.usage.prompt_tokens == math.ceil(prompt_len / 4)
    assert r1.usage.completion_tokens == math.ceil(len(text) / 4)
    assert r1.usage.total_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens
    assert r1.id != r2.id


def test_pairwise_scores_depend_on_the_answer_not_its_position(server):
    client = _client(server)
    seen_shapes = set()
    for i in range(12):
        q, a, b = f"Question {i}?", f"Answer alpha {i}", f"Answer beta {i}"
        ab, ba = pairwise_messages(q, a, b), pairwise_messages(q, b, a)
        text_ab, text_ba = _ask(client, ab), _ask(client, ba)
        assert _pair_of(text_ab) == expected_pair(ab) == (answer_score(q, a), answer_score(q, b))
        assert _pair_of(text_ba) == expected_pair(ba) == (answer_score(q, b), answer_score(q, a))
        assert not re.search(r"\d", text_ab.split("\n")[-1])
        seen_shapes.add(re.sub(NUM, "N", text_ab.split("\n")[0]))
    assert seen_shapes == {"N N", "N, N", "Assistant N: N"}
    assert all(1 <= answer_score(f"q{i}", "a") <= 10 for i in range(50))
    assert {e["kind"] for e in server.log()} == {"pairwise"}


def test_position_bias_raises_assistant_one_only():
    msgs = [pairwise_messages(f"Q{i}", f"first {i}", f"second {i}") for i in range(10)]
    with FakeOpenAIServer(position_bias=2.0) as srv:
        client = _client(srv)
        shifted = 0
        for m in msgs:
            s1, s2 = _pair_of(_ask(client, m))
            base1, base2 = expected_pair(m)
            assert (s1, s2) == expected_pair(m, position_bias=2.0)
            assert s2 == base2
            assert s1 == min(10.0, base1 + 2.0)
            shifted += s1 > base1
    assert shifted >= 5


def test_other_prompts_get_a_fixed_reply(server):
    text = _ask(_client(server), [{"role": "user", "content": "Hello there"}])
    assert text == OTHER_REPLY
    assert server.log()[0]["kind"] == "other"


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, exc, status",
    [
        ("429", openai.RateLimitError, 429),
        ("500", openai.InternalServerError, 500),
        ("503", openai.InternalServerError, 503),
    ],
)
def test_http_error_faults_raise_the_sdk_exception(kind, exc, status):
    msgs = _records(1)[0]
    with FakeOpenAIServer(faults=FaultPlan(schedule=[kind], retry_after_s=0.25)) as srv:
        client = _client(srv)
        with pytest.raises(exc) as info:
            _ask(client, msgs)
        assert isinstance(info.value, openai.APIStatusError)
        assert info.value.status_code == status
        if kind == "429":
            assert info.value.response.headers["retry-after"] == "0.25"
            assert info.value.response.headers["retry-after-ms"] == "250"
            assert info.value.code == "rate_limit_exceeded"
        # The schedule is spent: the retry of the same content succeeds.
        assert _rating_of(_ask(client, msgs)) == expected_rating(msgs)
        log = srv.log()
    assert [(e["status"], e["paid"]) for e in log] == [(kind, False), ("ok", True)]
    assert srv.paid_counts() == {request_key(MODEL, msgs): 1}


def test_drop_closes_the_connection_without_a_response():
    with FakeOpenAIServer(faults=FaultPlan(schedule=["drop"])) as srv:
        with pytest.raises(openai.APIConnectionError) as info:
            _ask(_client(srv), _records(1)[0])
        assert not isinstance(info.value, openai.APITimeoutError)
        assert [(e["status"], e["paid"]) for e in srv.log()] == [("drop", False)]


def test_hang_never_answers_and_the_client_times_out():
    with FakeOpenAIServer(faults=FaultPlan(schedule=["hang"])) as srv:
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _ask(_client(srv, timeout=0.5), _records(1)[0])
        assert 0.4 < time.monotonic() - t0 < 5
        (entry,) = srv.log()
        assert entry["status"] == "hang" and not entry["paid"] and entry["t_done"] is None
    assert srv.log()[0]["t_done"] is not None  # stop() ended the hang


def test_no_score_is_a_paid_200_without_a_number():
    msgs = _records(1)[0]
    with FakeOpenAIServer(faults=FaultPlan(schedule=["no_score"])) as srv:
        text = _ask(_client(srv), msgs)
        assert text == NO_SCORE_REPLY and not re.search(r"\d", text)
        assert [(e["status"], e["paid"]) for e in srv.log()] == [("no_score", True)]
        assert srv.paid_counts() == {request_key(MODEL, msgs): 1}


def test_schedule_none_falls_through_and_ok_forces_success():
    plan = FaultPlan(rate_429=1.0, schedule=["ok", None, "500"])
    with FakeOpenAIServer(faults=plan) as srv:
        client = _client(srv)
        _ask(client, _records(1)[0])
        for exc in (openai.RateLimitError, openai.InternalServerError, openai.RateLimitError):
            with pytest.raises(exc):
                _ask(client, _records(1)[0])
        assert [e["status"] for e in srv.log()] == ["ok", "429", "500", "429"]


def test_probabilistic_faults_are_seeded_and_retries_redraw():
    msgs = _records(1)[0]

    def statuses(seed: int) -> list[str]:
        with FakeOpenAIServer(seed=seed, faults=FaultPlan(error_500=0.5)) as srv:
            client = _client(srv)
            for _ in range(24):  # the same content over and over: each is a retry
                try:
                    _ask(client, msgs)
                except openai.InternalServerError:
                    pass
            return [e["status"] for e in srv.log()]

    a, b, c = statuses(0), statuses(0), statuses(1)
    assert a == b
    assert set(a) == {"ok", "500"}  # a retry of the same content gets a fresh draw
    assert a != c


def test_fault_plan_rejects_nonsense():
    with pytest.raises(ValueError):
        FaultPlan(rate_429=0.6, drop=0.6)
    with pytest.raises(ValueError):
        FaultPlan(hang=-0.1)
    with pytest.raises(ValueError):
        FaultPlan(schedule=["timeout"])


# --- log, auth, rate cap ----------------------------------------------------------------------


def test_log_counts_only_paid_replies_and_can_be_reset():
    r0, r1 = _records(2)
    with FakeOpenAIServer(faults=FaultPlan(schedule=["ok", "500", "ok", "no_score"])) as srv:
        client = _client(srv)
        _ask(client, r0)
        with pytest.raises(openai.InternalServerError):
            _ask(client, r1)
        _ask(client, r1)
        _ask(client, r0)  # paid twice: exactly what the pipeline's tests look for
        k0, k1 = request_key(MODEL, r0), request_key(MODEL, r1)
        log = srv.log()
        assert [(e["key"], e["status"], e["paid"]) for e in log] == [
            (k0, "ok", True), (k1, "500", False), (k1, "ok", True), (k0, "no_score", True)]
        assert [e["attempt"] for e in log] == [0, 0, 1, 1]
        assert all(e["t"] <= e["t_done"] and e["model"] == MODEL for e in log)
        assert srv.paid_counts() == {k0: 2, k1: 1}
        log[0]["status"] = "tampered"
        assert srv.log()[0]["status"] == "ok"  # log() hands out copies

        with httpx.Client(base_url=srv.base_url.removesuffix("/v1")) as http:
            remote = http.get("/_fake/log").json()
            assert [e["status"] for e in remote] == ["ok", "500", "ok", "no_score"]
            assert http.post("/_fake/reset").json() == {"ok": True}
        assert srv.log() == [] and srv.paid_counts() == {}
        _ask(client, r0)
        assert len(srv.log()) == 1
        srv.reset_log()
        assert srv.log() == []


def test_chat_completions_without_v1_prefix(server):
    url = server.base_url.removesuffix("/v1") + "/chat/completions"
    r = httpx.post(url, json={"model": MODEL, "messages": _records(1)[0]}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 200
    assert r.json()["object"] == "chat.completion"


def test_api_key_is_checked():
    msgs = _records(1)[0]
    with FakeOpenAIServer(api_key="right") as srv:
        with pytest.raises(openai.AuthenticationError) as info:
            _ask(_client(srv, api_key="wrong"), msgs)
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
        _ask(_client(srv, api_key="right"), msgs)
        r = httpx.post(srv.base_url + "/chat/completions", json={"model": MODEL, "messages": msgs})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert [(e["status"], e["paid"]) for e in srv.log()] == [("401", False), ("ok", True), ("401", False)]
    with FakeOpenAIServer() as srv:  # no key configured: any key passes, none at all does not
        _ask(_client(srv, api_key="anything"), msgs)
        r = httpx.post(srv.base_url + "/chat/completions", json={"model": MODEL, "messages": msgs})
        assert r.status_code == 401


def test_rpm_cap_turns_a_burst_into_429s():
    # 120 rpm: a one-second burst of 2 requests, then one more every 0.5 s.
    with FakeOpenAIServer(rpm_cap=120, faults=FaultPlan(schedule=["500"])) as srv:
        client = _client(srv)
        with pytest.raises(openai.InternalServerError):  # schedule slot 0 goes to a passed request
            _ask(client, _records(1)[0])
        _ask(client, _records(1)[0])
        with pytest.raises(openai.RateLimitError) as info:
            _ask(client, _records(1)[0])
        wait = float(info.value.response.headers["retry-after"])
        assert 0 < wait <= 0.5
        assert 0 < float(info.value.response.headers["retry-after-ms"]) <= 500
        log = srv.log()
        assert [(e["status"], e["paid"]) for e in log] == [("500", False), ("ok", True), ("rate_limited", False)]
        assert log[2]["index"] is None
        time.sleep(wait + 0.05)
        _ask(client, _records(1)[0])  # the bucket refilled


# --- concurrency and lifecycle ----------------------------------------------------------------


def test_latency_overlaps_across_concurrent_requests():
    n, latency = 20, 0.3

    async def go(base_url: str) -> list[str]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=10) as client:
            rs = await asyncio.gather(*(
                client.chat.completions.create(model=MODEL, messages=m) for m in _records(n)))
            return [r.choices[0].message.content for r in rs]

    with FakeOpenAIServer(latency_s=latency) as srv:
        t0 = time.monotonic()
        texts = asyncio.run(go(srv.base_url))
        wall = time.monotonic() - t0
        log = srv.log()
    assert [_rating_of(t) for t in texts] == [expected_rating(m) for m in _records(n)]
    assert all(e["t_done"] - e["t"] >= latency - 0.01 for e in log)
    # Most requests are in flight at the same moment: the latency is a sleep, not a queue.
    peak = max(sum(e["t"] <= x["t"] < e["t_done"] for e in log) for x in log)
    assert peak >= n // 2
    assert wall < n * latency / 2


def test_stop_returns_promptly_with_a_hung_request_in_flight():
    srv = FakeOpenAIServer(faults=FaultPlan(schedule=["hang"])).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _ask(_client(srv, timeout=30), _records(1)[0])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=call)
    th.start()
    deadline = time.monotonic() + 5
    while not srv.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.log(), "request never arrived"
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.5
    th.join(timeout=5)
    assert not th.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)
    assert srv.log()[0]["status"] == "hang"


def test_cli_serves_until_sigterm(tmp_path):
    log_file = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpagasus.testing.fake_openai", "--port", "0", "--latency-ms", "10",
         "--api-key", "k", "--log", str(log_file), "--schedule", "500", "--fault", "retry_after_s=2",
         "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"BASE_URL (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert m, f"unexpected first line {line!r}"
        base_url = m.group(1)
        client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=5)
        msgs = _records(1)[0]
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=msgs)
        r = client.chat.completions.create(model=MODEL, messages=msgs)
        assert _rating_of(r.choices[0].message.content) == expected_rating(msgs)
        remote = httpx.get(base_url.removesuffix("/v1") + "/_fake/log").json()
        assert [(e["status"], e["paid"]) for e in remote] == [("500", False), ("ok", True)]
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(e["status"], e["paid"], e["key"]) for e in lines] == [
        ("500", False, request_key(MODEL, msgs)), ("ok", True, request_key(MODEL, msgs))]
