"""Bad input gets one clear error naming file, record and field, and leaves no output."""
import json

import pytest
from conftest import shared_path

from alpagasus.data import DataError, duplicate_groups, load_records
from alpagasus.data.acquire import obtain_alpaca

GOOD = [{"instruction": "Say hi.", "input": "", "output": "hi"}]


def _write(tmp_path, content, name="data.json"):
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", r"not valid JSON \(.* line 1, column 2\)"),
        ({"instruction": "x"}, "expected a JSON list of records, got dict"),
        ([{"instruction": "x", "input": ""}], r"record 0: field 'output': missing"),
        ([GOOD[0], {"instruction": "x", "input": 3, "output": "y"}], r"record 1: field 'input': expected a string, got int"),
        ([GOOD[0], GOOD[0], "text"], r"record 2: expected an object, got str"),
        ([{"instruction": "  ", "input": "", "output": "y"}], r"record 0: field 'instruction': empty"),
        ("", "the file is empty"),
        ("   \n", "the file is empty"),
        ([], "holds no records"),
    ],
)
def test_bad_input_names_file_record_field(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=expected) as info:
        load_records(path)
    assert str(path) in str(info.value)


def test_bad_local_file_leaves_existing_output_untouched(tmp_path):
    bad = _write(tmp_path, [GOOD[0], {"instruction": "x", "input": "", "output": None}])
    dest = tmp_path / "out" / "alpaca_52k.json"
    dest.parent.mkdir()
    dest.write_text("previous good output")
    with pytest.raises(DataError, match="row 1: column 'output': null, expected a string"):
        obtain_alpaca({"source": "local", "local_path": str(bad)}, dest, tmp_path / "dl")
    assert dest.read_text() == "previous good output"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["alpaca_52k.json"]  # no temp file left


def test_bad_local_file_creates_no_output(tmp_path):
    bad = _write(tmp_path, "[1, 2")
    dest = tmp_path / "out" / "alpaca_52k.json"
    with pytest.raises(DataError):
        obtain_alpaca({"source": "local", "local_path": str(bad)}, dest, tmp_path / "dl")
    assert not dest.exists()


def test_local_file_round_trips_and_reports_duplicates_and_oversize(tmp_path, caplog):
    recs = [GOOD[0], {"instruction": "Long.", "input": "", "output": "x" * 300}, dict(GOOD[0])]
    src = _write(tmp_path, recs)
    dest = tmp_path / "alpaca_52k.json"
    summary = obtain_alpaca({"source": "local", "local_path": str(src), "max_field_chars": 100}, dest, tmp_path)
    assert json.loads(dest.read_text()) == [{**r, "source_row": i} for i, r in enumerate(recs)]
    assert summary["duplicates"] == 1 and summary["duplicate_groups"] == [[0, 2]]
    assert summary["oversized_fields"] == [(1, "output", 300)]
    assert "exact duplicates" in caplog.text and "truncated in judge prompts" in caplog.text


def test_duplicate_groups():
    recs = [GOOD[0], {"instruction": "a", "input": "", "output": "b"}, GOOD[0], GOOD[0]]
    assert duplicate_groups(recs) == [[0, 2, 3]]


def test_download_verifies_sha256(tmp_path):
    src = _write(tmp_path, GOOD, "remote.json")
    cfg = {"source": "download", "url": src.as_uri(), "sha256": "0" * 64, "expected_records": 1}
    dest = tmp_path / "out.json"
    with pytest.raises(DataError, match="sha256 mismatch"):
        obtain_alpaca(cfg, dest, tmp_path / "dl")
    assert not dest.exists() and not (tmp_path / "dl" / "remote.json").exists()
    import hashlib

    cfg["sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
    obtain_alpaca(cfg, dest, tmp_path / "dl")
    assert json.loads(dest.read_text()) == [{**GOOD[0], "source_row": 0}]
    cfg["expected_records"] = 2
    with pytest.raises(DataError, match="expected 2 records, found 1"):
        obtain_alpaca(cfg, tmp_path / "out2.json", tmp_path / "dl")


def test_an_offline_download_says_what_to_do_in_one_line(tmp_path):
    from conftest import SHARED

    url = (tmp_path / "no-network" / "alpaca_data.json").as_uri()  # urlopen fails as offline does
    with pytest.raises(DataError) as info:
        obtain_alpaca({"source": "download", "url": url, "sha256": None}, tmp_path / "out.json", tmp_path / "dl")
    message = str(info.value)
    assert "\n" not in message and "<urlopen error" not in message
    assert message.startswith(f"{url}: download failed ([Errno 2] No such file or directory: ")
    assert "Without internet, set data.source: local and data.local_path to a copy of the file" in message
    shared = SHARED / "data" / "alpaca" / "alpaca_data.json"
    assert (f"(there is one at {shared})" in message) == shared.is_file()
    assert not (tmp_path / "out.json").exists()


def test_real_alpaca_52k_loads_and_validates():
    path = shared_path("data", "alpaca", "alpaca_data.json")
    records = load_records(path)
    assert len(records) == 52002
    assert sum(1 for r in records if not r["input"]) == 31323
    assert duplicate_groups(records) == []


def test_miniature_source_is_seeded(tmp_path):
    cfg = {"source": "miniature", "miniature": {"n_records": 50, "corrupt_fraction": 0.5, "seed": 3}}
    obtain_alpaca(cfg, tmp_path / "a.json", tmp_path)
    obtain_alpaca(cfg, tmp_path / "b.json", tmp_path)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
