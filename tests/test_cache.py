"""The judgement store (SQLite): durable once acknowledged, shared by processes, a failed write
raised naming the file, bad stores named in one line, today's JSON lines caches migrated
without paying again. All cheap: the 1M-judgement figures are bench/bench_scale.py's."""
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from alpagasus.core.io import read_jsonl
from alpagasus.judging.cache import (CACHE_FILE, LEGACY_FILE, SCHEMA_VERSION, JudgementCache, StoreError,
                                     cached_keys, journal_mode, judgement_key)

MSG = [{"role": "user", "content": "rate this"}]
PARAMS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256}
LEGACY = REPO / "tests" / "data" / "legacy_cache"  # written by the JSON lines store (5fdf660)
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def test_key_depends_on_everything_that_defines_a_judgement():
    base = judgement_key("m", "v1", PARAMS, MSG)
    assert base == judgement_key("m", "v1", dict(reversed(PARAMS.items())), MSG)
    assert base != judgement_key("m2", "v1", PARAMS, MSG)
    assert base != judgement_key("m", "v2", PARAMS, MSG)
    assert base != judgement_key("m", "v1", {**PARAMS, "temperature": 0.7}, MSG)
    assert base != judgement_key("m", "v1", PARAMS, [{"role": "user", "content": "rate this!"}])


def _dumps_key(model, prompt_version, params, messages):  # the key's definition, written out
    blob = json.dumps({"model": model, "prompt_version": prompt_version, "params": params, "messages": messages},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def test_the_key_is_the_sha256_of_the_sorted_json_so_every_cache_written_before_still_matches():
    # Pinned: the key the stores written so far hold for this judgement (json.dumps of the whole).
    assert judgement_key("m", "v1", PARAMS, MSG) == "0d19039cf3f5ce0bb096484bf6ef59ce5e24d7a3019c2b1c2d76949f58d2513f"
    texts = ['plain', 'quote " and backslash \\ and /', "tab\tnew\nline\rcr\x00\x1f\x7f", "é ü 中文 😀 \u2028\u2029",
             "", "{\"content\": 1}", "\ud7ff\ue000\uffff"]
    params = [PARAMS, {}, {"response_format": {"type": "json_schema", "schema": {"b": [1, 2.5, None, True]}}, "a": "é"}]
    for text in texts:
        for p in params:
            for msgs in ([{"role": "system", "content": "S"}, {"role": "user", "content": text}],
                         [{"content": text, "role": "user"}], []):
                assert judgement_key("gpt-é", "v\"1", p, msgs) == _dumps_key("gpt-é", "v\"1", p, msgs)
    # Messages that are not {role, content} strings take the general encoder, with the same result.
    for msgs in ([{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                 [{"role": "user", "content": "x", "name": "n"}], [{"role": "user"}, {"role": "a", "content": "b"}],
                 [{"role": "user", "content": 3}], [{"content": "a", "name": "b"}]):
        assert judgement_key("m", "v1", PARAMS, msgs) == _dumps_key("m", "v1", PARAMS, msgs)


def test_put_get_reopen_replace_and_spend(tmp_path):
    with JudgementCache.in_dir(tmp_path) as c:
        c.put("k1", "4.5\nok", 10, 3, "m", "v", 0.5, stage="rating:/a", logprobs=[{"t": "4"}])
        c.put("k2", "3\nmeh", 11, 4, "m", "v", 0.25, stage="rating:/a")
        c.put("k2", "3\nmeh", 11, 4, "m", "v", 0.125, stage="rating:/b")  # a key written again replaces
        c.put("k3", "5", 1, 1, "m", "v", 0.0)
    assert (tmp_path / CACHE_FILE).exists() and not (tmp_path / LEGACY_FILE).exists()
    with JudgementCache.in_dir(tmp_path) as c:
        assert len(c) == 3 and "k1" in c and "k9" not in c and c.get("k9") is None
        e = c.get("k1")
        assert (e["key"], e["text"], e["prompt_tokens"], e["usd"], e["logprobs"]) == ("k1", "4.5\nok", 10, 0.5,
                                                                                       [{"t": "4"}])
        assert c.get("k2")["stage"] == "rating:/b"
        assert c.spent("rating:/a") == pytest.approx(0.5) and c.spent("rating:/b") == pytest.approx(0.125)
        assert set(c.get_many(["k1", "k3", "k9"])) == {"k1", "k3"}
    assert cached_keys(tmp_path, ["k1", "k2", "k9"]) == {"k1", "k2"}
    assert cached_keys(tmp_path / "none", ["k1"]) == set()


def test_another_process_s_commits_are_seen_at_once(tmp_path):
    with JudgementCache.in_dir(tmp_path) as mine, JudgementCache.in_dir(tmp_path) as theirs:
        mine.refresh()
        theirs.put("k", "4", 1, 1, "m", "v", 0.0)
        assert mine.refresh() == 1 and "k" in mine and mine.get("k")["text"] == "4"


_ACKING_WRITER = textwrap.dedent("""
    import sys
    from alpagasus.judging.cache import JudgementCache
    c = JudgementCache.in_dir(sys.argv[1])
    for i in range(100000):
        c.put(f"k{i}", "x" * 300, 1, 1, "m", "v", 0.001, stage="rating:/s")
        print(i, flush=True)  # acknowledged: put returned
""")


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _ACKING_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-commit, as likely as not
    proc.wait()
    with JudgementCache.in_dir(tmp_path) as c:
        assert all(f"k{i}" in c for i in range(acked + 1))
        n = len(c)
        assert n >= acked + 1
        assert c.spent("rating:/s") == pytest.approx(0.001 * n)  # the spend of exactly what is stored
        c.put("after", "4", 1, 1, "m", "v", 0.0)  # and it is writable again
        assert "after" in c


def _writer(cache_dir, start, n):
    with JudgementCache.in_dir(cache_dir) as c:
        for i in range(start, start + n):
            c.put(f"k{i}", "x" * 5000, 1, 1, "m", "v", 0.001, stage="rating:/p")


def test_concurrent_processes_all_commit(tmp_path):
    procs = [mp.Process(target=_writer, args=(tmp_path, i * 200, 200)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with JudgementCache.in_dir(tmp_path) as c:
        assert len(c) == 600 and c.having(f"k{i}" for i in range(700)) == {f"k{i}" for i in range(600)}
        assert all(c.get(f"k{i}")["text"] == "x" * 5000 for i in range(0, 600, 37))
        assert c.spent("rating:/p") == pytest.approx(0.6)


_FILLING_WRITER = textwrap.dedent("""
    import resource, signal, sys
    from alpagasus.judging.cache import JudgementCache
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    c = JudgementCache.in_dir(sys.argv[1])
    c.put("k0", "x", 1, 1, "m", "v", 0.0)
    c.sync()
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))  # the disk is full from here
    i = 1
    try:
        while True:
            c.put(f"k{i}", "y" * 2000, 1, 1, "m", "v", 0.0)
            print(i, flush=True)
            i += 1
    except OSError as exc:
        print("ERR", exc.errno, exc.filename, flush=True)
""")


def test_a_failed_write_raises_oserror_naming_the_store_and_keeps_the_rest(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _FILLING_WRITER, str(tmp_path)], capture_output=True, text=True,
                          env=ENV, timeout=60)
    lines = proc.stdout.split()
    assert "ERR" in lines, proc.stdout[-500:] + proc.stderr[-2000:]
    err = lines.index("ERR")
    acked, errno_, filename = int(lines[err - 1]), int(lines[err + 1]), lines[err + 2]
    assert acked > 10 and filename == str(tmp_path / CACHE_FILE) and errno_ != 0
    with JudgementCache.in_dir(tmp_path) as c:
        assert c.having(f"k{i}" for i in range(acked + 2)) == {f"k{i}" for i in range(acked + 1)}


def test_a_legacy_jsonl_cache_is_migrated_and_nothing_is_paid_again(tmp_path, api_key):
    from alpagasus.judging.rating import rate_records
    from alpagasus.testing.fake_openai import FakeOpenAIServer
    from test_rating import judge_cfg, unique_records

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(LEGACY / LEGACY_FILE, cache / LEGACY_FILE)
    legacy = read_jsonl(cache / LEGACY_FILE)
    with open(cache / LEGACY_FILE, "a") as fh:  # what a kill -9 mid-write left
        fh.write('{"key": "torn", "text": "5\\n')
    records = unique_records(40)
    with FakeOpenAIServer(latency_s=0.0, api_key=api_key) as srv:
        ledger = rate_records(records, judge_cfg(srv), {"judge": "fake", "dimension": "accuracy", "max_usd": None},
                              cache, tmp_path / "scores.jsonl", tmp_path / "cost.json", progress=False)
        assert srv.log() == []  # nothing sent: every judgement was in the old cache
    assert ledger["judgements_reused_from_cache"] == 40 and ledger["judgements_paid_this_run"] == 0
    before = read_jsonl(LEGACY / "scores.jsonl")
    after = read_jsonl(tmp_path / "scores.jsonl")
    assert [(r["score"], r["status"], r["raw"]) for r in after] == [(r["score"], r["status"], r["raw"]) for r in before]
    with JudgementCache.in_dir(cache) as c:
        assert len(c) == 40 and "torn" not in c
        assert all(c.get(e["key"]) == e for e in legacy)  # every field, as it was
        stage = legacy[0]["stage"]
        assert c.spent(stage) == pytest.approx(sum(e["usd"] for e in legacy if e.get("stage") == stage))
    # An older process appends to the old file after the migration: its line is imported next.
    with open(cache / LEGACY_FILE, "a") as fh:
        fh.write('\n{"key": "late", "text": "4", "usd": 0.5, "stage": "rating:/late"}\n')
    with JudgementCache.in_dir(cache) as c:
        assert len(c) == 41 and c.get("late")["text"] == "4" and c.spent("rating:/late") == 0.5


def test_a_store_that_is_no_database_or_newer_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CACHE_FILE).write_bytes(b"this is not SQLite\n" * 100)
    with pytest.raises(StoreError) as info:
        JudgementCache.in_dir(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad / CACHE_FILE) in msg and "not a database" in msg, msg
    assert isinstance(info.value, OSError)  # so the CLI prints it as one line, exit 2

    newer = tmp_path / "newer"
    with JudgementCache.in_dir(newer) as c:
        c.put("k", "4", 1, 1, "m", "v", 0.0)
    con = sqlite3.connect(newer / CACHE_FILE)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError) as info:
        JudgementCache.in_dir(newer)
    msg = str(info.value)
    assert "\n" not in msg and str(newer / CACHE_FILE) in msg and f"version {SCHEMA_VERSION + 1}" in msg, msg


def test_rating_cli_names_a_bad_store_in_one_line(tmp_path):
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi."}]))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_FILE).write_text("garbage" * 1000)
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"cache_dir: {tmp_path / 'cache'}\n")  # the store fails before anything is sent
    proc = subprocess.run([sys.executable, "-m", "alpagasus", "rate", "--config", str(REPO / "config/config.yaml"),
                           "--config", str(overlay), "--records", str(records), "--out", str(tmp_path / "s.jsonl")],
                          capture_output=True, text=True, env={**ENV, "OPENAI_API_KEY": "sk-x"}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr and str(tmp_path / "cache" / CACHE_FILE) in lines[-1], proc.stderr[-2000:]


def test_a_shared_cluster_filesystem_gets_the_rollback_journal(tmp_path, monkeypatch):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /shared rw,relatime shared:30 - nfs4 srv:/export rw,vers=4.2\n"
        "41 22 0:51 / /lus rw - lustre 10.0.0.1@tcp:/fs rw,flock\n"
        "42 22 0:52 / /sharedscratch rw - xfs /dev/sdb rw\n")
    monkeypatch.delenv("ALPAGASUS_CACHE_JOURNAL", raising=False)
    assert journal_mode("/shared/project/cache", str(mountinfo)) == "delete"
    assert journal_mode("/lus/cache", str(mountinfo)) == "delete"
    assert journal_mode("/sharedscratch/cache", str(mountinfo)) == "wal"  # a prefix of the name is no mount
    assert journal_mode("/home/cache", str(mountinfo)) == "wal"
    monkeypatch.setenv("ALPAGASUS_CACHE_JOURNAL", "wal")
    assert journal_mode("/shared/project/cache", str(mountinfo)) == "wal"
    monkeypatch.setenv("ALPAGASUS_CACHE_JOURNAL", "delete")
    with JudgementCache.in_dir(tmp_path / "c") as c:  # what opening one on NFS does
        c.put("k", "4", 1, 1, "m", "v", 0.0)
        assert c.journal == "delete"
        assert c._con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert c._con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert not (tmp_path / "c" / (CACHE_FILE + "-wal")).exists()
    monkeypatch.setenv("ALPAGASUS_CACHE_JOURNAL", "sometimes")
    with pytest.raises(StoreError, match="ALPAGASUS_CACHE_JOURNAL"):
        JudgementCache.in_dir(tmp_path / "d")


def test_a_store_that_answers_locked_while_opening_is_opened_again_and_other_errors_are_not(tmp_path, monkeypatch):
    # Two connections opening a new store at once: SQLite may answer an opening statement
    # "database is locked" without waiting (CI, tests/test_openai_batch.py's two runs). Opening is
    # tried again until the busy timeout; any other error is reported at once.
    from alpagasus.judging import cache as cache_mod

    real, calls = cache_mod.JudgementCache._open, []

    def flaky(self, error="database is locked", times=2):
        calls.append(error)
        if len(calls) <= times:
            raise sqlite3.OperationalError(error)
        return real(self)

    monkeypatch.setattr(cache_mod.JudgementCache, "_open", flaky)
    with JudgementCache.in_dir(tmp_path / "a") as c:
        c.put("k", "t", 1, 1, "m", "v", 0.0)
        assert c.get("k")["text"] == "t"
    assert len(calls) == 3
    calls.clear()
    monkeypatch.setattr(cache_mod.JudgementCache, "_open", lambda self: flaky(self, "disk I/O error"))
    with pytest.raises(StoreError, match="cannot open the judgement store .*disk I/O error"):
        JudgementCache.in_dir(tmp_path / "b")
    assert len(calls) == 1
    calls.clear()
    monkeypatch.setattr(cache_mod, "BUSY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(cache_mod.JudgementCache, "_open", lambda self: flaky(self, times=10**6))
    with pytest.raises(StoreError, match="database is locked"):
        JudgementCache.in_dir(tmp_path / "c")
    assert 2 <= len(calls) < 20
