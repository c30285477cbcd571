"""Chaos: every fault and bad input of docs/reliability.md, against the fake server, asserted
from the server's own request log (what was paid for), not from our bookkeeping."""
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import types
from collections import Counter

import pytest
import yaml
from conftest import REPO, stored_judgements
from test_rating import judge_cfg, rate, unique_records

import alpagasus.judging.judges.openai_judge as openai_judge
from alpagasus.judging.claims import Claim, KeyClaims
from alpagasus.core.config import ConfigError, load
from alpagasus.core.io import read_jsonl
from alpagasus.judging.rating import IncompleteRatingError
from alpagasus.testing.fake_openai import FakeOpenAIServer, FaultPlan



def env():
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_judge, "BACKOFF_BASE_S", 0.01)


def server_usd(log, judge):
    """Dollars the server billed: its own token counts of every paid reply."""
    cfg = next(iter(judge.values()))
    return sum(e.get("prompt_tokens", 0) * cfg["usd_per_1m_input_tokens"]
               + e.get("completion_tokens", 0) * cfg["usd_per_1m_output_tokens"] for e in log if e["paid"]) / 1e6


def cli_config(tmp_path, name, judge, cache="cache", **rating):
    cfg = {"results_dir": str(tmp_path / name), "cache_dir": str(tmp_path / cache),
           "data": {"source": "local"}, "judges": judge,
           "rating": {"judge": "fake", **rating}, "selection": {"method": "threshold", "threshold": 4.5}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "alpagasus", *map(str, args)], env=env(),
                          capture_output=True, text=True, **kw)


# -- 1. two processes, one cache: each key paid once -----------------------------------------

@pytest.mark.slow
def test_two_processes_sharing_a_cache_pay_each_shared_key_once(tmp_path, api_key):
    records = unique_records(200)
    (tmp_path / "a.json").write_text(json.dumps(records[:150]))
    (tmp_path / "b.json").write_text(json.dumps(records[50:]))
    with FakeOpenAIServer(latency_s=0.05) as srv:
        judge = judge_cfg(srv, concurrency=4, timeout_s=5)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "alpagasus", "rate", "--config", str(cli_config(tmp_path, n, judge)),
             "--records", str(tmp_path / f"{n}.json"), "--out", str(tmp_path / n / "scores.jsonl"),
             "--no-progress"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in ("a", "b")]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
        paid = srv.paid_counts()
    assert len(paid) == 200 and max(paid.values()) == 1, Counter(paid.values())
    ledgers = [json.loads((tmp_path / n / "scores.jsonl.cost.json").read_text()) for n in ("a", "b")]
    shared = sum(lg["judgements_from_other_processes"] + lg["judgements_reused_from_cache"] for lg in ledgers)
    assert shared == 100  # every shared key: paid by one, taken from the cache by the other
    for n, recs in (("a", records[:150]), ("b", records[50:])):
        rows = read_jsonl(tmp_path / n / "scores.jsonl")
        assert len(rows) == len(recs) and all(r["status"] in ("scored", "unparsed") for r in rows)
    assert not [p for p in (tmp_path / "cache" / "claims").iterdir() if p.name != ".lock"]  # journals closed


def test_a_claim_of_a_dead_or_frozen_process_expires(tmp_path):
    from alpagasus.judging.cache import JudgementCache

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    me = socket.gethostname().replace("-", "_")
    (claims_dir / f"{me}-{dead.pid}.claims").write_text("+k-dead\n")   # its process is gone
    (claims_dir / "othernode-7.claims").write_text("+k-live\n+k-done\n-k-done\n")
    (claims_dir / "frozennode-7.claims").write_text("+k-frozen\n")    # not touched for an hour
    old = time.time() - 3600
    os.utime(claims_dir / "frozennode-7.claims", (old, old))
    with JudgementCache.in_dir(tmp_path) as cache:
        claims = KeyClaims(tmp_path, ttl_s=30)
        assert not (claims_dir / f"{me}-{dead.pid}.claims").exists()  # swept at start
        assert claims.claim("k-dead", cache) is Claim.CLAIMED
        assert claims.claim("k-frozen", cache) is Claim.CLAIMED
        assert claims.claim("k-done", cache) is Claim.CLAIMED      # released by its owner
        assert claims.claim("k-live", cache) is Claim.BUSY         # another node, touched just now
        assert claims.taken_over == 1
        cache.put("k-new", "4", 1, 1, "m", "v", 0.0)
        assert claims.claim("k-new", cache) is Claim.CACHED
        claims.close()
    assert sorted(p.name for p in claims_dir.iterdir() if p.name != ".lock") == [
        "frozennode-7.claims", "othernode-7.claims"]


# -- 2. an unreachable server stops fast and says why -----------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plain_http_server():
    with FakeOpenAIServer() as srv:
        yield srv


# (how the base_url is wrong, its label in failed_requests_by_kind, words of the line that stops the run)
UNREACHABLE = {
    "refused": ("connection_refused", "connection refused"),
    "bad_scheme": ("connection_bad_url", "not an http(s) URL"),
    "tls": ("connection_tls", "TLS/SSL error"),        # https:// on the fake server's plain-HTTP port
    "dns": ("connection_dns", "DNS lookup failed"),     # .invalid never resolves (RFC 6761)
}


@pytest.mark.parametrize("how", sorted(UNREACHABLE))
def test_an_unreachable_server_stops_within_seconds(tmp_path, api_key, monkeypatch, plain_http_server, how):
    url = {"refused": f"http://127.0.0.1:{_closed_port()}/v1", "bad_scheme": "htp://127.0.0.1/v1",
           "tls": plain_http_server.base_url.replace("http://", "https://"),
           "dns": "http://judge.alpagasus.invalid/v1"}[how]
    label, words = UNREACHABLE[how]
    monkeypatch.setattr(openai_judge, "BACKOFF_BASE_S", 1.0)  # the real backoff
    judge = judge_cfg(types.SimpleNamespace(base_url=url), concurrency=16, timeout_s=60, max_retries=8)
    t0 = time.monotonic()
    with pytest.raises(IncompleteRatingError, match=re.escape(f"cannot reach {url}: {words}")) as info:
        rate(unique_records(32), None, tmp_path, judge=judge)
    assert time.monotonic() - t0 < 10  # before this was classified, TLS took 224 s, as "timeout x450"
    ledger = json.loads((tmp_path / "run.cost.json").read_text())
    assert set(ledger["failed_requests_by_kind"]) == {label}, ledger["failed_requests_by_kind"]
    assert ledger["requests_sent"] <= 16 * 3  # each worker's first try and two retries at most
    # the cause, not a generic "Connection error." (names differ with the SDK's transport)
    assert any(c in str(info.value) for c in ("ConnectionRefusedError", "UnsupportedProtocol", "NonHttpUrlClientError",
                                              "SSLError", "gaierror")), str(info.value)
    assert plain_http_server.log() == []  # a TLS hello is no HTTP request: nothing reached the API


def test_a_reset_and_a_closed_connection_are_named_as_such(tmp_path, api_key):
    """After a success, a reset (TCP RST) or a connection closed without a reply is retried,
    and counted under its own name, not as a timeout."""
    with FakeOpenAIServer(faults=FaultPlan(schedule=["ok", "reset", "drop"])) as srv:
        ledger, scores = rate(unique_records(3), srv, tmp_path, judge=judge_cfg(srv, concurrency=1))
        statuses = Counter(e["status"] for e in srv.log())
    assert statuses == {"ok": 3, "reset": 1, "drop": 1}
    assert ledger["failed_requests_by_kind"] == {"connection_reset": 1, "connection_closed": 1}
    assert ledger["failure_examples"]["connection_reset"].startswith("connection reset by the server: ConnectionResetError")
    assert "timed out" not in json.dumps(ledger["failure_examples"])


@pytest.mark.parametrize("fault", ["402", "quota_429"])
def test_no_quota_stops_the_run_at_once(tmp_path, api_key, fault):
    with FakeOpenAIServer(faults=FaultPlan(schedule=[fault] * 50)) as srv:
        with pytest.raises(IncompleteRatingError, match="the account has no quota left"):
            rate(unique_records(50), srv, tmp_path, judge=judge_cfg(srv, concurrency=4))
        sent = srv.log()
    # the requests in flight when the first answer came, not all 50
    assert 1 <= len(sent) <= 4 and all(e["status"] == fault for e in sent)
    assert not (tmp_path / "run.scores.jsonl").exists()


def test_every_failure_kind_is_counted_and_the_error_names_them(tmp_path, api_key):
    faults = FaultPlan(bad_request=0.3, error_500=0.3)
    with FakeOpenAIServer(faults=faults) as srv:
        with pytest.raises(IncompleteRatingError) as info:
            rate(unique_records(40), srv, tmp_path, judge=judge_cfg(srv, max_retries=0))
        statuses = Counter(e["status"] for e in srv.log())
    ledger = json.loads((tmp_path / "run.cost.json").read_text())
    assert ledger["failed_requests_by_kind"]["http_400"] == statuses["400"] > 0
    assert ledger["failed_requests_by_kind"]["http_500"] == statuses["500"] > 0
    assert ledger["unscored_by_kind"] == {"bad_request": statuses["400"], "server_error": statuses["500"]}
    message = str(info.value)
    assert "http_400 x" in message and "http_500 x" in message and "e.g. 'HTTP 400: This request was refused" in message


# -- 3. a budget that is a budget ---------------------------------------------------------------

def test_the_budget_holds_over_reruns_and_can_be_raised(tmp_path, api_key):
    records = unique_records(40)
    with FakeOpenAIServer() as srv:
        judge = judge_cfg(srv, concurrency=2, usd_per_1m_input_tokens=10_000.0, usd_per_1m_output_tokens=10_000.0)
        cap = 10 * (130 + 256) * 10_000 / 1e6  # about ten requests' worst case
        for _ in range(3):
            with pytest.raises(IncompleteRatingError, match=r"over budget.*left; raise rating.max_usd"):
                rate(records, srv, tmp_path, judge=judge, rating={"max_usd": cap})
        assert server_usd(srv.log(), judge) <= cap
        paid_capped = sum(e["paid"] for e in srv.log())
        assert 0 < paid_capped < 40
        ledger = json.loads((tmp_path / "run.cost.json").read_text())
        assert ledger["usd_stage_total"] <= cap
        assert ledger["usd_stage_before_this_run"] > 0  # the earlier runs' spend counted
        # Raised explicitly: the rest is paid, once.
        rate(records, srv, tmp_path, judge=judge, rating={"max_usd": 100 * cap})
        paid = srv.paid_counts()
    assert len(paid) == 40 and max(paid.values()) == 1


def cjk_records(n):
    """Records of Chinese text: about one token a character on many tokenizers, against the
    four characters a token of English. (Each a different sentence: no two share a key.)"""
    words = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"
    records = []
    for i in range(n):
        text = "".join(words[(i * 7 + j * 13) % len(words)] for j in range(240))
        records.append({"instruction": f"请总结下面的文字（第{i}条）。", "input": text[:120], "output": text[120:]})
    return records


def test_a_budget_over_cjk_reruns_and_path_spellings_is_never_exceeded(tmp_path, api_key, monkeypatch):
    """$0.01 over reruns of CJK records, against a server that bills a token per character,
    with the output path spelled four ways: the server's own bill stays within it. (Before: the
    worst case counted 4 characters a token, and each spelling started again from $0.)"""
    from alpagasus.judging.rating import rate_records

    monkeypatch.chdir(tmp_path)
    records = cjk_records(30)
    spellings = ["out/scores.jsonl", "out/./scores.jsonl", "out//scores.jsonl", str(tmp_path / "out" / "scores.jsonl")]
    with FakeOpenAIServer(chars_per_token=1) as srv:
        judge = judge_cfg(srv, concurrency=4, usd_per_1m_input_tokens=2.5, usd_per_1m_output_tokens=10.0)
        for out in spellings:
            with pytest.raises(IncompleteRatingError, match="over budget"):
                rate_records(records, judge, {"judge": "fake", "max_usd": 0.01}, "cache", out,
                             "out/cost.json", progress=False)
            ledger = json.loads((tmp_path / "out" / "cost.json").read_text())
            assert ledger["estimate_before_run"]["token_count"] == "utf8_bytes"  # gpt-test: no tokenizer known
        log = srv.log()
    paid = [e for e in log if e["paid"]]
    assert paid and len(paid) < 30
    billed = server_usd(log, judge)
    assert billed <= 0.01, billed
    # what the server billed is what the ledger says the stage spent over all runs
    assert ledger["usd_stage_total"] == pytest.approx(billed, abs=1e-9)
    assert ledger["usd_stage_before_this_run"] == pytest.approx(billed, abs=1e-9)  # the last spelling: nothing new


def test_a_reply_without_usage_is_charged_its_worst_case(tmp_path, api_key):
    with FakeOpenAIServer(faults=FaultPlan(no_usage=1.0)) as srv:
        judge = judge_cfg(srv, concurrency=4, usd_per_1m_input_tokens=2.5, usd_per_1m_output_tokens=10.0)
        with pytest.raises(IncompleteRatingError, match="over budget"):
            rate(unique_records(300), srv, tmp_path, judge=judge, rating={"max_usd": 0.01})
        sent = len(srv.log())
    ledger = json.loads((tmp_path / "run.cost.json").read_text())
    assert sent == ledger["replies_without_usage"] == ledger["judgements_paid_this_run"]
    assert 0 < sent < 20  # worst case ~ $0.003 a request: a handful, not 300
    assert ledger["usd_this_run"] <= 0.01


# -- 4. malformed success replies ---------------------------------------------------------------

def test_malformed_replies_are_retried_counted_and_never_cached(tmp_path, api_key):
    faults = FaultPlan(schedule=["not_json", "empty_choices", "null_content"])
    with FakeOpenAIServer(faults=faults) as srv:
        ledger, scores = rate(unique_records(3), srv, tmp_path, judge=judge_cfg(srv, concurrency=1))
    assert [r["status"] for r in read_jsonl(scores)] == ["scored"] * 3
    assert ledger["failed_requests_by_kind"] == {"malformed_reply": 3}
    cached = stored_judgements(tmp_path / "cache")
    assert len(cached) == 3 and all(e["text"] for e in cached)


def test_a_server_that_only_sends_malformed_replies_leaves_records_failed_not_cached(tmp_path, api_key):
    with FakeOpenAIServer(faults=FaultPlan(empty_choices=1.0)) as srv:
        with pytest.raises(IncompleteRatingError, match="malformed_reply x6"):
            rate(unique_records(3), srv, tmp_path, judge=judge_cfg(srv, max_retries=1))
        srv.faults = None
        srv.reset_log()
        rate(unique_records(3), srv, tmp_path)
        assert len(srv.log()) == 3  # asked again: nothing of the malformed replies was cached


# -- 5. waits have limits and are visible -------------------------------------------------------

def test_a_day_long_retry_after_is_capped_and_logged(tmp_path, api_key, caplog):
    faults = FaultPlan(schedule=["429"], retry_after_s=86400)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING), FakeOpenAIServer(faults=faults) as srv:
        ledger, _ = rate(unique_records(1), srv, tmp_path, judge=judge_cfg(srv, concurrency=1, max_wait_s=0.3))
    assert time.monotonic() - t0 < 10
    assert "server asked to wait 86400s; waiting 0.3s" in caplog.text
    assert ledger["server_waits_over_5s"] == 1 and ledger["status_counts"]["scored"] == 1


def test_day_long_retry_afters_of_many_keys_are_one_pause(tmp_path, api_key):
    """Ten keys that always get a day-long 429 among 50: the first pauses every worker once
    (max_wait_s); the others fall in the window it announced and hold only their own request.
    Before, each of them paused everyone again: 46 requests in 300 s."""
    records = unique_records(50)
    for i, r in enumerate(records[::5]):
        r["instruction"] += f" [always-429 #{i}]"
    faults = FaultPlan(by_content={"[always-429 #": "429"}, retry_after_s=86400)
    with FakeOpenAIServer(faults=faults, latency_s=0.01) as srv:
        with pytest.raises(IncompleteRatingError, match="10 failed"):
            rate(records, srv, tmp_path, judge=judge_cfg(srv, concurrency=4, max_wait_s=1.0, max_retries=2))
        log = srv.log()
    ok = [e for e in log if e["status"] == "ok"]
    assert len(ok) == 40 and Counter(e["status"] for e in log)["429"] == 10 * 3
    # every good record was answered within one pause (1 s) of the start, not one pause per bad key
    assert max(e["t_done"] for e in ok) - min(e["t"] for e in log) < 1.0 + 1.5
    ledger = json.loads((tmp_path / "run.cost.json").read_text())
    assert ledger["rate_limit_pauses"] == 1


def _span(log):
    return max(e["t_done"] for e in log) - min(e["t"] for e in log)


def test_a_tenth_of_429s_costs_about_a_tenth(tmp_path, api_key):
    """429s among successes hold only their own request (RateLimiter: a 429 pauses every worker
    only where 429s are half of the recent answers); before, each paused every worker: 10%
    faults made a run about 5x slower than a clean one."""
    records = unique_records(160)
    judge = {"concurrency": 8, "timeout_s": 5}
    with FakeOpenAIServer(latency_s=0.05) as srv:
        rate(records, srv, tmp_path / "clean", judge=judge_cfg(srv, **judge))
        clean = _span(srv.log())
    with FakeOpenAIServer(latency_s=0.05, faults=FaultPlan(rate_429=0.1, retry_after_s=0.2)) as srv:
        ledger, _ = rate(records, srv, tmp_path / "faulty", judge=judge_cfg(srv, **judge))
        log = srv.log()
    limited = sum(e["status"] == "429" for e in log)
    assert limited >= 8 and sum(e["paid"] for e in log) == 160
    # each 429 costs its own request one Retry-After: about limited * 0.2 s / 8 workers more
    assert _span(log) < clean + limited * 0.2 / 8 + 1.5, (clean, _span(log), limited, ledger["rate_limit_pauses"])
    assert ledger["rate_limit_pauses"] <= limited // 4


def test_a_provider_limit_still_pauses_every_worker(tmp_path, api_key):
    """When 429s are what the server says to everyone (its own rpm cap), every worker waits."""
    with FakeOpenAIServer(rpm_cap=600) as srv:  # 10 a second, a bucket of 10
        ledger, _ = rate(unique_records(40), srv, tmp_path, judge=judge_cfg(srv, concurrency=16, max_retries=20))
        paid = srv.paid_counts()
    assert len(paid) == 40 and max(paid.values()) == 1
    assert ledger["rate_limit_pauses"] >= 1


def test_a_key_echoed_in_a_reply_is_never_written(tmp_path, api_key):
    with FakeOpenAIServer(faults=FaultPlan(echo_key=1.0), api_key=api_key) as srv:
        ledger, scores = rate(unique_records(5), srv, tmp_path)
        log = srv.log()
    assert Counter(e["status"] for e in log) == {"echo_key": 5}  # the server did send it back
    cache = tmp_path / "cache"
    for path in (scores, tmp_path / "run.cost.json", *cache.rglob("*")):
        if path.is_file():
            assert api_key.encode() not in path.read_bytes(), path
    assert all(api_key not in json.dumps(e) for e in stored_judgements(cache))
    assert all("***" in r["raw"] for r in read_jsonl(scores))


# -- 6. disk and permissions --------------------------------------------------------------------

def test_an_unusable_cache_dir_is_found_before_paying(tmp_path, api_key):
    (tmp_path / "a-file").write_text("not a directory")
    with FakeOpenAIServer() as srv:
        with pytest.raises(OSError, match=r"a-file/cache is not writable .*nothing was sent"):
            rate_records_into(tmp_path, srv, cache_dir=tmp_path / "a-file" / "cache")
        assert srv.log() == []


def rate_records_into(tmp_path, srv, cache_dir, records=None, **judge_over):
    from alpagasus.judging.rating import rate_records

    return rate_records(records or unique_records(5), judge_cfg(srv, **judge_over), {"judge": "fake"},
                        cache_dir, tmp_path / "out" / "scores.jsonl", tmp_path / "out" / "cost.json",
                        progress=False)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real filesystem that fills up (root only; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_filesystem_is_found_before_paying(tmp_path, small_tmpfs, api_key):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with FakeOpenAIServer() as srv:
        with pytest.raises(OSError, match=r"is not writable \(\[Errno 30\] Read-only file system\)"):
            rate_records_into(tmp_path, srv, cache_dir=small_tmpfs / "cache")
        assert srv.log() == []


def test_a_full_disk_stops_sending_at_the_first_lost_write(tmp_path, small_tmpfs, api_key):
    # Each committed judgement adds ~3 pages (12 kB) to the store's WAL: 150 fill 256 kB mid-run.
    records = unique_records(150)
    with FakeOpenAIServer(latency_s=0.02) as srv:
        with pytest.raises(IncompleteRatingError, match=r"cannot write the judgement cache .*\[Errno 28\]"):
            rate_records_into(tmp_path, srv, cache_dir=small_tmpfs / "cache", records=records, concurrency=2)
        paid = sum(e["paid"] for e in srv.log())
    ledger = json.loads((tmp_path / "out" / "cost.json").read_text())
    kept = len(stored_judgements(small_tmpfs / "cache"))
    assert ledger["replies_lost_unwritable_cache"] >= 1
    assert paid - kept == ledger["replies_lost_unwritable_cache"] <= 2  # only what was in flight
    assert paid < 150


# -- 7. bad input and bad config: one clear line --------------------------------------------------

def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_cli_data_errors_are_one_line_naming_file_record_and_field(tmp_path, api_key):
    with FakeOpenAIServer() as srv:
        cfg = cli_config(tmp_path, "x", judge_cfg(srv))
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"},
                                   {"instruction": "a", "input": 3, "output": "b"}]))
        _one_line_error(cli("rate", "--config", cfg, "--records", bad, "--out", tmp_path / "s.jsonl"),
                        str(bad), "record 1", "'input'", "expected a string")
        debug = cli("--debug", "rate", "--config", cfg, "--records", bad, "--out", tmp_path / "s.jsonl")
        assert "Traceback" in debug.stderr
        surrogate = tmp_path / "surrogate.json"
        surrogate.write_text('[{"instruction": "a", "input": "", "output": "ok \\ud800 then"}]')
        _one_line_error(cli("rate", "--config", cfg, "--records", surrogate, "--out", tmp_path / "s.jsonl"),
                        "record 0", "'output'", "lone UTF-16 surrogate", "U+D800")
        assert srv.log() == []
    assert not (tmp_path / "s.jsonl").exists()


def test_config_errors_name_the_file_line_or_key(tmp_path):
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("selection:\n  threshold: [4.5\n  method: threshold\n")
    _one_line_error(cli("check-config", syntax), f"{syntax}: line 3, column 9: YAML syntax error")
    cases = {
        "judges:\n  fake:\n    backend: openai\n    model: m\n    temperature: -1\n":
            "config judges.fake.temperature: -1 is less than the minimum of 0",
        "judges:\n  fake:\n    backend: openai\n    model: m\n    tempreature: 0\n":
            "config judges.fake: unknown key(s) ('tempreature' was unexpected)",
        "selection:\n  threshold: 7\n": "config selection.threshold: 7 is greater than the maximum of 5",
        "selection:\n  method: top_k\n  k: 0\n": "config selection.k: 0 is less than the minimum of 1",
        "selection:\n  method: top_fraction\n  fraction: 1.5\n": "config selection.fraction: 1.5 is greater than",
    }
    for i, (text, expected) in enumerate(cases.items()):
        overlay = tmp_path / f"o{i}.yaml"
        overlay.write_text(text)
        with pytest.raises(ConfigError) as info:
            load(REPO / "config" / "config.yaml", overlay)
        assert str(info.value).startswith(expected), str(info.value)
        assert len(str(info.value)) < 400


def test_snakemake_shows_the_same_config_line(tmp_path):
    overlay = tmp_path / "t7.yaml"
    overlay.write_text("selection:\n  threshold: 7\n")
    proc = subprocess.run(["snakemake", "-n", "--configfile", str(overlay), "--directory", str(tmp_path),
                           "--snakefile", str(REPO / "Snakefile")], env=env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "config selection.threshold: 7 is greater than the maximum of 5" in proc.stdout + proc.stderr


# -- 8. allow_incomplete is not a way to hide a dead run -------------------------------------------

def test_allow_incomplete_warns_with_counts_and_never_selects_from_nothing(tmp_path, api_key, caplog):
    with FakeOpenAIServer(faults=FaultPlan(bad_request=1.0)) as srv:
        with pytest.raises(IncompleteRatingError, match="no record has a score"):
            rate(unique_records(5), srv, tmp_path, rating={"allow_incomplete": True})
    with caplog.at_level(logging.WARNING), FakeOpenAIServer(faults=FaultPlan(schedule=["400", "400"])) as srv:
        ledger, scores = rate(unique_records(5), srv, tmp_path / "partial",
                              judge=judge_cfg(srv, concurrency=1), rating={"allow_incomplete": True})
    assert ledger["status_counts"] == {"scored": 3, "unparsed": 0, "failed": 2, "budget": 0}
    assert "INCOMPLETE RATING" in caplog.text and "2 of 5 records have no score" in caplog.text
    assert [r["status"] for r in read_jsonl(scores)].count("failed") == 2


def test_the_selection_summary_warns_about_an_incomplete_rating():
    from alpagasus.selection.select import summarize

    rows = [{"score": 5.0, "status": "scored"}, {"score": None, "status": "failed"},
            {"score": None, "status": "budget"}]
    summary = summarize(rows, [0], {"method": "threshold", "threshold": 4.5})
    assert summary["warnings"] == ["incomplete rating: 2 of 3 records have no judgement "
                                   "(1 failed, 1 over budget) and cannot be selected"]
    assert summarize(rows[:1], [0], {"method": "threshold"})["warnings"] == []


@pytest.mark.slow
def test_the_rate_rules_log_ends_with_the_reason_it_stopped(tmp_path, api_key):
    """Snakemake says "check log file(s)": results/logs/rate.log must say why (here: the server
    cannot be reached), in its last line, not only on the console."""
    from test_workflow import overlay, snakemake

    records = tmp_path / "records.json"
    records.write_text(json.dumps(unique_records(8)))
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    o = overlay(tmp_path / "o.yaml", {
        "results_dir": "results", "cache_dir": "cache",
        "data": {"source": "local", "local_path": str(records), "expected_records": None},
        "judges": judge_cfg(types.SimpleNamespace(base_url=url)), "rating": {"judge": "fake"},
    })
    t0 = time.monotonic()
    proc = snakemake(tmp_path, "results/scores.jsonl", "--configfile", o, check=False, env={"OPENAI_API_KEY": api_key})
    assert proc.returncode != 0 and time.monotonic() - t0 < 120
    last = (tmp_path / "results/logs/rate.log").read_text().rstrip().splitlines()[-1]
    assert f"cannot reach {url}: connection refused (nothing listens there): ConnectionRefusedError" in last, last
    assert not (tmp_path / "results/scores.jsonl").exists()
