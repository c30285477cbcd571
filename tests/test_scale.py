"""Records at scale (issue #18 item 2): the streaming reader and writer of records files, their
index, scores.jsonl as columns, and the array selection rules give exactly what the list-based
code gives (the same bytes, the same indices, the same errors), on small sets. The memory
figures at 1M records are in docs/data.md ("Records at scale"): big N is never a test."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from alpagasus.data import DataError, content_hash, load_records, write_records
from alpagasus.data import stream
from alpagasus.selection import select
from alpagasus.selection.columns import ScoreColumns, sample_indices, select_kept, tie_summary

ODD_RECORDS = [
    {"instruction": "a\u2028b é \"q\" \\", "input": "", "output": "x\ny\tz", "n": 3, "f": 1.5e-7, "b": True, "z": None},
    {"instruction": "i", "input": "j", "output": "", "nested": {"a": [1, {"b": []}], "c": {}}, "l": [], "e": {}},
    {"instruction": "🙂 \x7f", "input": "\u0000", "output": "o" * 3000, "big": 10 ** 30, "neg": -0.0},
]


def _records(n, seed=0):
    rng = random.Random(seed)
    words = ["a", "b", "c", "dd", "é", "🙂"]
    out = []
    for i in range(n):
        rec = {"instruction": " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))),
               "input": rng.choice(["", "x", "y y"]), "output": "z" * rng.randint(0, 9), "source_row": i}
        if i % 7 == 0:
            rec["meta"] = {"k": [i, None]}
        out.append(rec)
    out[5] = dict(out[3])  # an exact duplicate: equal hashes, the tie-break goes by position
    return out


def test_the_writer_writes_write_records_bytes_and_the_reader_reads_them_back(tmp_path, monkeypatch):
    recs = ODD_RECORDS + _records(40)
    write_records(tmp_path / "a.json", recs)
    assert stream.write_records_stream(tmp_path / "b.json", recs) == len(recs)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    monkeypatch.setattr(stream, "BLOCK_CHARS", 5)  # every record crosses a block's end
    assert list(stream.iter_records(tmp_path / "b.json")) == recs
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" + "\n" * (i % 2) for i, r in enumerate(recs)))
    assert list(stream.iter_records(tmp_path / "c.jsonl")) == recs
    write_records(tmp_path / "e.json", [])
    stream.write_records_stream(tmp_path / "f.json", [])
    assert (tmp_path / "e.json").read_bytes() == (tmp_path / "f.json").read_bytes()


def test_the_index_describes_its_file_and_only_that_version_of_it(tmp_path):
    recs = _records(30)
    path = tmp_path / "r.json"
    stream.write_records_stream(path, recs)
    rows = stream.load_index(path)
    assert rows is not None and len(rows) == 30
    index = stream.RecordsIndex(path)
    assert index.indexed and [index.hash_hex(i) for i in range(30)] == [content_hash(r) for r in recs]
    assert np.asarray(rows["hash8"]).tolist() == [int(content_hash(r)[:16], 16) for r in recs]
    assert np.asarray(rows["output_chars"]).tolist() == [len(r["output"]) for r in recs]
    data = path.read_bytes()
    assert json.loads(data[rows["start"][7]:rows["end"][7]]) == recs[7]
    # the file changed (same size, new mtime): its index is not used
    path.write_bytes(data)
    assert stream.load_index(path) is None
    index = stream.RecordsIndex(path)  # made again from the file
    assert not index.indexed and index.rows["hash"].tolist() == np.asarray(rows["hash"]).tolist()


@pytest.mark.parametrize("text, jsonl", [
    ('[{"instruction": "a", "input": "", "output": 3}]', False),
    ('[{"instruction": "a", "input": "", "output": ""}, {"instruction": " ", "input": "", "output": ""}]', False),
    ('[{"instruction": "a", "input": "", "output": ""}, {"instruction": "a"', False),
    ('[{"instruction": "a", "input": "", "output": ""}] x', False),
    ("[]", False), ("", False), ('{"a": 1}', False), ("[1]", False), ('["\\ud800"]', False),
    ('[{"instruction": "\\ud800", "input": "", "output": ""}]', False),
    ('{"instruction": "a", "input": "", "output": ""}\n\n{"instruction": "a", "input": 1, "output": ""}\n', True),
    ('{"instruction": "a", "input": "", "output": ""}\n{"instruction": "a",\n', True),
    ('{"instruction": "a\u2028", "input": "", "output": ""}\n', True),
])
def test_a_bad_file_raises_load_records_error(tmp_path, text, jsonl):
    path = tmp_path / ("bad.jsonl" if jsonl else "bad.json")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as old:
        load_records(path)
    with pytest.raises(DataError) as new:
        list(stream.iter_records(path))
    assert str(new.value) == str(old.value)


def _scores_file(path, n, seed, *, ints=False, extra=True):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        status = rng.choice(["scored"] * 6 + ["unparsed", "failed", "budget"])
        score = rng.choice([2, 3, 3.5, 4, 4.5, 4.5, 5, 3.9999999]) if status == "scored" else None
        if ints and score is not None and float(score).is_integer():
            score = int(score)
        elif score is not None:
            score = float(score)
        flags = rng.choice([[], [], ["truncated_output"], ["judge_directed"], ["duplicate_of_0", "judge_directed"]])
        row = {"index": i, "score": score, "status": status, "raw": "x", "flags": flags}
        if extra:
            row["expected_score"] = None if score is None else score - rng.random() / 4
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.parametrize("rule", [
    {"method": "threshold", "threshold": 4.5},
    {"method": "threshold", "threshold": 4.5, "exclude_flagged": True},
    {"method": "top_k", "k": 17}, {"method": "top_k", "k": 0}, {"method": "top_k", "k": 10 ** 6},
    {"method": "top_fraction", "fraction": 0.25, "score": "expected_score"},
    {"method": "top_k", "k": 9, "exclude_flagged": True},
])
def test_selection_random_and_summary_equal_the_list_code(tmp_path, rule):
    recs = _records(120)
    stream.write_records_stream(tmp_path / "r.json", recs)
    rows = _scores_file(tmp_path / "s.jsonl", 120, 1, ints=rule.get("k") == 17)
    # what select.py did before: every record and row a dict
    want = select.select_indices(recs, select.selectable_scores(rows, rule), **select.rule_of(rule))
    got = select.write_selection(tmp_path / "r.json", tmp_path / "s.jsonl", rule, tmp_path / "f.json")
    assert got == want
    write_records(tmp_path / "want.json", [recs[i] for i in want])
    assert (tmp_path / "f.json").read_bytes() == (tmp_path / "want.json").read_bytes()
    idx = select.write_random(tmp_path / "r.json", tmp_path / "f.json", 3, tmp_path / "rand.json")
    assert idx == select.random_indices(120, len(want), 3)
    write_records(tmp_path / "want.json", [recs[i] for i in idx])
    assert (tmp_path / "rand.json").read_bytes() == (tmp_path / "want.json").read_bytes()
    summary = select.write_summary(tmp_path / "r.json", tmp_path / "s.jsonl", rule, tmp_path / "rand.json",
                                   tmp_path / "sum.json", tmp_path / "hist.png")
    field = select.score_field(rule)
    ranked = select.selectable_scores(rows, rule)
    old = select.summarize(rows, want, {**select.rule_of(rule), "score": field}, len(idx),
                           exclude_flagged=bool(rule.get("exclude_flagged")), records=recs)
    old["score_used"] = {"field": field, **select.cut_ties(ranked, want)}
    assert json.dumps(summary) == json.dumps(old)


def test_top_k_ties_go_by_content_hash_then_position():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 60))
        scores = rng.choice([np.nan, 3.0, 4.5, 5.0], size=n)
        # equal first 8 bytes with different hashes too: the whole hash decides those
        hashes = np.array([bytes([int(rng.integers(0, 2))]) * 8 + bytes([int(rng.integers(0, 3))]) * 24
                           for _ in range(n)], dtype="S32")
        as_list = [None if np.isnan(s) else float(s) for s in scores]
        recs = [{"instruction": "", "input": "", "output": ""}] * n
        for k in (0, 1, n // 3, n, -2):
            old = sorted(sorted((i for i, s in enumerate(as_list) if s is not None),
                                key=lambda i: (-as_list[i], hashes[i]))[:k])
            assert select_kept(scores, hashes, "top_k", k=k).tolist() == old, (trial, k)
        old = select.select_indices(recs, as_list, "threshold", threshold=4.5)
        assert select_kept(scores, hashes, "threshold", threshold=4.5).tolist() == old
        kept = select_kept(scores, hashes, "top_k", k=n // 2)
        ties, _ = tie_summary(scores, kept)
        assert ties == select.cut_ties(as_list, kept.tolist())
        groups: dict = {}
        for i in range(n):
            groups.setdefault(hashes[i:i + 1].tobytes(), []).append(i)
        want = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
        assert sorted(stream.equal_hash_groups(stream.prefix8(hashes), hashes), key=lambda g: g[0]) == want


def test_random_draws_what_random_sample_draws():
    for n, size, seed in [(10, 0, 0), (10, 10, 1), (100, 7, 2), (1000, 300, 3), (5000, 4, 4), (70, 6, 5)]:
        assert sample_indices(n, size, seed).tolist() == select.random_indices(n, size, seed)
    with pytest.raises(ValueError, match="cannot draw 11 of 10"):
        sample_indices(10, 11, 0)


@pytest.mark.parametrize("lines, error", [
    ('{"index": 0, "score": 4, "status": "scored"}\n{"index": 2, "score": 4, "status": "scored"}\n',
     "line 2 has index 2, expected 1"),
    ('{"index": 0, "score": 4, "status": "scored"}\n{"score": 4, "status": "scored"}\n',
     "line 2 has index None, expected 1"),
    ('{"index": 0, "score": 4, "status": "scored"}\n{"index": "1", "score": 4}\n',
     "line 2 has index '1', expected 1"),
    ('{"index": 0, "score": 4, "status": "scored"}\nnot json\n', "line 2 is not valid JSON"),
    ('{"index": 0, "score": 4, "status": "scored"}\n', "1 scores for 2 records"),
])
def test_bad_scores_raise_load_scores_error(tmp_path, lines, error):
    path = tmp_path / "s.jsonl"
    path.write_text(lines)
    with pytest.raises(ValueError, match=error):
        select.load_scores(path, 2)
    with pytest.raises(ValueError, match=error):
        ScoreColumns(path, 2)


def test_both_score_readers_read_the_same_columns(tmp_path, monkeypatch):
    from alpagasus.selection import columns

    rows = _scores_file(tmp_path / "s.jsonl", 200, 7)
    arrow = ScoreColumns(tmp_path / "s.jsonl", 200)

    def no_arrow(self):
        raise columns._NotArrow

    monkeypatch.setattr(ScoreColumns, "_read_arrow", no_arrow)
    python = ScoreColumns(tmp_path / "s.jsonl", 200)
    assert arrow.status.tolist() == python.status.tolist()
    def pairs(c):
        return sorted(zip(c.flag_rows.tolist(), (c.kind_values[k] for k in c.flag_kinds.tolist())))
    assert pairs(arrow) == pairs(python) != []
    assert arrow.status_values == python.status_values == list(dict.fromkeys(r["status"] for r in rows))
    for f in ("score", "expected_score"):
        assert np.array_equal(arrow.values[f], python.values[f], equal_nan=True)


@pytest.mark.parametrize("suffix, limit", [(".json", None), (".jsonl", None), (".jsonl", 9)])
def test_the_data_rule_streams_what_the_list_code_wrote(tmp_path, suffix, limit):
    from alpagasus.data import duplicate_groups, oversized_fields
    from alpagasus.data.acquire import obtain_alpaca
    from alpagasus.data.mapping import to_records
    from alpagasus.data.sources import SourceRows, StreamedRows, _columns_of, read_local

    rows = [{"prompt": r["instruction"], "ctx": r["input"], "answer": r["output"], **({"tag": i} if i % 3 else {})}
            for i, r in enumerate(_records(30))]
    rows[10] = {"prompt": "a\x1f", "ctx": "b", "answer": ""}  # hashes alike, not the same record
    rows[11] = {"prompt": "a", "ctx": "\x1fb", "answer": ""}
    rows[12] = dict(rows[10])
    rows[13]["answer"] = "long " * 30
    src = tmp_path / f"src{suffix}"
    src.write_text(json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"source": "local", "local_path": str(src), "expected_records": None, "max_records": limit,
           "fields": {"instruction": "prompt", "input": "ctx", "output": "answer"}, "max_field_chars": 100,
           "empty_output": "keep"}
    source = read_local(src)
    assert isinstance(source.rows, StreamedRows) and len(source.rows) == 30
    old, _ = to_records(SourceRows(str(src), _columns_of(rows), rows), cfg)
    old = old[:limit] if limit else old
    summary = obtain_alpaca(cfg, tmp_path / "alpaca_52k.json", tmp_path / "dl")
    write_records(tmp_path / "want.json", old)
    assert (tmp_path / "alpaca_52k.json").read_bytes() == (tmp_path / "want.json").read_bytes()
    assert summary["duplicate_groups"] == duplicate_groups(old) != []
    assert summary["duplicates"] == sum(len(g) - 1 for g in duplicate_groups(old))
    assert summary["oversized_fields"] == oversized_fields(old, 100)
    assert summary["records"] == len(old) and summary["source_rows"] == 30
    assert stream.load_index(tmp_path / "alpaca_52k.json") is not None


@pytest.mark.parametrize("text", ['[{"a": 1}, {"a": 2', '{"a": 1}', "[]", '[{"a": "\\ud800"}]'])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_bad_source_file_raises_the_whole_file_readers_error(tmp_path, text, suffix):
    from alpagasus.data.acquire import obtain_alpaca
    from alpagasus.data.mapping import to_records
    from alpagasus.data.sources import _read_json_whole, _read_jsonl_whole

    src = tmp_path / f"src{suffix}"
    src.write_text(text if suffix == ".json" else text.replace("}, {", "}\n{").strip("[]"))
    cfg = {"source": "local", "local_path": str(src), "expected_records": None,
           "fields": {"instruction": "a", "input": None, "output": "a"}, "empty_output": "keep"}
    with pytest.raises(DataError) as old:
        to_records((_read_json_whole if suffix == ".json" else _read_jsonl_whole)(src), cfg)
    with pytest.raises(DataError) as new:
        obtain_alpaca(cfg, tmp_path / "out.json", tmp_path / "dl")
    assert str(new.value) == str(old.value)
    assert not (tmp_path / "out.json").exists()


def _rating_records(n):
    from alpagasus.data.miniature import make_records

    recs = list({(r["instruction"], r["input"], r["output"]): r for r in make_records(2 * n, 0.3, 0)}.values())[:n]
    return recs + recs[:5] + [recs[-1]]  # duplicates of records in earlier windows, and in the same one


def test_rating_in_windows_writes_the_rows_one_call_writes(tmp_path, api_key):
    """Windows of 7 records against one window: the same scores.jsonl bytes (duplicate flags
    across windows included), every distinct record paid once, the same counts in the ledger."""
    from alpagasus.judging.rating import rate_records
    from alpagasus.testing.fake_openai import FakeOpenAIServer

    recs = _rating_records(20)
    with FakeOpenAIServer(api_key=api_key, latency_s=0.0) as srv:
        judges = {"fake": {"backend": "openai", "model": "gpt-test", "base_url": srv.base_url,
                           "api_key_env": "OPENAI_API_KEY", "temperature": 0.0, "top_p": 1.0, "max_tokens": 256,
                           "concurrency": 4, "timeout_s": 5, "max_retries": 2,
                           "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0}}
        rating = {"judge": "fake", "dimension": "accuracy", "max_usd": None}
        one = rate_records(recs, judges, rating, tmp_path / "c1", tmp_path / "one.jsonl", tmp_path / "one.json",
                           progress=False)
        many = rate_records(iter(recs), judges, rating, tmp_path / "c2", tmp_path / "many.jsonl",
                            tmp_path / "many.json", progress=False, n_records=len(recs), window=7)
        paid = len(srv.log())
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "many.jsonl").read_bytes()
    assert "duplicate_of_0" in (tmp_path / "many.jsonl").read_text()
    assert paid == 2 * 20  # each distinct record once a run, never again in a later window
    for key in ("records", "status_counts", "judgements_paid_this_run", "usd_this_run", "usd_stage_total",
                "prompt_tokens_this_run", "requests_sent"):
        assert many[key] == one[key], key
    assert many["judgements_reused_from_cache"] == 6  # the later windows' duplicates: from the cache
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_rating_in_windows_with_a_judge_that_is_not_cached(tmp_path):
    """The free verifier (no cache: a later window's duplicate is judged again), windows of 5:
    the rows one call writes."""
    import yaml

    from alpagasus.judging.rating import rate_records

    judges = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())["judges"]
    recs = _rating_records(23)
    rating = {"judge": "verifier", "dimension": "accuracy", "max_usd": 0.0}
    rate_records(recs, judges, rating, tmp_path / "c", tmp_path / "one.jsonl", tmp_path / "one.json", progress=False)
    rate_records(iter(recs), judges, rating, tmp_path / "c", tmp_path / "w.jsonl", tmp_path / "w.json",
                 progress=False, n_records=len(recs), window=5)
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "w.jsonl").read_bytes()
    assert json.loads((tmp_path / "w.json").read_text())["records"] == len(recs)


def test_the_budget_holds_for_all_windows_together(tmp_path, api_key):
    from alpagasus.judging.rating import IncompleteRatingError, rate_records
    from alpagasus.testing.fake_openai import FakeOpenAIServer

    recs = _rating_records(30)[:30]
    with FakeOpenAIServer(api_key=api_key) as srv:
        judges = {"fake": {"backend": "openai", "model": "gpt-test", "base_url": srv.base_url,
                           "api_key_env": "OPENAI_API_KEY", "max_tokens": 256, "concurrency": 2, "timeout_s": 5,
                           "usd_per_1m_input_tokens": 10_000.0, "usd_per_1m_output_tokens": 10_000.0}}
        worst = (130 + 256) * 10_000 / 1e6  # about one request's worst case
        rating = {"judge": "fake", "dimension": "accuracy", "max_usd": 10 * worst}
        kw = dict(progress=False, n_records=30, window=4)
        with pytest.raises(IncompleteRatingError, match="over budget"):
            rate_records(iter(recs), judges, rating, tmp_path / "c", tmp_path / "s.jsonl", tmp_path / "l.json", **kw)
        ledger = json.loads((tmp_path / "l.json").read_text())
        first = ledger["judgements_paid_this_run"]
        assert ledger["usd_this_run"] <= 10 * worst and 0 < first < 30
        assert ledger["status_counts"]["budget"] == 30 - first and len(srv.log()) == first
        assert not (tmp_path / "s.jsonl").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        srv.reset_log()
        rate_records(iter(recs), judges, {**rating, "max_usd": None}, tmp_path / "c", tmp_path / "s.jsonl",
                     tmp_path / "l.json", **kw)
        assert len(srv.log()) == 30 - first and max(srv.paid_counts().values()) == 1


def test_the_gather_checks_shards_against_the_index_hashes(tmp_path):
    """The gather reads the records' hashes from their index (rule rate's gather): the same
    file as from the records, a digest ending in a zero byte included (numpy would drop it from
    a bytes scalar)."""
    from test_sharding import _shard_files

    from alpagasus.judging.sharding import ShardMismatchError, gather

    records = [{"instruction": f"q{i}", "input": "", "output": "a"} for i in range(6)]
    j = next(j for j in range(5000) if content_hash({"instruction": f"z{j}", "input": "", "output": "a"}).endswith("00"))
    records[4] = {"instruction": f"z{j}", "input": "", "output": "a"}
    stream.write_records_stream(tmp_path / "r.json", records)
    scores, costs = _shard_files(tmp_path, records, 3, ["k0", "k1", "k2", "k3", "k0", "k1"])
    gather(records, scores, costs, tmp_path / "a.jsonl", tmp_path / "a.json", max_usd=None)
    gather(stream.RecordsIndex(tmp_path / "r.json"), scores, costs, tmp_path / "b.jsonl", tmp_path / "b.json",
           max_usd=None)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    records[3] = records[2]
    stream.write_records_stream(tmp_path / "r.json", records)  # not the records the shards rated
    with pytest.raises(ShardMismatchError, match=r"row 1 \(record 3\) is not the rating of record 3"):
        gather(stream.RecordsIndex(tmp_path / "r.json"), scores, costs, tmp_path / "c.jsonl", tmp_path / "c.json",
               max_usd=None)
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize("indexed", [True, False])
def test_a_slice_of_records_is_the_slice_of_the_list(tmp_path, monkeypatch, indexed):
    recs = ODD_RECORDS + _records(20)
    path = tmp_path / "r.json"
    (stream.write_records_stream if indexed else write_records)(path, recs)
    monkeypatch.setattr(stream, "CHUNK", 4)  # a slice over several blocks
    for start, stop in [(0, None), (3, 14), (22, 23), (5, 5), (0, 100)]:
        assert list(stream.iter_slice(path, start, stop)) == recs[start:stop]
    assert stream.count_records(path) == len(recs)


def test_the_estimate_in_windows_is_the_estimate_in_one(tmp_path, api_key):
    from alpagasus.judging.rating import estimate_rating, rate_records
    from alpagasus.testing.fake_openai import FakeOpenAIServer

    recs = _rating_records(30)
    with FakeOpenAIServer(api_key=api_key) as srv:
        judges = {"fake": {"backend": "openai", "model": "gpt-test", "base_url": srv.base_url,
                           "api_key_env": "OPENAI_API_KEY", "max_tokens": 256, "timeout_s": 5,
                           "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0}}
        rating = {"judge": "fake", "dimension": "accuracy", "max_usd": None}
        rate_records(recs[:10], judges, rating, tmp_path / "c", tmp_path / "s.jsonl", tmp_path / "l.json",
                     progress=False)  # a third cached
    one = estimate_rating(recs, judges, rating, tmp_path / "c", tmp_path / "one.json")
    many = estimate_rating(iter(recs), judges, rating, tmp_path / "c", tmp_path / "many.json", n_records=len(recs),
                           window=4)
    assert many == one and one["cached"] == 10 and one["duplicates_in_input"] == 6 and one["requests"] == 20


# --- CSV, Parquet and datasets sources, read a batch at a time ------------------------------------

def _csv_rows_the_whole_file_way(path: Path) -> tuple[list, list]:
    """What the reader gave before it streamed: the whole text in memory, csv over a StringIO."""
    import csv
    import io

    text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    limit = csv.field_size_limit(len(text) + 1)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        return header, [dict(zip(header, cells)) for cells in reader if cells]
    finally:
        csv.field_size_limit(limit)


@pytest.mark.parametrize("text", [
    "instruction,output\r\n1,2\r\n",
    "\ufeffinstruction,output\n1,\"two\nlines, and a comma\"\n\n3,4\n",
    "instruction,output\r1,2\r3,\"q\rz\"\r",                       # old Mac line ends, one inside a cell
    "instruction,output\nx," + "y" * 300_000 + "\n",             # a cell over csv's 128 KiB default
], ids=["crlf", "bom-quoted-blank", "cr", "long-cell"])
def test_a_csv_source_streams_the_rows_the_whole_file_reader_read(tmp_path, text):
    from alpagasus.data.sources import LazyRows, read_local

    path = tmp_path / "src.csv"
    path.write_bytes(text.encode())
    header, rows = _csv_rows_the_whole_file_way(path)
    source = read_local(path)
    assert isinstance(source.rows, LazyRows) and source.columns == header
    assert len(source.rows) == len(rows) and list(source.rows) == rows
    assert list(source.rows) == rows  # every pass reads the file again


@pytest.mark.parametrize("raw", [b"a,b\n1,\xff\n", b"a,b\n1,2\xe2\x82", b"\xef\xbb\xbfa\n" + "\u00e9".encode() * 9 + b"\x80\n"],
                         ids=["bad-byte", "cut-at-the-end", "after-a-bom"])
def test_a_csv_source_that_is_not_utf8_names_the_byte_as_before(tmp_path, monkeypatch, raw):
    import alpagasus.data.sources as sources
    from alpagasus.data import read_text

    monkeypatch.setattr(sources, "BLOCK", 5)  # offsets counted across blocks, a character split by one
    path = tmp_path / "src.csv"
    path.write_bytes(raw)
    with pytest.raises(DataError) as whole:
        read_text(path)
    with pytest.raises(DataError) as streamed:
        sources.read_local(path)
    assert str(streamed.value) == str(whole.value) and "at byte" in str(whole.value)


def test_a_csv_source_of_whitespace_is_empty(tmp_path):
    from alpagasus.data.sources import read_local

    (tmp_path / "src.csv").write_bytes(b"  \n\r\n")
    with pytest.raises(DataError, match=r"src.csv: the file is empty"):
        read_local(tmp_path / "src.csv")


def _arrow_source_rows(n):
    rows = [{"instruction": f"i{i} é", "input": "" if i % 2 else None, "output": "o" * (i % 5),
             "tags": [i, i + 1], "score": i / 3} for i in range(n)]
    rows[3]["output"] = None
    return rows


def test_a_parquet_source_streams_what_datasets_read_whole(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alpagasus.data.sources import ParquetRows, read_local

    path = tmp_path / "src.parquet"
    pq.write_table(pa.Table.from_pylist(_arrow_source_rows(25_003)), path, row_group_size=4_000)
    whole = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "c"))
    source = read_local(path)
    assert isinstance(source.rows, ParquetRows) and source.columns == whole.column_names
    assert len(source.rows) == 25_003 and list(source.rows) == whole.to_list()


def test_a_parquet_source_with_a_corrupt_page_is_an_error_before_any_record(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alpagasus.data.sources import read_local

    path = tmp_path / "src.parquet"
    pq.write_table(pa.Table.from_pylist(_arrow_source_rows(3_000)), path, row_group_size=1_000, compression="none")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"i2500 ")  # a value in the last row group: the footer still reads
    raw[at - 40:at + 40] = b"\xff" * 80
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"src.parquet: cannot be read as parquet"):
        read_local(path)


def test_a_saved_dataset_streams_its_rows_and_the_data_rule_writes_the_same_records(tmp_path):
    import datasets

    from alpagasus.data.acquire import obtain_alpaca
    from alpagasus.data.mapping import to_records
    from alpagasus.data.sources import ArrowRows, SourceRows, read_local

    rows = [{"prompt": r["instruction"], "ctx": r["input"], "answer": r["output"]} for r in _records(30_500)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    source = read_local(tmp_path / "saved")
    assert isinstance(source.rows, ArrowRows) and len(source.rows) == 30_500 and list(source.rows) == rows
    cfg = {"source": "local", "local_path": str(tmp_path / "saved"), "expected_records": None,
           "fields": {"instruction": "prompt", "input": "ctx", "output": "answer"}, "empty_output": "keep"}
    want, _ = to_records(SourceRows("saved", list(rows[0]), rows), cfg)
    obtain_alpaca(cfg, tmp_path / "alpaca_52k.json", tmp_path / "dl")
    write_records(tmp_path / "want.json", want)
    assert (tmp_path / "alpaca_52k.json").read_bytes() == (tmp_path / "want.json").read_bytes()


# --- selectors over any signal, as arrays -------------------------------------------------------

def _list_rank(values, tiebreak, direction, below):
    """The list code's ranking (by_signal.rank before it took arrays)."""
    sign = -1.0 if direction == "high" else 1.0
    ok = [i for i, v in enumerate(values) if v is not None and (below is None or v < below)]
    return sorted(ok, key=lambda i: (sign * values[i], tiebreak[i]))


@pytest.mark.parametrize("method, extra", [("top_k", {"k": 37}), ("top_fraction", {"fraction": 0.3}),
                                           ("threshold", {"threshold": 0.5}), ("top_k", {"k": 10_000})])
@pytest.mark.parametrize("direction, below", [("high", None), ("high", 0.8), ("low", None)])
def test_a_selector_over_arrays_keeps_what_the_list_code_kept(method, extra, direction, below):
    from alpagasus.selection import by_signal

    rng = random.Random(7)
    n = 400
    values = [None if rng.random() < 0.1 else rng.choice([0.1, 0.5, 0.5, 0.7, 0.9, 1.2]) for _ in range(n)]
    digests = [hashlib_sha(rng.randrange(60)) for _ in range(n)]  # repeated hashes: ties beyond the value
    ranking = _list_rank(values, digests, direction, below)
    assert by_signal.rank(values, digests, direction, below) == ranking
    rule = {"signal": "s", "method": method, "direction": direction, "below": below, "k": None, "threshold": None,
            "fraction": None, **extra}
    k = by_signal.target_size(rule, n)
    want = ranking
    if method == "threshold":
        want = [i for i in ranking if (values[i] >= 0.5 if direction == "high" else values[i] <= 0.5)]
    want = sorted(want if k is None else want[:k])
    as_hex, _ = by_signal.select(values, digests, rule)
    as_s32, details = by_signal.select(np.array([np.nan if v is None else v for v in values]),
                                       np.array([bytes.fromhex(d) for d in digests], dtype="S32"), rule)
    assert as_hex == as_s32 == want and details["kept"] == len(want)
    assert details["no_value"] == sum(v is None for v in values)


def hashlib_sha(i: int) -> str:
    import hashlib

    return hashlib.sha256(str(i).encode()).hexdigest()


def test_the_walk_over_a_memory_mapped_embedding_keeps_what_it_kept_over_the_whole_matrix(tmp_path):
    from alpagasus.selection import signals
    from alpagasus.selection.diversity import walk

    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 16))
    m = np.concatenate([base, base[:40] + rng.normal(scale=0.05, size=(40, 16))])  # 40 near-copies
    m = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float16)
    np.save(tmp_path / "e.npy", m)
    order = rng.permutation(len(m))
    whole = walk(signals.unit_rows(m), order, tau=0.9, k=70, block=16)
    mapped = walk(signals.UnitRows(np.load(tmp_path / "e.npy", mmap_mode="r")), order, tau=0.9, k=70, block=16)
    assert mapped == whole and len(whole.dropped) >= 30


def test_a_signal_file_is_read_a_line_at_a_time_with_the_whole_file_readers_checks(tmp_path):
    from alpagasus.selection import signals

    hashes = [hashlib_sha(i) for i in range(3)]
    lines = [json.dumps({"index": i, "record_sha256": h, "value": [0.5, None, 2][i], "reason": "a\u2028b"},
                        ensure_ascii=False) for i, h in enumerate(hashes)]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n\n")  # a blank line at the end is no record
    assert signals.signal_values(path, hashes=hashes) == [0.5, None, 2.0]
    assert np.array_equal(signals.signal_column(path, hashes), [0.5, np.nan, 2.0], equal_nan=True)
    path.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(signals.SignalError, match=r"s.jsonl: 2 lines for the 3 records"):
        signals.signal_values(path, hashes=hashes)
    path.write_bytes(("\n".join(lines[:2]) + "\n").encode() + b'{"index": 2, "x": "\xff"}\n')
    with pytest.raises(signals.SignalError, match=r"s.jsonl: not UTF-8 text \(byte %d\)" % (len("\n".join(lines[:2]).encode()) + 1 + 19)):
        signals.signal_values(path, hashes=hashes)


# --- judge agreement, as arrays -----------------------------------------------------------------

def _list_agreement(records, scores, rule, releases):
    """What judge_agreement computed before it took arrays: sets of hex hashes, select_indices."""
    from alpagasus.selection.agreement import score_agreement, set_overlap

    hashes = [content_hash(r) for r in records]
    in_data = set(hashes)
    kept = {n: {hashes[i] for i in select.select_indices(records, s, **select.rule_of(rule))} for n, s in scores.items()}
    out = {"records": len(records), "rule": rule, "judges": {}, "pairs": [], "releases": {}}
    for name, s in scores.items():
        present = [x for x in s if x is not None]
        out["judges"][name] = {"scored": len(present), "kept": len(kept[name]), "distinct_values": len(set(present)),
                               "mean": round(sum(present) / len(present), 6) if present else None}
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out["pairs"].append({"judge_a": a, "judge_b": b, **score_agreement(scores[a], scores[b]),
                                 "kept_sets": set_overlap(kept[a], kept[b])})
    for rel, recs in releases.items():
        theirs = {content_hash(r) for r in recs}
        out["releases"][rel] = {"records": len(recs), "in_this_data": len(theirs & in_data),
                                "by_judge": {n: set_overlap(kept[n], theirs & in_data) for n in scores}}
    return out


@pytest.mark.parametrize("rule, indexed", [({"method": "threshold", "threshold": 4.5}, True),
                                           ({"method": "top_k", "k": 40}, False)])
def test_judge_agreement_from_files_is_what_the_list_code_computed(tmp_path, rule, indexed):
    from alpagasus.selection.agreement import judge_agreement, write_agreement

    rng = random.Random(11)
    recs = _records(300)
    stream.write_records_stream(tmp_path / "d.json", recs, index=indexed)
    scores, paths = {}, {}
    for name in ("a", "b", "c"):
        rows = []
        for i in range(len(recs)):
            status = "scored" if rng.random() > 0.08 else "unparsed"
            rows.append({"index": i, "status": status, "score": rng.choice([2.0, 3.5, 4.0, 4.5, 4.74, 4.76, 5.0])})
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
        scores[name] = [r["score"] if r["status"] == "scored" else None for r in rows]
    release = recs[::7] + [{"instruction": "not in the data", "input": "", "output": "x"}]
    write_records(tmp_path / "rel.json", release)
    want = _list_agreement(recs, scores, {**rule, "score": "score"}, {"paper": release})
    assert judge_agreement(recs, scores, {**rule, "score": "score"}, {"paper": release}) == want
    got = write_agreement(tmp_path / "d.json", paths, {**rule, "score": "score"}, "score", {"paper": tmp_path / "rel.json"},
                          tmp_path / "agree.json", tmp_path / "agree.png")
    for name in got["judges"]:
        assert got["judges"][name].pop("field") == "score"
    assert {k: v for k, v in got.items() if k != "score_field"} == want
    assert want["releases"]["paper"]["in_this_data"] == len({content_hash(r) for r in recs[::7]})


@pytest.mark.parametrize("indexed", [True, False])
def test_random_at_k_writes_the_list_codes_subset(tmp_path, indexed):
    recs = _records(500)
    stream.write_records_stream(tmp_path / "d.json", recs, index=indexed)
    for k, seed in ((7, 0), (120, 42), (500, 3)):
        kept = select.write_random_at_k(tmp_path / "d.json", k, seed, tmp_path / "r.json")
        assert kept == select.random_indices(len(recs), k, seed)
        write_records(tmp_path / "want.json", [recs[i] for i in kept])
        assert (tmp_path / "r.json").read_bytes() == (tmp_path / "want.json").read_bytes()
    with pytest.raises(ValueError, match=r"evaluation.selectors.k: 501 is more than the 500 records of .*d.json"):
        select.write_random_at_k(tmp_path / "d.json", 501, 0, tmp_path / "r2.json")
    assert not (tmp_path / "r2.json").exists()
