"""The Batch API judge in the real DAG: real Alpaca records rated through `snakemake`, the rule
killed with SIGKILL during upload, polling or download, then rerun. The rerun must resume the
same batches: the scores equal an uninterrupted run's, and the fake server's own records show
each file uploaded once, each batch created once and each line paid once."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml
from conftest import REPO, shared_path

from alpagasus.core.io import read_jsonl
from alpagasus.judging.rating import rate_records
from alpagasus.testing.fake_batches import BatchPlan
from alpagasus.testing.fake_openai import FakeOpenAIServer

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1"]
N_RECORDS = 60


@pytest.fixture(scope="module")
def alpaca_records():
    records = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())
    return records[:N_RECORDS]


def judges(srv):
    return {"fake": {"backend": "openai_batch", "model": "gpt-fake", "base_url": srv.base_url, "timeout_s": 10,
                     "poll_interval_s": 0.1, "max_poll_interval_s": 0.3, "usd_per_1m_input_tokens": 1.0,
                     "usd_per_1m_output_tokens": 2.0}}


def setup_workdir(tmp_path, records, srv):
    (tmp_path / "alpaca.json").write_text(json.dumps(records))
    cfg = {"data": {"source": "local", "local_path": str(tmp_path / "alpaca.json"), "expected_records": None},
           "judges": judges(srv), "rating": {"judge": "fake", "max_usd": 1.0}}
    (tmp_path / "batch.yaml").write_text(yaml.safe_dump(cfg))


def start(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "results/scores.jsonl", "--configfile",
           str(tmp_path / "batch.yaml"), *args]
    # Its own session: SIGKILL to the group takes snakemake and the rule's script down together.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


def kill_when(proc, condition, what, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def reference_scores(tmp_path, records, api_key):
    """An uninterrupted run of the same judge, on a server of its own."""
    with FakeOpenAIServer(api_key=api_key) as srv:
        rate_records(records, judges(srv), {"judge": "fake", "max_usd": 1.0}, tmp_path / "ref_cache",
                     tmp_path / "ref.jsonl", tmp_path / "ref.cost.json", progress=False)
    return read_jsonl(tmp_path / "ref.jsonl")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, alpaca_records):
    """reference_scores of the kill tests' records, once a module: it depends on neither the
    moment of the kill nor the server's files listing (each test used to rate them again)."""
    key = "sk-test-" + os.urandom(12).hex()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", key)
        return reference_scores(tmp_path_factory.mktemp("reference"), alpaca_records, key)


def in_flight_content(srv):
    return any(c["path"].endswith("/content") and c["status"] is None for c in srv.batch_api.calls)


MOMENTS = {
    # moment: (the server's plan during the killed run, the moment to kill)
    "upload": (BatchPlan(step_s=0.2, upload_latency_s=30), lambda srv: sum(srv.batch_api.uploads.values()) >= 1),
    "create": (BatchPlan(step_s=0.2, create_latency_s=30), lambda srv: srv.batch_api.created >= 1),
    "polling": (BatchPlan(step_s=1.5), lambda srv: any(
        c["path"].startswith("/v1/batches/") and c["method"] == "GET" for c in srv.batch_api.calls)),
    "download": (BatchPlan(step_s=0.2, content_latency_s=30), in_flight_content),
}


# Whether the server lists files matters only where the rerun must look a file up: after an
# upload cut short. At the later moments the journal holds the file's id, so they run on a
# server without GET /v1/files only (the stricter one: a look-up there would fail the test).
KILLS = [("upload", True), ("upload", False), ("create", False), ("polling", False), ("download", False)]


@pytest.mark.slow
@pytest.mark.parametrize(("moment", "list_files"), KILLS,
                         ids=[f"{m}-{'files-listed' if f else 'no-files-list'}" for m, f in KILLS])
def test_kill_dash_9_then_rerun_resumes_the_same_batches(tmp_path, api_key, alpaca_records, reference, moment,
                                                        list_files):
    """On a server without GET /v1/files too: a file whose upload was cut short cannot be
    looked up there, so the rerun uploads it again (free) instead of stopping at the look-up."""
    plan, moment_reached = MOMENTS[moment]
    with FakeOpenAIServer(api_key=api_key) as srv:
        setup_workdir(tmp_path, alpaca_records, srv)
        srv.batch_api.plan = dataclasses.replace(plan, list_files=list_files)
        proc = start(tmp_path)
        kill_when(proc, lambda: moment_reached(srv), moment)
        calls_at_kill = len(srv.batch_api.calls)
        time.sleep(1.0)
        assert len(srv.batch_api.calls) == calls_at_kill, "something of the killed run is still talking to the server"
        assert not (tmp_path / "results/scores.jsonl").exists()

        srv.batch_api.plan = BatchPlan(step_s=0.2, list_files=list_files)
        subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--unlock", "--configfile", str(tmp_path / "batch.yaml")],
                       check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        finish(start(tmp_path, "--rerun-incomplete"))

        uploads = dict(srv.batch_api.uploads)
        created = srv.batch_api.created
        paid = Counter(e["key"] for e in srv.log() if e["paid"])
        file_lists = [c["status"] for c in srv.batch_api.calls if c["method"] == "GET" and c["path"] == "/v1/files"]
    cut_short = moment == "upload"
    # One chunk, uploaded once; where a cut-short upload cannot be looked up, once more.
    assert list(uploads.values()) == [2 if cut_short and not list_files else 1], uploads
    assert file_lists == ([] if not cut_short else [200] if list_files else [404])
    assert created == 1                                   # one batch, created once
    assert len(paid) == N_RECORDS and max(paid.values()) == 1  # every line paid once
    assert read_jsonl(tmp_path / "results/scores.jsonl") == reference
    log = (tmp_path / "results/logs/rate.log").read_text()
    assert "completed" in log and "batch-fake" in log     # the rule's progress is in its log
    cost = json.loads((tmp_path / "results/rating_cost.json").read_text())
    assert cost["judgements_paid_this_run"] == N_RECORDS and cost["status_counts"]["scored"] == N_RECORDS


@pytest.mark.slow
def test_cancelled_batch_is_resubmitted_by_the_rerun(tmp_path, api_key, alpaca_records):
    records = alpaca_records[:20]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with FakeOpenAIServer(api_key=api_key) as srv:
        setup_workdir(tmp_path, records, srv)
        srv.batch_api.plan = BatchPlan(step_s=3)
        proc = start(tmp_path)
        journal = tmp_path / "cache/batches/journal.jsonl"
        kill_when(proc, lambda: journal.exists() and '"event": "created"' in journal.read_text(), "the journaled creation")
        cli = [sys.executable, "-m", "alpagasus", "batches", "--cache-dir", str(tmp_path / "cache")]
        listing = subprocess.run([*cli, "--cancel"], env=env, capture_output=True, text=True, check=True).stdout
        assert "cancel requested for 1 batch" in listing and "cancelling" in listing, listing
        srv.batch_api.plan = BatchPlan(step_s=0.1)
        subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--unlock", "--configfile", str(tmp_path / "batch.yaml")],
                       check=True, capture_output=True, env=env)
        finish(start(tmp_path, "--rerun-incomplete"))
        statuses = [b["status"] for b in srv.batch_api.batch_objects()]
        paid = Counter(e["key"] for e in srv.log() if e["paid"])
    assert len(paid) == 20 and max(paid.values()) == 1
    assert statuses == ["cancelled", "completed"]  # the rerun sent the cancelled requests again
    listing = subprocess.run(cli, env=env, capture_output=True, text=True, check=True).stdout
    assert "completed" in listing
