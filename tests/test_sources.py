"""Bring your own instruction set: local JSON/JSONL/Parquet/CSV, saved datasets, the Hub at a
pinned revision, chat messages, field mapping; every bad row is one error naming the source,
the row and the column. Nothing here reaches the network: the Hub path runs the real
snapshot_download against a cache laid out as the Hub leaves it, or an injected fetch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, shared_path

from alpagasus.core import config as config_mod
from alpagasus.data import DataError, load_records, write_records
from alpagasus.data.acquire import obtain_alpaca
from alpagasus.data.sources import read_hub, read_local

DOLLY_FIELDS = {"instruction": "instruction", "input": "context", "output": "response"}
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A test that tried the network would fail instead of hanging or passing by luck."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def dolly_rows(n=12):
    """Rows in Dolly-15k's own columns and order; every third has a context."""
    cats = ["open_qa", "closed_qa", "brainstorming", "classification"]
    return [{"instruction": f"Question {i}: what is {i} + {i}?",
             "context": f"Some passage {i}, with a comma." if i % 3 == 0 else "",
             "response": f"{2 * i}", "category": cats[i % len(cats)]} for i in range(n)]


def as_records(rows):
    """What the pipeline must make of Dolly rows: Alpaca's fields, category kept, the row number."""
    return [{"instruction": r["instruction"], "input": r["context"], "output": r["response"],
             "category": r["category"], "source_row": i} for i, r in enumerate(rows)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format ``path``'s extension names (the way users' files come)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pandas as pd

        df = pd.DataFrame(rows)
        df.to_parquet(path, index=False) if path.suffix == ".parquet" else df.to_csv(path, index=False)
    return path


def obtain(tmp_path, data_cfg, **kwargs):
    dest = tmp_path / "out" / "alpaca_52k.json"
    summary = obtain_alpaca(data_cfg, dest, tmp_path / "dl", **kwargs)
    return json.loads(dest.read_text()), summary


def local(path, **cfg):
    return {"source": "local", "local_path": str(path), "fields": DOLLY_FIELDS, **cfg}


# --- local files in every format ----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet", ".csv"])
def test_dolly_columns_in_every_format_map_onto_records(tmp_path, suffix):
    rows = dolly_rows()
    path = write_rows(tmp_path / f"dolly{suffix}", rows)
    records, summary = obtain(tmp_path, local(path))
    assert records == as_records(rows)  # numbers stay strings in CSV; empty contexts stay ""
    assert [list(r) for r in records[:1]] == [["instruction", "input", "output", "category", "source_row"]]
    assert summary["records"] == summary["source_rows"] == len(rows) and summary["dropped"] == {}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_released_dolly_3k_in_dolly_columns_round_trips(tmp_path, suffix):
    released = json.loads(shared_path("data", "alpagasus", "dolly_3k.json").read_text())
    assert len(released) == 2996
    rows = [{"instruction": r["instruction"], "context": r["input"], "response": r["output"],
             "category": r["category"]} for r in released]
    records, _ = obtain(tmp_path, local(write_rows(tmp_path / f"dolly{suffix}", rows), empty_output="error"))
    assert [{k: r[k] for k in ("instruction", "category", "input", "output")} for r in records] == released
    assert [r["source_row"] for r in records] == list(range(2996))


def test_saved_dataset_directory_reads_like_a_file(tmp_path):
    import datasets

    rows = dolly_rows()
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    records, _ = obtain(tmp_path, local(tmp_path / "saved"))
    assert records == as_records(rows)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)}
                         ).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match="splits train, test; save the one split"):
        read_local(tmp_path / "two")


def test_a_set_without_an_input_column(tmp_path):
    rows = [{"prompt": "Say hi.", "completion": "hi", "id": "a1"}]
    path = write_rows(tmp_path / "p.jsonl", rows)
    records, _ = obtain(tmp_path, {"source": "local", "local_path": str(path),
                                   "fields": {"instruction": "prompt", "input": None, "output": "completion"}})
    assert records == [{"instruction": "Say hi.", "input": "", "output": "hi", "id": "a1", "source_row": 0}]


# --- chat messages --------------------------------------------------------------------------


def chat(*turns, system=None):
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [{"role": r, "content": c} for r, c in turns]


def test_messages_first_user_turn_and_reply_become_a_record(tmp_path):
    rows = [
        {"messages": chat(("user", "Name a colour."), ("assistant", "Blue.")), "source": "a"},
        {"messages": chat(("user", "Add 2 and 2."), ("assistant", "4"), system="Be brief."), "source": "b"},
        # ShareGPT's shape
        {"messages": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}], "source": "c"},
    ]
    for suffix in (".jsonl", ".parquet"):
        if suffix == ".parquet":
            rows = rows[:2]  # Arrow needs one struct shape per column
        path = write_rows(tmp_path / f"chat{suffix}", rows)
        records, _ = obtain(tmp_path, {"source": "local", "local_path": str(path), "format": "messages"})
        assert records[:2] == [
            {"instruction": "Name a colour.", "input": "", "output": "Blue.", "system": "", "source": "a", "source_row": 0},
            {"instruction": "Add 2 and 2.", "input": "", "output": "4", "system": "Be brief.", "source": "b", "source_row": 1},
        ]
        if suffix == ".jsonl":
            assert records[2] == {"instruction": "Hi?", "input": "", "output": "Hello.", "system": "",
                                  "source": "c", "source_row": 2}
    assert len(records) == 2


def test_multi_turn_is_an_error_naming_the_row_or_dropped_and_counted(tmp_path):
    rows = [{"messages": chat(("user", "a"), ("assistant", "b"))},
            {"messages": chat(("user", "c"), ("assistant", "d"), ("user", "e"), ("assistant", "f"))},
            {"messages": chat(("user", "g"), ("assistant", "h"), system="s")}]
    path = write_rows(tmp_path / "chat.jsonl", rows)
    cfg = {"source": "local", "local_path": str(path), "format": "messages"}
    with pytest.raises(DataError, match=r"chat.jsonl: row 1: column 'messages': a multi-turn conversation \(4 messages"):
        obtain(tmp_path, cfg)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    records, summary = obtain(tmp_path, {**cfg, "multi_turn": "drop"})
    assert [(r["instruction"], r["source_row"]) for r in records] == [("a", 0), ("g", 2)]
    assert summary["dropped"] == {"multi_turn": 1} and summary["source_rows"] == 3


@pytest.mark.parametrize("messages, expected", [
    ([], r"row 0: column 'messages': expected a non-empty list"),
    (None, r"row 0: column 'messages': expected a non-empty list .* got null"),
    ([{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}], "expected a user turn then an assistant turn"),
    ([{"role": "user", "content": "x"}], "expected a user turn then an assistant turn .* got user"),
    ([{"role": "user", "content": None}, {"role": "assistant", "content": "y"}], r"message 0 \(user\): content is null"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}], r"column 'messages': the assistant turn: empty"),
])
def test_bad_chat_records(tmp_path, messages, expected):
    path = write_rows(tmp_path / "chat.jsonl", [{"messages": messages}])
    with pytest.raises(DataError, match=expected):
        obtain(tmp_path, {"source": "local", "local_path": str(path), "format": "messages", "empty_output": "error"})


# --- errors: one line, source + row + column, no output -------------------------------------


@pytest.mark.parametrize("rows, suffix, cfg, expected", [
    (dolly_rows(2), ".jsonl", {"fields": {"output": "answer"}},
     r"column 'answer' \(data.fields.output\) does not exist \(columns: instruction, context, response, category\)"),
    (dolly_rows(2), ".csv", {"fields": {"input": "ctx"}}, r"dolly.csv: column 'ctx' \(data.fields.input\) does not exist"),
    ([*dolly_rows(2), {"instruction": "x", "context": None, "response": "y"}], ".jsonl", {},
     r"dolly.jsonl: row 2: column 'context' \(input\): null, expected a string"),
    ([*dolly_rows(1), {"instruction": "x", "context": "", "response": 7}], ".jsonl", {},
     r"row 1: column 'response' \(output\): expected a string, got int"),
    ([{"instruction": "x", "context": "", "response": 7, "category": "c"}], ".parquet", {},
     r"dolly.parquet: row 0: column 'response' \(output\): expected a string, got int"),
    ([*dolly_rows(3), {"instruction": "x", "context": "", "response": None, "category": "c"}], ".parquet", {},
     r"dolly.parquet: row 3: column 'response' \(output\): null"),
    ([*dolly_rows(1), {"instruction": " ", "context": "", "response": "y", "category": "c"}], ".csv", {},
     r"dolly.csv: row 1: column 'instruction': empty"),
    ([*dolly_rows(1), {"instruction": "x", "context": "", "response": "", "category": "c"}], ".csv",
     {"empty_output": "error"}, r"dolly.csv: row 1: column 'response' \(output\): empty"),
    ([*dolly_rows(1), {"instruction": "x", "context": ""}], ".jsonl", {}, r"row 1: column 'response' \(output\): missing"),
    ([*dolly_rows(1), "text"], ".jsonl", {}, r"row 1: expected an object, got str"),
    ([{**r, "source_row": 5} for r in dolly_rows(1)], ".jsonl", {}, r"column 'source_row' would be overwritten"),
    ([{**r, "output": "old"} for r in dolly_rows(1)], ".jsonl", {}, r"column 'output' would be overwritten"),
    ([], ".json", {}, "the source holds no rows"),
])
def test_bad_rows_are_one_error_and_leave_no_output(tmp_path, rows, suffix, cfg, expected):
    path = write_rows(tmp_path / f"dolly{suffix}", rows)
    dest = tmp_path / "out" / "alpaca_52k.json"
    dest.parent.mkdir()
    dest.write_text("previous good output")
    with pytest.raises(DataError, match=expected) as info:
        obtain_alpaca({**local(path), **cfg, "fields": {**DOLLY_FIELDS, **cfg.get("fields", {})}}, dest, tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert dest.read_text() == "previous good output"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["alpaca_52k.json"]


def test_file_level_errors(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"unknown format '.txt'; data.source local reads .json, .jsonl, .parquet, .csv"):
        read_local(tmp_path / "a.txt")
    (tmp_path / "b.jsonl").write_text('{"instruction": "a"}\n\n{"instruction": \n')
    with pytest.raises(DataError, match=r"b.jsonl: line 3 \(row 1\): not valid JSON"):
        read_local(tmp_path / "b.jsonl")
    (tmp_path / "c.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"c.parquet: cannot be read as parquet"):
        read_local(tmp_path / "c.parquet")
    (tmp_path / "d.csv").write_text("instruction,instruction\na,b\n")
    with pytest.raises(DataError, match=r"d.csv: the header names column\(s\) 'instruction' more than once"):
        read_local(tmp_path / "d.csv")
    with pytest.raises(DataError, match="no such file"):
        read_local(tmp_path / "missing.csv")


def test_empty_outputs_kept_dropped_or_refused(tmp_path):
    rows = dolly_rows(4)
    rows[1]["response"] = ""
    path = write_rows(tmp_path / "d.jsonl", rows)
    kept, _ = obtain(tmp_path, local(path, empty_output="keep"))
    assert len(kept) == 4 and kept[1]["output"] == ""
    dropped, summary = obtain(tmp_path, local(path, empty_output="drop"))
    assert [r["source_row"] for r in dropped] == [0, 2, 3] and summary["dropped"] == {"empty_output": 1}
    with pytest.raises(DataError, match="row 1: column 'response' .output.: empty"):
        obtain(tmp_path, local(path, empty_output="error"))


# --- the Hub ----------------------------------------------------------------------------------


def fake_hub_cache(cache: Path, repo="fake/dolly", commit=SHA, tags=("v1.0",)) -> Path:
    """A dataset repository laid out in ``cache`` as huggingface_hub's snapshot_download leaves it:
    two configs, the default one with train and test splits."""
    folder = cache / f"datasets--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / commit
    (snap / "data").mkdir(parents=True)
    (snap / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train.jsonl\n"
        "  - split: test\n    path: data/test.jsonl\n- config_name: chat\n  data_files: chat.jsonl\n---\n# fake\n")
    write_rows(snap / "data" / "train.jsonl", dolly_rows(10))
    write_rows(snap / "data" / "test.jsonl", dolly_rows(3))
    write_rows(snap / "chat.jsonl", [{"messages": chat(("user", "hi"), ("assistant", "yo"))}])
    (folder / "refs").mkdir()
    for tag in tags:
        (folder / "refs" / tag).write_text(commit)
    return snap


def hub_cfg(**hub):
    return {"source": "hub", "fields": DOLLY_FIELDS, "hub": {"path": "fake/dolly", "revision": SHA, **hub}}


def test_hub_dataset_at_a_commit_or_tag_through_the_real_download_code(tmp_path, caplog):
    fake_hub_cache(tmp_path / "hub")
    records, summary = obtain(tmp_path, hub_cfg(split="train"), hub_cache_dir=tmp_path / "hub")
    assert records == as_records(dolly_rows(10))
    assert summary["hub"] == {"path": "fake/dolly", "name": None, "revision": SHA, "split": "train", "commit": SHA}
    assert summary["origin"] == f"hub fake/dolly (revision {SHA}, split train)"
    # A tag resolves through the cache's refs; the commit it meant is recorded.
    test, summary = obtain(tmp_path, hub_cfg(revision="v1.0", split="test"), hub_cache_dir=tmp_path / "hub")
    assert test == as_records(dolly_rows(3)) and summary["hub"]["commit"] == SHA
    assert "revision 'v1.0' is not a commit sha" in caplog.text
    # A config of the repository, in chat format; split defaults to train.
    chat_records, _ = obtain(tmp_path, {"source": "hub", "format": "messages",
                                        "hub": {"path": "fake/dolly", "revision": "v1.0", "name": "chat"}},
                             hub_cache_dir=tmp_path / "hub")
    assert chat_records == [{"instruction": "hi", "input": "", "output": "yo", "system": "", "source_row": 0}]


@pytest.mark.parametrize("hub, expected", [
    ({"split": "validation"}, r"hub fake/dolly \(revision 0123.*, split validation\): split 'validation' does not exist \(splits: train, test\)"),
    ({"name": "nope"}, r"config 'nope' does not exist \(configs: default, chat\)"),
    ({"revision": "v2.0"}, r"revision 'v2.0' is not in the cache .* and the Hub could not be reached"),
    ({"revision": "f" * 40}, r"revision 'f{40}' is not in the cache"),
])
def test_hub_split_config_or_revision_that_does_not_exist(tmp_path, hub, expected):
    fake_hub_cache(tmp_path / "hub")
    with pytest.raises(DataError, match=expected) as info:
        obtain(tmp_path, hub_cfg(**hub), hub_cache_dir=tmp_path / "hub")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out" / "alpaca_52k.json").exists()


def test_hub_errors_of_the_download_itself(tmp_path):
    import httpx2
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/datasets/x"))

    def raising(exc):
        def fetch(path, revision, cache_dir):
            raise exc
        return fetch

    with pytest.raises(DataError, match=r"hub fake/dolly \(revision abc, split train\): revision 'abc' does not exist"):
        read_hub({"path": "fake/dolly", "revision": "abc"}, tmp_path, raising(RevisionNotFoundError("x", response=response)))
    with pytest.raises(DataError, match=r"no such dataset, or it is gated or private and needs a token in the HF_TOKEN"):
        read_hub({"path": "fake/dolly", "revision": "abc"}, tmp_path, raising(RepositoryNotFoundError("x", response=response)))
    with pytest.raises(DataError, match=r"download failed \(connection reset\)"):
        read_hub({"path": "fake/dolly", "revision": "abc"}, tmp_path, raising(ConnectionResetError("connection reset")))
    # What the injected fetch returns is read by the same code as a real download.
    snap = fake_hub_cache(tmp_path / "hub")
    rows = read_hub({"path": "fake/dolly", "revision": "abc", "split": "test"}, tmp_path, lambda *a: snap)
    assert rows.rows == dolly_rows(3) and rows.details["hub"]["commit"] == SHA


def test_hub_revision_is_required_by_the_schema():
    base = config_mod.load()
    with pytest.raises(config_mod.ConfigError, match=r"config data.hub: 'revision' is a required property"):
        config_mod.validate(config_mod.merge(base, {"data": {"source": "hub", "hub": {"path": "a/b"}}}))


# --- the Alpaca path is unchanged -----------------------------------------------------------


def test_alpaca_52k_unchanged_but_for_source_row(tmp_path):
    from alpagasus.judging.judges import make_judge
    from alpagasus.judging.rating import build_requests

    path = shared_path("data", "alpaca", "alpaca_data.json")
    original = load_records(path)
    cfg = config_mod.load()["data"]
    records, summary = obtain(tmp_path, {**cfg, "source": "local", "local_path": str(path)})
    assert summary["records"] == 52002 and summary["dropped"] == {}
    assert [r.pop("source_row") for r in records] == list(range(52002))
    assert records == original
    write_records(tmp_path / "stripped.json", records)  # the validated file of before, to the byte
    before = tmp_path / "before.json"
    write_records(before, original)
    assert (tmp_path / "stripped.json").read_bytes() == before.read_bytes()
    # The rating cache keys hash the prompt: source_row is not in it.
    judge = make_judge("chatgpt", config_mod.load()["judges"]["chatgpt"])
    with_row = load_records(tmp_path / "out" / "alpaca_52k.json")[:500]
    assert [q.key for q in build_requests(with_row, judge, "accuracy", 20000)[0]] == \
        [q.key for q in build_requests(original[:500], judge, "accuracy", 20000)[0]]


# --- the Dolly overlay and the DAG on a Dolly-format file -----------------------------------


def snakemake(workdir, *args, env=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout + proc.stderr


def test_dolly_overlay_plans_the_papers_experiment(tmp_path):
    cfg = config_mod.load(REPO / "config" / "config.yaml", REPO / "config" / "dolly.yaml")
    assert cfg["results_dir"] == "results/dolly" and cfg["data"]["hub"]["path"] == "databricks/databricks-dolly-15k"
    assert len(cfg["data"]["hub"]["revision"]) == 40
    out = snakemake(tmp_path, "results/dolly/winrate_7b.csv", "-n", "--configfile", REPO / "config" / "dolly.yaml")
    for job in ("alpaca_data", "rate", "select", "train", "generate", "judge_pair", "winrate"):
        assert f"\n{job} " in out or f"rule {job}:" in out, job
    assert "results/dolly/checkpoints/alpagasus-7b" in out and "results/dolly/checkpoints/alpaca-7b" in out
    assert "random-7b" not in out


@pytest.mark.slow
def test_dag_on_a_dolly_file_keeps_category_and_source_row(tmp_path, api_key):
    from alpagasus.judging.prompts import rating_messages
    from alpagasus.testing.fake_openai import FakeOpenAIServer, expected_rating

    rows = dolly_rows(40)
    write_rows(tmp_path / "dolly.parquet", rows)
    with FakeOpenAIServer(api_key=api_key) as srv:
        cfg = {
            "data": {"source": "local", "local_path": str(tmp_path / "dolly.parquet"), "fields": DOLLY_FIELDS,
                     "expected_records": 40, "empty_output": "error"},
            "judges": {"fake": {"backend": "openai", "model": "gpt-fake", "base_url": srv.base_url,
                                "concurrency": 4, "timeout_s": 5, "usd_per_1m_input_tokens": 1.0,
                                "usd_per_1m_output_tokens": 2.0}},
            "rating": {"judge": "fake", "max_usd": 1.0},
        }
        (tmp_path / "dolly_test.yaml").write_text(yaml.safe_dump(cfg))
        snakemake(tmp_path, "results/filtered_9k.json", "results/random_9k.json",
                  "--configfile", tmp_path / "dolly_test.yaml")
    res = tmp_path / "results"
    scores = [json.loads(line) for line in (res / "scores.jsonl").read_text().splitlines()]
    expected = [rec for rec in as_records(rows) if expected_rating(
        rating_messages(rec["instruction"], rec["input"], rec["output"], "accuracy")) >= 4.5]
    assert len(scores) == 40 and all(s["status"] == "scored" for s in scores)
    assert 0 < len(expected) < 40
    assert json.loads((res / "filtered_9k.json").read_text()) == expected
    for rec in json.loads((res / "random_9k.json").read_text()):  # every selection maps back to the source
        src = rows[rec["source_row"]]
        assert (rec["instruction"], rec["input"], rec["output"], rec["category"]) == \
            (src["instruction"], src["context"], src["response"], src["category"])
    summary = json.loads((res / "data_summary.json").read_text())
    assert summary["source_rows"] == 40 and summary["origin"] == str((tmp_path / "dolly.parquet").resolve())


@pytest.mark.slow
def test_data_rule_reads_the_hub_into_the_configured_cache(tmp_path):
    fake_hub_cache(tmp_path / "hf")
    base = {"data": {"source": "hub", "fields": DOLLY_FIELDS, "expected_records": 10,
                     "hub": {"path": "fake/dolly", "revision": "v1.0", "cache_dir": str(tmp_path / "hf")}}}
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(base))
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    snakemake(tmp_path, "results/alpaca_52k.json", "--configfile", tmp_path / "hub.yaml", env=offline)
    assert json.loads((tmp_path / "results/alpaca_52k.json").read_text()) == as_records(dolly_rows(10))
    summary = json.loads((tmp_path / "results/data_summary.json").read_text())
    assert summary["hub"]["commit"] == SHA and summary["source_rows"] == 10
    # Where the download is kept is not what it is: moving the cache reruns nothing; a new
    # revision or split reruns the data rule.
    moved = {"data": {**base["data"], "hub": {**base["data"]["hub"], "cache_dir": str(tmp_path / "elsewhere")}}}
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump(moved))
    out = snakemake(tmp_path, "results/alpaca_52k.json", "-n", "--configfile", tmp_path / "moved.yaml", env=offline)
    assert "Nothing to be done" in out
    split = {"data": {**base["data"], "hub": {**base["data"]["hub"], "split": "test"}}}
    (tmp_path / "split.yaml").write_text(yaml.safe_dump(split))
    out = snakemake(tmp_path, "results/alpaca_52k.json", "-n", "--configfile", tmp_path / "split.yaml", env=offline)
    assert "alpaca_data" in out and "Nothing to be done" not in out
