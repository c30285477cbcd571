"""A result rewritten with the same content reruns nothing that depends on it (rules/common.smk,
"reruns by content"), through real snakemake runs of a small miniature."""
import json
import re
import shutil

import pytest
import yaml
from conftest import NO_SNAKEMAKE_CHECKSUMS, REPO, SMALL_DAG_TARGET as TARGET, small_dag_config
from test_workflow import planned_jobs, snakemake


def _run(work, *args):
    proc = snakemake(work, *args, *NO_SNAKEMAKE_CHECKSUMS, "--configfile", REPO / "config/smoke.yaml",
                     work / "o.yaml")
    return proc.stdout + proc.stderr


def _executed(log: str) -> set[str]:
    return set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", log, re.M))


def _threshold(work, value):
    # conftest.small_dag's config (200 records, two variants, 4 steps), with this threshold.
    (work / "o.yaml").write_text(yaml.safe_dump(small_dag_config(threshold=value)))


def _kept(work, threshold):
    rows = [json.loads(line) for line in (work / "results/scores.jsonl").read_text().splitlines()]
    return [r["index"] for r in rows if r["score"] is not None and r["score"] >= threshold]


@pytest.mark.slow
def test_a_threshold_edit_that_keeps_the_records_retrains_nothing_and_one_that_changes_them_does(tmp_path, small_dag):
    # The first run, at 4.5, is conftest.small_dag's (shared with tests/test_tracking.py): this
    # test goes on in a copy of it.
    first, first_log, _ = small_dag
    work = tmp_path / "work"
    shutil.copytree(first, work, symlinks=True)
    assert yaml.safe_load((work / "o.yaml").read_text()) == small_dag_config(threshold=4.5)
    assert {"train", "generate", "judge_pair"} <= _executed(first_log)
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
