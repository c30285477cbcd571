"""The four AlpaGasus test sets: pinned files, checksums, normalisation to what the judge sees."""
import hashlib
import io
import json
import urllib.request

import pytest
from conftest import SHARED, shared_path

from alpagasus.core.io import read_jsonl
from alpagasus.data import DataError
from alpagasus.data.testsets import (BASE_URL, REPO_COMMIT, TEST_SETS, ChecksumError, fetch_raw, load_test_set, parse, write_test_set)

COUNTS = {"vicuna": 80, "koala": 180, "wizardlm": 218, "sinstruct": 252}

FIXTURES = {
    "vicuna": [{"question_id": 1, "text": "How can I improve my time management skills?", "category": "generic"},
               {"question_id": 2, "text": "What are the most effective ways to deal with stress?", "category": "generic"}],
    "koala": [{"id": "koala_1", "prompt": "Take MLK speech and rewrite it."}],
    "wizardlm": [{"idx": 1, "Skill": "Math", "Difficulty": 3, "Instruction": "If a car travels 120 miles in 2 hours, what is its speed?"}],
    "sinstruct": [
        {"id": "user_oriented_task_0", "motivation_app": "Grammarly", "instruction": "Fix the grammar.",
         "instances": [{"input": "He go to school.", "output": "He goes to school."}]},
        {"id": "user_oriented_task_1", "motivation_app": "Netflix", "instruction": "Suggest a film for tonight.",
         "instances": [{"input": "", "output": "Up."}]},
    ],
}


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_pinned_sources_are_the_alpagasus_commit():
    assert REPO_COMMIT == "95ad3e52510df8c0a2f0dd6cbe50b501acde83a1"
    for name, src in TEST_SETS.items():
        assert src.url == f"{BASE_URL}{name}_test_set.jsonl"
        assert src.url.startswith(f"https://raw.githubusercontent.com/gpt4life/alpagasus/{REPO_COMMIT}/test_data/")
        assert src.count == COUNTS[name] and len(src.sha256) == 64


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_files_have_the_papers_counts(name):
    local = shared_path("data", "test_sets")
    items = load_test_set(name, local_dir=local)
    assert len(items) == COUNTS[name]
    assert len({it["id"] for it in items}) == len(items)
    for it in items:
        assert set(it) >= {"id", "instruction", "input", "question"} and it["question"].strip()
        if name != "sinstruct":
            assert it["input"] == "" and it["question"] == it["instruction"]
        elif it["input"]:
            assert it["question"] == f"{it['instruction']} Input: {it['input']}"
        else:
            assert it["question"] == it["instruction"]
    if name == "sinstruct":
        assert 0 < sum(bool(it["input"]) for it in items) < len(items)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixtures_normalise_to_id_instruction_input_question(name):
    items = parse(name, _jsonl(FIXTURES[name]), verify_count=False)
    assert [set(it) for it in items] == [{"id", "instruction", "input", "question"}] * len(FIXTURES[name])
    assert all(isinstance(it["id"], str) for it in items)
    if name == "sinstruct":
        assert items[0]["question"] == "Fix the grammar. Input: He go to school."
        assert items[0]["input"] == "He go to school."
        assert items[1]["question"] == "Suggest a film for tonight." and items[1]["input"] == ""
    if name == "vicuna":
        assert items[0] == {"id": "1", "instruction": FIXTURES["vicuna"][0]["text"], "input": "",
                            "question": FIXTURES["vicuna"][0]["text"]}


def test_a_different_file_is_refused_with_its_checksum(tmp_path):
    (tmp_path / "koala_test_set.jsonl").write_bytes(_jsonl(FIXTURES["koala"]))
    with pytest.raises(ChecksumError, match=r"koala_test_set.jsonl has sha256 [0-9a-f]{64}, expected c8cda5c5"):
        fetch_raw("koala", local_dir=tmp_path)
    # Unchecked (fixtures only), the same file parses.
    assert len(load_test_set("koala", local_dir=tmp_path, verify=False)) == 1


def test_missing_local_file_and_bad_lines_name_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match=r"test set 'vicuna': .*vicuna_test_set.jsonl not found \(generation.test_sets_dir"):
        fetch_raw("vicuna", local_dir=tmp_path)
    bad = _jsonl([{"question_id": 1}])
    with pytest.raises(ValueError, match=r"line 1 has no field 'text'"):
        parse("vicuna", bad, "v.jsonl", verify_count=False)
    with pytest.raises(ValueError, match=r"v.jsonl: line 2 is not valid JSON"):
        parse("vicuna", _jsonl(FIXTURES["vicuna"][:1]) + b"{oops\n", "v.jsonl", verify_count=False)
    with pytest.raises(ValueError, match=r"2 items, expected 80"):
        parse("vicuna", _jsonl(FIXTURES["vicuna"]), "v.jsonl")
    with pytest.raises(ValueError, match="unknown test set 'mini'"):
        parse("mini", b"")


def test_download_is_checked_against_the_pin(monkeypatch, tmp_path):
    real = SHARED / "data" / "test_sets" / "vicuna_test_set.jsonl"
    payload = real.read_bytes() if real.exists() else None
    served = []

    def fake_urlopen(url, timeout=None):
        served.append(url)
        return io.BytesIO(payload if payload is not None and "vicuna" in url else b"tampered\n")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(ChecksumError, match="koala"):
        fetch_raw("koala")
    assert served == [TEST_SETS["koala"].url]
    if payload is not None:
        out = tmp_path / "t" / "vicuna.jsonl"
        assert write_test_set("vicuna", out) == 80
        assert hashlib.sha256(payload).hexdigest() == TEST_SETS["vicuna"].sha256
        rows = read_jsonl(out)
        assert len(rows) == 80 and rows[0]["id"] == "1"
        assert [p.name for p in out.parent.iterdir()] == ["vicuna.jsonl"]  # nothing half-written left


def test_offline_the_download_says_to_set_test_sets_dir(monkeypatch, tmp_path):
    import socket
    import urllib.error

    import alpagasus.data.testsets as testsets

    tried, slept = [], []

    def no_network(url, timeout=None):
        tried.append(url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(testsets.time, "sleep", slept.append)
    with pytest.raises(DataError) as info:
        write_test_set("koala", tmp_path / "koala.jsonl")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"test set 'koala': could not download {TEST_SETS['koala'].url} (3 attempts; "
                              f"the last: [Errno -2] Name or service not known); without internet, set "
                              f"generation.test_sets_dir to a folder holding vicuna_test_set.jsonl, "
                              f"koala_test_set.jsonl, wizardlm_test_set.jsonl, sinstruct_test_set.jsonl"), message
    # Where a copy lies beside the checkout (../shared/data/test_sets), the message names it.
    assert (f"a copy of all four is in {SHARED / 'data' / 'test_sets'}" in message) == \
        (SHARED / "data" / "test_sets" / "koala_test_set.jsonl").is_file()
    assert len(tried) == 3 and slept == [1, 2]  # no wait after the last attempt
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_test_set_rule_normalises_the_four_sets_and_leaves_mini_alone(tmp_path):
    import subprocess
    import sys

    import yaml
    from conftest import REPO

    local = shared_path("data", "test_sets")
    overlay = tmp_path / "local.yaml"
    overlay.write_text(yaml.safe_dump({"generation": {"test_sets_dir": str(local)}}))
    targets = [f"results/test_sets/{n}.jsonl" for n in sorted(COUNTS)]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", *targets, "--configfile", str(overlay)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name, n in COUNTS.items():
        assert len(read_jsonl(tmp_path / "results" / "test_sets" / f"{name}.jsonl")) == n
        assert (tmp_path / "results" / "logs" / "test_sets" / f"{name}.log").is_file()
    # `mini` is the data rule's (mini_test_set), never this one's.
    dry = subprocess.run([*cmd[:7], "results/test_sets/mini.jsonl", "-n", "--configfile", str(overlay)],
                         capture_output=True, text=True, timeout=300)
    assert "mini_test_set" in dry.stdout + dry.stderr and "rule test_set:" not in dry.stdout + dry.stderr
