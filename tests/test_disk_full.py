"""A full disk under the judgement cache, the claim journal or the results, on real tmpfs mounts
(root only; skipped elsewhere), through the CLI as a user runs it.

What must hold, asserted from the fake server's own log and from what is on disk: every reply
the server was paid for is either in the cache or counted in the ledger as lost in flight
(``replies_lost_unwritable_cache``); the cost file is written, or the error names the path it
could not be written to and the cache's ledger.jsonl holds it; the last line names the full path;
no traceback; a rerun once there is room pays again only for what was lost.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, stored_judgements
from test_rating import judge_cfg, unique_records

from alpagasus.core.io import read_jsonl
from alpagasus.judging.rating import build_requests
from alpagasus.judging.judges import make_judge
from alpagasus.testing.fake_openai import FakeOpenAIServer
from alpagasus.testing.replies import request_key

N = 150  # ~300 bytes a cache line, ~130 bytes of claim journal per key: 45 kB and 20 kB
CONCURRENCY = 4


@pytest.fixture
def tmpfs(tmp_path):
    """mount(path, size): a real filesystem of ``size`` at ``path`` (unmounted afterwards)."""
    mounted = []

    def mount(path, size):
        path.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory):
    """Fill the filesystem of ``directory`` to its last byte."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def grow(path, size="4m"):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def rate_cli(tmp_path, judge, records, out_dir, *debug):
    cfg = {"results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"),
           "data": {"source": "local"}, "judges": judge, "rating": {"judge": "fake"},
           "selection": {"method": "threshold", "threshold": 4.5}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "records.json").write_text(json.dumps(records))
    return subprocess.run(
        [sys.executable, "-m", "alpagasus", "rate", "--config", str(tmp_path / "cfg.yaml"),
         "--records", str(tmp_path / "records.json"), "--out", str(out_dir / "scores.jsonl"),
         "--ledger", str(out_dir / "cost.json"), "--no-progress", *debug],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True, text=True, timeout=120)


def last_line(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]


def cached_keys(cache_dir):
    return {e["key"] for e in stored_judgements(cache_dir)}


def ledger_of_run(tmp_path, out_dir):
    """The run's ledger: its cost file if it could be written, else the cache's history line."""
    cost = out_dir / "cost.json"
    if cost.exists():
        return json.loads(cost.read_text())
    return json.loads((tmp_path / "cache" / "ledger.jsonl").read_text().splitlines()[-1])


def server_paid_judgement_keys(srv, records, judge):
    """The judgement keys of the requests the server was paid for (its log knows only its own key)."""
    cfg = next(iter(judge.values()))
    reqs, _ = build_requests(records, make_judge("fake", cfg), "accuracy", 20000)
    ours = {request_key(cfg["model"], r.messages): r.key for r in reqs}
    paid = srv.paid_counts()
    return {ours[k]: n for k, n in paid.items()}


JOURNAL_LINE = 66  # "+" or "-", a 64-hex key, "\n"


@pytest.mark.parametrize("full, concurrency", [
    # The journal reads +a -a +b -b ...: the line that fills it is a claim (+).
    pytest.param("claims: a claim fails", 1, marks=pytest.mark.slow),
    # +a +b -a +c -b ...: the line that fills it is a release (-), as in the report.
    ("claims: a release fails", 2),
    pytest.param("cache", 4, marks=pytest.mark.slow),
    pytest.param("cache+claims", 4, marks=pytest.mark.slow),  # one small filesystem: whichever fills first
])
def test_a_disk_filling_mid_run_stops_cleanly_and_loses_nothing_unrecorded(tmp_path, tmpfs, api_key, full,
                                                                           concurrency):
    cache = tmp_path / "cache"
    if full.startswith("claims"):
        full_fs = tmpfs(cache / "claims", "4k")      # one page of claim journal; the cache has room
    elif full == "cache":
        # Each committed judgement adds ~3 pages (12 kB) to the store's WAL: 256 kB fill mid-run.
        full_fs = tmpfs(cache, "256k")
        tmpfs(cache / "claims", "1m")                # the cache fills; the journal has room
    else:
        full_fs = tmpfs(cache, "256k")
    out_dir = tmp_path / "out"
    records = unique_records(N)
    with FakeOpenAIServer(latency_s=0.02) as srv:
        judge = judge_cfg(srv, concurrency=concurrency, timeout_s=5)
        proc = rate_cli(tmp_path, judge, records, out_dir)
        assert proc.returncode == 3, proc.stderr[-3000:]
        line = last_line(proc)
        found = re.search(r"cannot write the (judgement cache|claim journal) (\S+): "
                          r"\[Errno 28\] No space left on device", line)
        assert found, line  # the path that is full, not a bare errno
        what, named = found.groups()
        assert named.startswith(f"{full_fs}/"), line
        if full != "cache+claims":
            assert what == ("judgement cache" if full == "cache" else "claim journal"), line
        assert not (out_dir / "scores.jsonl").exists()

        paid = server_paid_judgement_keys(srv, records, judge)
        assert 0 < len(paid) < N and max(paid.values()) == 1
        ledger = json.loads((out_dir / "cost.json").read_text())
        assert ledger["fatal_error"] and named in ledger["fatal_error"]
        kept = cached_keys(cache)
        lost = set(paid) - kept
        assert kept <= set(paid) and ledger["judgements_paid_this_run"] == len(kept)
        assert len(lost) == ledger["replies_lost_unwritable_cache"] <= concurrency
        if full.startswith("claims"):
            assert not lost  # the cache had room for every reply that came back
            if os.sysconf("SC_PAGE_SIZE") == 4096:
                fit = 4096 // JOURNAL_LINE  # whole lines in the page; the next one fails
                assert len(paid) == (fit // 2 if concurrency == 1 else fit // 2 + 1)
        assert not [p for p in (cache / "claims").iterdir() if p.name != ".lock"]  # journal closed

        grow(full_fs)
        (full_fs / "filler").unlink(missing_ok=True)
        rerun = rate_cli(tmp_path, judge, records, out_dir)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        paid_total = server_paid_judgement_keys(srv, records, judge)
    assert len(paid_total) == N
    assert {k for k, n in paid_total.items() if n > 1} == lost  # only the lost were paid again
    assert len(read_jsonl(out_dir / "scores.jsonl")) == N


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before the run", "after the cost file"])
def test_full_results_name_the_file_not_written_and_the_ledger_survives(tmp_path, tmpfs, api_key, when):
    out_dir = tmpfs(tmp_path / "out", "8k")  # the cost file (~2 kB) fits, scores.jsonl (~45 kB) not
    if when == "before the run":
        fill(out_dir)
    records = unique_records(N)
    with FakeOpenAIServer(latency_s=0.01) as srv:
        judge = judge_cfg(srv, concurrency=CONCURRENCY, timeout_s=5)
        proc = rate_cli(tmp_path, judge, records, out_dir)
        assert proc.returncode == 3, proc.stderr[-3000:]
        line = last_line(proc)
        missing = out_dir / ("cost.json" if when == "before the run" else "scores.jsonl")
        assert f"cannot write {missing}: [Errno 28] No space left on device" in line, line
        paid = server_paid_judgement_keys(srv, records, judge)
        assert len(paid) == N and max(paid.values()) == 1
        assert cached_keys(tmp_path / "cache") == set(paid)  # everything paid is kept
        ledger = ledger_of_run(tmp_path, out_dir)
        assert ledger["judgements_paid_this_run"] == N and ledger["replies_lost_unwritable_cache"] == 0
        assert (out_dir / "cost.json").exists() == (when != "before the run")
        assert not (out_dir / "scores.jsonl").exists()
        assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]  # nothing half-written

        grow(out_dir)
        (out_dir / "filler").unlink(missing_ok=True)
        rerun = rate_cli(tmp_path, judge, records, out_dir)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert max(server_paid_judgement_keys(srv, records, judge).values()) == 1  # from the cache
    assert len(read_jsonl(out_dir / "scores.jsonl")) == N


def test_a_full_batch_journal_directory_stops_the_batch_judge_naming_it(tmp_path, tmpfs, api_key):
    from test_openai_batch import judge as batch_judge

    batches = tmpfs(tmp_path / "cache" / "batches", "8k")  # ~1 kB a request line: the input file does not fit
    records = unique_records(30)
    out_dir = tmp_path / "out"
    with FakeOpenAIServer() as srv:
        judge = batch_judge(srv)
        proc = rate_cli(tmp_path, judge, records, out_dir)
        assert proc.returncode == 3, proc.stderr[-3000:]
        line = last_line(proc)
        assert re.search(rf"cannot write {re.escape(str(batches))}/input-\w+\.jsonl: \[Errno 28\] No space left "
                         rf"on device; everything already submitted is resumed by the next run", line), line
        assert srv.batch_api.uploads == {} and srv.log() == []  # nothing sent, nothing paid
        assert json.loads((out_dir / "cost.json").read_text())["fatal_error"].startswith(f"cannot write {batches}/")
        assert not list(batches.glob("input-*"))  # no half-written input file
        grow(batches)
        rerun = rate_cli(tmp_path, judge, records, out_dir)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert srv.batch_api.created == 1 and max(srv.paid_counts().values()) == 1
    assert len(read_jsonl(out_dir / "scores.jsonl")) == 30


@pytest.mark.parametrize("when", ["before the run", "after the cost file"])
def test_pairwise_judging_on_full_results_names_the_file_and_keeps_every_reply(tmp_path, tmpfs, api_key, when):
    """Pairwise judging shares the rating's bookkeeping: a judgements file or cost file that
    cannot be written is named, every paid reply is cached, and a rerun pays nothing."""
    from test_pairwise import answers, judges, make_test_set

    from alpagasus.evaluation.pairwise import IncompleteJudgingError, judge_pair

    out_dir = tmpfs(tmp_path / "out", "8k")  # the cost file fits, 40 judgements (~30 kB) not
    if when == "before the run":
        fill(out_dir)
    items = make_test_set(tmp_path, n=20)
    a, b = answers(tmp_path, "a", items), answers(tmp_path, "b", items, wrong_every=1)

    def judge(srv):
        return judge_pair(a, b, tmp_path / "mini.jsonl", judges(srv), {"judge": "fake"}, tmp_path / "cache",
                          out_dir / "j.jsonl", out_dir / "j.cost.json", model_a="A", model_b="B",
                          testset="mini", progress=False)

    with FakeOpenAIServer() as srv:
        with pytest.raises(IncompleteJudgingError) as err:
            judge(srv)
        missing = out_dir / ("j.cost.json" if when == "before the run" else "j.jsonl")
        assert f"cannot write {missing}: [Errno 28] No space left on device" in str(err.value)
        assert "cached" in str(err.value)
        paid = len(srv.log())
        assert paid == 2 * len(items)
        assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]  # nothing half-written
        history = [json.loads(line) for line in (tmp_path / "cache" / "ledger.jsonl").read_text().splitlines()]
        assert history[-1]["stage"] == "pairwise" and history[-1]["judgements_paid_this_run"] == paid

        grow(out_dir)
        (out_dir / "filler").unlink(missing_ok=True)
        srv.reset_log()
        judge(srv)
        assert srv.log() == []  # everything came from the cache
    assert len(read_jsonl(out_dir / "j.jsonl")) == len(items)
