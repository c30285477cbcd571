"""Sharded rating (issue #18 item 3): `rating.shards: N` rates contiguous slices of the records in
N independent jobs and gathers them into a scores.jsonl equal row for row to an unsharded run's;
the budget holds for all shards together; a shard that does not match its records stops the
gather naming it."""
import json
import re

import pytest
from conftest import shared_path

from alpagasus.core.io import read_jsonl, write_jsonl
from alpagasus.data import content_hash
from alpagasus.judging.sharding import ShardMismatchError, gather, shard_budget, shard_range, summed
from alpagasus.testing.fake_openai import FakeOpenAIServer
from test_workflow import overlay, snakemake


def test_shards_cover_the_records_once_in_order_and_their_budgets_add_up():
    for n, shards in ((10, 3), (2000, 4), (5, 5), (3, 4)):
        ranges = [shard_range(n, i, shards) for i in range(shards)]
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
        assert sum(shard_budget(6.0, a, b, n) for a, b in ranges) == pytest.approx(6.0)
    assert shard_budget(None, 0, 5, 10) is None
    with pytest.raises(ValueError, match="shard 4 is not one of 0..3"):
        shard_range(10, 4, 4)


def test_ledgers_sum_numbers_and_keep_what_agrees():
    a = {"records": 3, "usd_this_run": 0.1, "judge": "j", "status_counts": {"scored": 3}, "fatal_error": None,
         "model": "m1"}
    b = {"records": 2, "usd_this_run": 0.2, "judge": "j", "status_counts": {"scored": 1, "failed": 1},
         "fatal_error": None, "model": "m2"}
    got = summed([a, b])
    assert got == {"records": 5, "usd_this_run": 0.3, "judge": "j", "status_counts": {"scored": 4, "failed": 1},
                   "fatal_error": None, "model": None}


def _shard_files(tmp_path, records, shards, keys):
    """Shard files as rate_shard writes them: one row per record, with its key and content hash."""
    scores, costs = [], []
    for i in range(shards):
        start, stop = shard_range(len(records), i, shards)
        rows = [{"index": j, "score": 5.0, "status": "scored", "flags": [], "key": keys[j],
                 "record_hash": content_hash(records[j])} for j in range(start, stop)]
        scores.append(tmp_path / f"{i}.jsonl")
        write_jsonl(scores[-1], rows)
        costs.append(tmp_path / f"{i}.cost.json")
        costs[-1].write_text(json.dumps({"records": stop - start, "judgements_paid_this_run": stop - start}))
    return scores, costs


def test_the_gather_flags_duplicates_across_shards_and_drops_the_shard_fields(tmp_path):
    records = [{"instruction": f"q{i % 4}", "input": "", "output": "a"} for i in range(6)]  # 4, 5 repeat 0, 1
    keys = [f"k{i % 4}" for i in range(6)]
    scores, costs = _shard_files(tmp_path, records, 3, keys)
    ledger = gather(records, scores, costs, tmp_path / "scores.jsonl", tmp_path / "cost.json", max_usd=2.0)
    rows = read_jsonl(tmp_path / "scores.jsonl")
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["flags"] for r in rows] == [[], [], [], [], ["duplicate_of_0"], ["duplicate_of_1"]]
    assert all("key" not in r and "record_hash" not in r for r in rows)
    assert ledger["records"] == 6 and ledger["judgements_paid_this_run"] == 6 and ledger["shards"] == 3
    assert ledger["budget_usd"] == 2.0 and len(ledger["shard_ledgers"]) == 3


@pytest.mark.parametrize("spoil, message", [
    (lambda rows: rows[:-1], r"1\.jsonl: 1 rows, but shard 1 of 3 rates records 2\.\.3 \(2\)"),
    (lambda rows: [{**rows[0], "index": 7}, rows[1]], r"1\.jsonl: row 0 has index 7, expected 2"),
    (lambda rows: [{**rows[0], "record_hash": "0" * 64}, rows[1]],
     r"1\.jsonl: row 0 \(record 2\) is not the rating of record 2: its content hash differs"),
    (lambda rows: [{k: v for k, v in rows[0].items() if k != "key"}, rows[1]], r"1\.jsonl: row 0 has no key"),
])
def test_a_shard_that_does_not_match_its_records_stops_the_gather_naming_it(tmp_path, spoil, message):
    records = [{"instruction": f"q{i}", "input": "", "output": "a"} for i in range(6)]
    scores, costs = _shard_files(tmp_path, records, 3, [f"k{i}" for i in range(6)])
    write_jsonl(scores[1], spoil(read_jsonl(scores[1])))
    with pytest.raises(ShardMismatchError, match=message):
        gather(records, scores, costs, tmp_path / "scores.jsonl", tmp_path / "cost.json", max_usd=None)
    assert not (tmp_path / "scores.jsonl").exists()


N_RECORDS = 2000


@pytest.mark.slow
def test_four_shards_on_real_records_equal_one_and_pay_each_judgement_once(tmp_path, api_key):
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())[:N_RECORDS]
    alpaca[-1] = dict(alpaca[0])  # a duplicate across shards (the first's and the last's)
    data = tmp_path / "alpaca_2k.json"
    data.write_text(json.dumps(alpaca))
    unique = len({(r["instruction"], r["input"], r["output"]) for r in alpaca})
    with FakeOpenAIServer(api_key=api_key) as srv:
        base = {"data": {"source": "local", "local_path": str(data), "expected_records": None},
                "judges": {"fake": {"backend": "openai", "model": "gpt-fake", "base_url": srv.base_url,
                                    "concurrency": 16, "timeout_s": 5, "usd_per_1m_input_tokens": 1.0,
                                    "usd_per_1m_output_tokens": 2.0}},
                "rating": {"judge": "fake", "max_usd": 5.0}}
        runs = {}
        for shards in (4, 1):
            work = tmp_path / f"shards{shards}"
            work.mkdir()
            cfg = overlay(work / "o.yaml", {**base, "rating": {**base["rating"], "shards": shards}})
            proc = snakemake(work, "results/scores.jsonl", "--configfile", cfg)
            runs[shards] = (work / "results", proc.stdout + proc.stderr)
            if shards == 4:
                # Four shard jobs, each paying only for its own records, nothing paid twice.
                assert max(srv.paid_counts().values()) == 1 and len(srv.paid_counts()) == unique
                srv.reset_log()
        # The unsharded run's own cache dir is another: it pays again, so the two are independent.
        assert len(srv.paid_counts()) == unique
    sharded, one = runs[4][0], runs[1][0]
    assert len(re.findall(r"rule rate_shard:", runs[4][1])) == 4, runs[4][1][-3000:]
    assert "rule rate_shard" not in runs[1][1]
    assert (sharded / "scores.jsonl").read_text() == (one / "scores.jsonl").read_text()
    rows = read_jsonl(one / "scores.jsonl")
    assert len(rows) == N_RECORDS and "duplicate_of_0" in rows[-1]["flags"]
    cost = json.loads((sharded / "rating_cost.json").read_text())
    single = json.loads((one / "rating_cost.json").read_text())
    assert cost["shards"] == 4 and cost["records"] == N_RECORDS and cost["budget_usd"] == 5.0
    assert cost["judgements_paid_this_run"] == single["judgements_paid_this_run"] == unique
    assert cost["usd_this_run"] == pytest.approx(single["usd_this_run"], rel=1e-6)
    assert [lg["budget_usd"] for lg in cost["shard_ledgers"]] == [1.25] * 4  # the shares of 5.0
