"""Bad input files, through every door (load_records and the CLI, the data rule's sources and
mapping, the rule scripts): each is one line naming the file, the line or row and the field,
no traceback, and no output written or replaced (docs/reliability.md, "Bad input")."""
import json

import pytest
from conftest import REPO
from test_chaos import _one_line_error, cli, cli_config, env
from test_rating import judge_cfg, unique_records

from alpagasus.core.io import read_jsonl
from alpagasus.data import DataError, load_records
from alpagasus.data.acquire import obtain_alpaca
from alpagasus.testing.fake_openai import FakeOpenAIServer

DEEP = "[" * 200_000 + "]" * 200_000
GOOD = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}


def obtain_refused(tmp_path, path, match, **data_cfg):
    """obtain_alpaca on a bad local file: one DataError line matching ``match``, naming the
    file, and the previous output byte-identical with nothing beside it."""
    dest = tmp_path / "out" / "alpaca_52k.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text("previous good output")
    with pytest.raises(DataError, match=match) as info:
        obtain_alpaca({"source": "local", "local_path": str(path), **data_cfg}, dest, tmp_path / "dl")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert dest.read_text() == "previous good output"
    assert [p.name for p in dest.parent.iterdir()] == ["alpaca_52k.json"]
    return message


# --- JSON nested 200,000 deep --------------------------------------------------------------------

def test_json_nested_200000_deep_is_one_line_naming_the_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps([GOOD])[:-1] + ",\n" + DEEP + "]")  # the deep value on line 2
    with pytest.raises(DataError, match=r"deep.json: line 2: arrays or objects nested 200,001 deep, more than "
                                        r"the JSON reader can hold") as info:
        load_records(deep)
    assert "\n" not in str(info.value)
    obtain_refused(tmp_path, deep, r"deep.json: line 2: arrays or objects nested 200,001 deep")
    # In JSONL the line is the record's; in an extra column of an object too.
    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "x": 0})[:-1].replace("0", DEEP) + "}\n")
    with pytest.raises(DataError, match=r"deep.jsonl: line 3 \(record 1\): arrays or objects nested 200,001 deep"):
        load_records(jsonl)
    obtain_refused(tmp_path, jsonl, r"deep.jsonl: line 3 \(row 1\): arrays or objects nested 200,001 deep")


# --- a lone surrogate through the data rule ----------------------------------------------------

@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_lone_surrogate_through_the_data_rule_names_row_and_column(tmp_path, suffix):
    rows = [GOOD, {**GOOD, "output": "ok \ud800 then"}]
    path = tmp_path / f"s{suffix}"
    text = (json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows))
    path.write_text(text)  # json.dumps writes the surrogate as the escape \ud800, as a broken source has it
    obtain_refused(tmp_path, path, r"row 1: column 'output': character 3 is a lone UTF-16 surrogate "
                                   r"\(U\+D800, from a broken \\u escape in the source\)")
    # Inside an extra column's nested value (a chat's messages kept beside the record) too.
    nested = tmp_path / f"n{suffix}"
    rows = [GOOD, {**GOOD, "meta": {"turns": ["fine", "bad \udc00"]}}]
    nested.write_text(json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows))
    obtain_refused(tmp_path, nested, r"row 1: column 'meta': character 4 of a string inside it is a lone UTF-16 "
                                     r"surrogate \(U\+DC00")
    with pytest.raises(DataError, match=r"record 1.*field 'meta': character 4 of a string inside it"):
        load_records(nested)


# --- CSV rows with missing or extra cells ------------------------------------------------------

CSV_HEADER = "instruction,context,response,category\n"


@pytest.mark.parametrize("bad_row, cells", [("Short row,,only three\n", 3), ("Long row,,y,c,surplus\n", 5)])
def test_a_csv_row_with_missing_or_extra_cells_is_an_error_naming_row_and_line(tmp_path, bad_row, cells):
    # Row 1 spans lines 3-4 (a quoted newline), so the bad row 2 is on line 5, not line 4.
    path = tmp_path / "dolly.csv"
    path.write_text(CSV_HEADER + "Plain,,r0,open_qa\n\"Two\nlines, and a comma\",,r1,open_qa\n" + bad_row + "Last,,r3,c\n")
    obtain_refused(tmp_path, path, rf"dolly.csv: row 2 \(line 5\): {cells} cells where the header has 4 "
                                   r"\(instruction, context, response, category\)",
                   fields={"input": "context", "output": "response"})


def test_csv_cells_are_the_strings_they_are(tmp_path):
    path = tmp_path / "dolly.csv"
    long = "y" * 200_000  # over the csv module's default 128 KiB a cell
    path.write_text("\ufeff" + CSV_HEADER + "\"a, b\",,007,NA\n\n\"x\ny\",\"say \"\"hi\"\"\"," + long + ",\n")
    dest = tmp_path / "o.json"
    summary = obtain_alpaca({"source": "local", "local_path": str(path),
                             "fields": {"input": "context", "output": "response"}}, dest, tmp_path)
    assert summary["source_rows"] == 2  # the blank line is no row
    assert json.loads(dest.read_text()) == [
        {"instruction": "a, b", "input": "", "output": "007", "category": "NA", "source_row": 0},
        {"instruction": "x\ny", "input": 'say "hi"', "output": long, "category": "", "source_row": 1}]


# --- the CLI's --records -------------------------------------------------------------------------

def test_cli_rates_a_jsonl_file_and_refuses_a_directory_in_one_line(tmp_path, api_key):
    records = unique_records(6)
    with FakeOpenAIServer() as srv:
        cfg = cli_config(tmp_path, "x", judge_cfg(srv))
        # A .jsonl file, and JSONL under a .json name (what "Extra data at line 2" used to refuse).
        for name in ("r.jsonl", "r.json"):
            path = tmp_path / name
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
            out = tmp_path / f"{name}.scores.jsonl"
            proc = cli("rate", "--config", cfg, "--records", path, "--out", out, "--no-progress")
            assert proc.returncode == 0, proc.stderr
            assert [row["score"] is not None for row in read_jsonl(out)] == [True] * 6
        paid = [e["key"] for e in srv.log() if e["paid"]]
        assert len(paid) == len(set(paid)) == 6  # the second file's records came from the cache
        srv.reset_log()
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(records[0]) + "\n" + json.dumps({**records[1], "output": 5}) + "\n")
        _one_line_error(cli("rate", "--config", cfg, "--records", bad, "--out", tmp_path / "s.jsonl"),
                        f"{bad}: record 1 (line 2): field 'output': expected a string, got int")
        (tmp_path / "adir").mkdir()
        _one_line_error(cli("rate", "--config", cfg, "--records", tmp_path / "adir", "--out", tmp_path / "s.jsonl"),
                        f"{tmp_path / 'adir'}: a directory, not a records file")
        deep = tmp_path / "deep.json"
        deep.write_text(DEEP)
        _one_line_error(cli("rate", "--config", cfg, "--records", deep, "--out", tmp_path / "s.jsonl"),
                        f"{deep}: line 1: arrays or objects nested 200,000 deep")
        assert srv.log() == []
    assert not (tmp_path / "s.jsonl").exists()


def test_a_json_file_with_a_real_syntax_error_is_not_taken_for_jsonl(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([GOOD]) + "\n]\n")  # a stray bracket after the list
    with pytest.raises(DataError, match=r"r.json: not valid JSON \(Extra data at line 2, column 1\)"):
        load_records(path)


# --- the rule scripts: the same line on the console and at the end of the log --------------------

@pytest.mark.slow
def test_the_data_and_test_set_rules_end_with_the_one_line(tmp_path):
    """A real Snakemake run of both rules: the data rule on a file with a lone surrogate, the
    test-set rule offline (the download through a proxy on a closed port, as without internet)."""
    import socket
    import subprocess
    import sys

    import yaml

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([GOOD, {**GOOD, "input": "x \ud800"}]))
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"source": "local", "local_path": str(bad), "expected_records": None}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proxy = f"http://127.0.0.1:{closed}"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--cores", "2", "--keep-going", "results/alpaca_52k.json", "results/test_sets/vicuna.jsonl",
         "--configfile", str(overlay)],
        capture_output=True, text=True, timeout=300,
        env={**env(), "https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""})
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "UnicodeEncodeError" not in console, console[-4000:]
    logs = tmp_path / "results" / "logs"
    data_line = f"{bad}: row 1: column 'input': character 2 is a lone UTF-16 surrogate (U+D800"
    test_line = "test set 'vicuna': could not download https://raw.githubusercontent.com/"
    for log, line in ((logs / "alpaca_data.log", data_line), (logs / "test_sets" / "vicuna.log", test_line)):
        text = log.read_text()
        assert "Traceback" not in text, text
        assert line in text.rstrip().splitlines()[-1], text
        assert sum(line in ln for ln in console.splitlines()) == 1, console[-4000:]
    assert "set generation.test_sets_dir to a folder holding vicuna_test_set.jsonl" in console
    assert not (tmp_path / "results" / "alpaca_52k.json").exists()
    assert not (tmp_path / "results" / "test_sets" / "vicuna.jsonl").exists()
