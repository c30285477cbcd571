"""A failing rule's log ends with its error and traceback (Snakemake's console says "check log
file(s) for error details"), for both ways a rule script logs: logs.setup (handlers) and
logs.redirect_output (file descriptors); secrets stay redacted."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO
from test_workflow import overlay, snakemake

SMOKE = REPO / "config" / "smoke.yaml"


def _run(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}, timeout=60)


def test_setup_logs_an_uncaught_exception_redacted(tmp_path):
    log = tmp_path / "logs" / "rule.log"
    secret = "sk-test-" + "ab12" * 6
    proc = _run(f"""
        from alpagasus.core import logs
        logs.setup({str(log)!r})
        import logging; logging.getLogger("x").info("started")
        def inner(): raise ValueError("bad record 7 field 'output' near " + {secret!r})
        inner()
    """, env={"OPENAI_API_KEY": secret})
    assert proc.returncode == 1
    text = log.read_text()
    assert "started" in text
    assert "the job failed: ValueError: bad record 7 field 'output'" in text
    assert "Traceback (most recent call last)" in text and "in inner" in text
    assert text.rstrip().endswith("ValueError: bad record 7 field 'output' near ***")
    assert secret not in text and secret not in proc.stderr
    assert "Traceback" in proc.stderr  # the console still shows it


def test_redirect_output_prints_the_traceback_into_the_log(tmp_path):
    log = tmp_path / "rule.log"
    proc = _run(f"""
        import sys
        from alpagasus.core.logs import redirect_output
        with redirect_output({str(log)!r}):
            print("started")
            raise RuntimeError("config file x is not a valid JSON file")
    """)
    assert proc.returncode == 1
    text = log.read_text()
    assert text.startswith("started")
    assert "Traceback (most recent call last)" in text
    assert text.rstrip().endswith("RuntimeError: config file x is not a valid JSON file")


def test_redirect_output_a_clean_exit_adds_nothing(tmp_path):
    log = tmp_path / "rule.log"
    proc = _run(f"""
        from alpagasus.core.logs import redirect_output
        with redirect_output({str(log)!r}):
            print("done")
    """)
    assert proc.returncode == 0 and log.read_text() == "done\n"


@pytest.mark.slow
def test_failing_rules_logs_hold_their_tracebacks(tmp_path):
    """Real Snakemake jobs that fail: a train job (redirect_output) ends its log with the
    traceback; a test_set job and the data job of another run (logs.setup), whose input is bad,
    end theirs (and the console) with the one line naming it, no traceback."""
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    o = overlay(tmp_path / "o.yaml", {
        "data": {"miniature": {"n_records": 60}},
        "training": {"sizes": {"tiny": {"base_model": str(not_a_model), "tokenizer": "char"}}},
        "generation": {"test_sets_dir": str(tmp_path / "empty")},
    })
    proc = snakemake(tmp_path, "results/smoke/checkpoints/alpagasus-tiny", "results/smoke/test_sets/vicuna.jsonl",
                     "--keep-going", "--configfile", SMOKE, o, check=False)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    for log, error in [("train/alpagasus-tiny.log", str(not_a_model))]:
        path = tmp_path / "results/smoke/logs" / log
        assert f"results/smoke/logs/{log}" in console  # what Snakemake tells the user to read
        text = path.read_text()
        assert "Traceback (most recent call last)" in text, text
        last = text.rstrip().splitlines()[-1]
        assert error in last or error in text.split("Traceback (most recent call last)")[-1], text[-3000:]
    text = (tmp_path / "results/smoke/logs/test_sets/vicuna.log").read_text()
    assert "Traceback" not in text, text
    assert "test set 'vicuna'" in text.rstrip().splitlines()[-1] and "generation.test_sets_dir" in text

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q", "input": ""}]))
    work = tmp_path / "data"
    o = overlay(tmp_path / "d.yaml", {"data": {"source": "local", "local_path": str(bad), "expected_records": None}})
    proc = snakemake(work, "results/alpaca_52k.json", "--configfile", o, check=False)
    assert proc.returncode != 0
    text = (work / "results/logs/alpaca_data.log").read_text()
    assert "Traceback" not in text and "Traceback" not in proc.stdout + proc.stderr
    assert f"{bad}: column 'output' (data.fields.output) does not exist" in text.rstrip().splitlines()[-1]
