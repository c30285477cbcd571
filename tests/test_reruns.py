"""A result rewritten with the same content reruns nothing that depends on it (rules/common.smk,
"reruns by content"), through real snakemake runs of a small miniature."""
import json
import re

import pytest
import yaml
from conftest import REPO
from test_workflow import planned_jobs, snakemake

# Snakemake's own input checksums cover files up to 1 MB; the paper's selections are larger, so
# the test switches them off: only our content key may keep a training from rerunning.
NO_SNAKEMAKE_CHECKSUMS = ("--max-checksum-file-size", "1")
TARGET = "results/winrate_tiny.csv"


def _run(work, *args):
    proc = snakemake(work, *args, *NO_SNAKEMAKE_CHECKSUMS, "--configfile", REPO / "config/smoke.yaml",
                     work / "o.yaml")
    return proc.stdout + proc.stderr


def _executed(log: str) -> set[str]:
    return set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", log, re.M))


def _threshold(work, value):
    cfg = {"results_dir": "results", "cache_dir": "cache",
           "data": {"source": "miniature", "miniature": {"n_records": 200, "n_test": 20}},
           "selection": {"threshold": value, "extra": None},
           "training": {"variants": ["alpagasus", "random"], "sizes": {"tiny": {"max_steps": 2}}},
           "evaluation": {"comparisons": [["alpagasus", "random"]], "bootstrap_samples": 200}}
    (work / "o.yaml").write_text(yaml.safe_dump(cfg))


def _kept(work, threshold):
    rows = [json.loads(line) for line in (work / "results/scores.jsonl").read_text().splitlines()]
    return [r["index"] for r in rows if r["score"] is not None and r["score"] >= threshold]


@pytest.mark.slow
def test_a_threshold_edit_that_keeps_the_records_retrains_nothing_and_one_that_changes_them_does(tmp_path):
    work = tmp_path
    _threshold(work, 4.5)
    assert {"train", "generate", "judge_pair"} <= _executed(_run(work, TARGET))
    ckpt = work / "results/checkpoints/alpagasus-tiny/train_log.json"
    trained = {v: (work / f"results/checkpoints/{v}-tiny/train_log.json").stat().st_mtime_ns
               for v in ("alpagasus", "random")}
    answers = (work / "results/generations/alpagasus-tiny/mini.jsonl").stat().st_mtime_ns
    selected = (work / "results/filtered_9k.json").stat().st_mtime_ns
    # The miniature's verifier writes no score in [4.0, 4.5): the same records either way.
    assert _kept(work, 4.0) == _kept(work, 4.5)
    assert _kept(work, 1.0) != _kept(work, 4.5)

    # One run after the edit: the selection is rewritten (its params changed), the same bytes.
    _threshold(work, 4.0)
    ran = _executed(_run(work, TARGET))
    assert "select" in ran and not ran & {"train", "generate", "judge_pair", "winrate"}, ran
    assert (work / "results/filtered_9k.json").stat().st_mtime_ns != selected
    assert {v: (work / f"results/checkpoints/{v}-tiny/train_log.json").stat().st_mtime_ns
            for v in trained} == trained
    assert (work / "results/generations/alpagasus-tiny/mini.jsonl").stat().st_mtime_ns == answers
    assert planned_jobs(work, [TARGET], *NO_SNAKEMAKE_CHECKSUMS, "--configfile", REPO / "config/smoke.yaml",
                        work / "o.yaml") == set()

    # Other records: once the selection is written, a dry run retrains both variants, for that.
    _threshold(work, 1.0)
    _run(work, "results/filtered_9k.json", "results/random_9k.json")
    dry = _run(work, "-n", TARGET)
    assert {"train", "generate", "judge_pair", "winrate"} <= set(re.findall(r"^rule (\w+):$", dry, re.M))
    reasons = re.findall(r"rule train:\n(?:    .*\n)*?    reason: (.*)", dry)
    assert len(reasons) == 2 and all("Params have changed" in r for r in reasons), reasons
    assert ckpt.stat().st_mtime_ns == trained["alpagasus"]  # a dry run
