"""The real DAG through `snakemake`, with the openai judge pointed at the fake server."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alpagasus.data import load_records
from alpagasus.testing.fake_openai import FakeOpenAIServer

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake(workdir: Path, *args, env=None, check=True):
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def overlay(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def planned_jobs(workdir, targets, *args) -> set[str]:
    # Targets before --configfile, which takes every word after it.
    proc = snakemake(workdir, *targets, "-n", *args)
    out = proc.stdout + proc.stderr
    if "Job stats:" not in out:
        assert "Nothing to be done" in out, out
        return set()
    jobs = set()
    for line in out.split("Job stats:")[1].splitlines()[3:]:  # after the header and its rule
        if not line.strip() or line.split()[0] == "total":
            break
        jobs.add(line.split()[0])
    return jobs


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"rating": {"judge": "chatgpt", "treshold": 4.5}}, "'treshold' was unexpected"),
        ({"selection": {"method": "threshold", "threshold": "high"}}, "'high' is not of type"),
        ({"rating": {"judge": "gpt5"}}, "rating.judge: no judge named 'gpt5'"),
        ({"data": {"source": "ftp"}}, "'ftp' is not one of"),
    ],
)
def test_bad_config_stops_before_any_rule_naming_the_key(tmp_path, bad, message):
    proc = snakemake(tmp_path, "-n", "--configfile", overlay(tmp_path / "bad.yaml", bad), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_openai_judge_dag_threshold_change_reruns_only_selection(tmp_path, api_key):
    targets = ["results/filtered_9k.json", "results/random_9k.json", "results/selection_summary.json"]
    with FakeOpenAIServer(api_key=api_key) as srv:
        base = {
            "data": {"source": "miniature", "miniature": {"n_records": 150}},
            "judges": {"fake": {"backend": "openai", "model": "gpt-fake", "base_url": srv.base_url,
                                "concurrency": 8, "timeout_s": 5, "usd_per_1m_input_tokens": 1.0,
                                "usd_per_1m_output_tokens": 2.0}},
            "rating": {"judge": "fake", "max_usd": 1.0},
        }
        first = overlay(tmp_path / "first.yaml", base)
        proc = snakemake(tmp_path, *targets, "--configfile", first)
        unique = len({(r["instruction"], r["input"], r["output"]) for r in load_records(tmp_path / "results/alpaca_52k.json")})
        assert len(srv.log()) == unique and max(srv.paid_counts().values()) == 1
        scores_mtime = (tmp_path / "results/scores.jsonl").stat().st_mtime_ns
        kept_45 = len(load_records(tmp_path / "results/filtered_9k.json"))

        srv.reset_log()
        second = overlay(tmp_path / "second.yaml", {**base, "selection": {"method": "threshold", "threshold": 4.0}})
        assert planned_jobs(tmp_path, targets, "--configfile", second) == {"select", "random_baseline", "selection_summary"}
        # Budget and limits are not part of a judgement: changing them reruns nothing.
        third = overlay(tmp_path / "third.yaml", {**base, "rating": {"judge": "fake", "max_usd": 5.0},
                                                  "judges": {"fake": {**base["judges"]["fake"], "concurrency": 2}}})
        assert planned_jobs(tmp_path, targets, "--configfile", third) == set()

        proc2 = snakemake(tmp_path, *targets, "--configfile", second)
        assert srv.log() == []  # the threshold change cost nothing
        assert (tmp_path / "results/scores.jsonl").stat().st_mtime_ns == scores_mtime
        assert len(load_records(tmp_path / "results/filtered_9k.json")) > kept_45

    # The key was in the environment of both runs; it must be in no file and no log.
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and api_key.encode() in p.read_bytes()]
    assert leaks == []
    for p in (proc, proc2):
        assert api_key not in p.stdout + p.stderr


def test_snakemake_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out[-4000:]
