"""A selection ready for the Hub (reporting/release.py, rule release): the Parquet split that
`datasets.load_dataset` reads, the JSON, the dataset card; `alpagasus publish` up to the upload.
The miniature's own release (through snakemake) is checked in test_miniature.py."""
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from alpagasus.core.io import write_jsonl
from alpagasus.data.miniature import make_records
from alpagasus.reporting import release
from alpagasus.reporting.release import how_made, kept_indices, publish, size_category, write_release


def make_run(tmp_path, n=60):
    records = [{**r, "source_row": i} for i, r in enumerate(make_records(n, 0.3, seed=3))]
    (tmp_path / "all.json").write_text(json.dumps(records))
    scores = [{"index": i, "score": 5.0 if i % 3 else 3.5, "status": "scored"} for i in range(n)]
    write_jsonl(tmp_path / "scores.jsonl", scores)
    kept = [r for i, r in enumerate(records) if i % 3]
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    (tmp_path / "cost.json").write_text(json.dumps({"judge": "gpt4", "model": "gpt-4-0613", "dimension": "accuracy",
                                                    "prompt_version": "abc123def456"}))
    return records, kept


def release_of(tmp_path, **over):
    kw = dict(name="alpagasus", how="the records with score ≥ 4.5, as rated by the judge",
              source={"source": "download", "origin": "https://example.org/alpaca_data.json", "sha256": "ab" * 32},
              license_="cc-by-nc-4.0", language=["en"], rating_cost_path=tmp_path / "cost.json")
    kw.update(over)
    return write_release(tmp_path / "kept.json", tmp_path / "all.json", tmp_path / "scores.jsonl",
                         tmp_path / "release" / "alpagasus", **kw)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_release_loads_with_datasets_and_its_card_says_how_it_was_made(tmp_path):
    import datasets

    records, kept = make_run(tmp_path)
    out = release_of(tmp_path)
    rel = tmp_path / "release" / "alpagasus"
    loaded = datasets.load_dataset(str(rel), cache_dir=str(tmp_path / "hf_cache"))
    assert list(loaded) == ["train"] and loaded["train"].to_list() == kept  # every column, in order
    assert json.loads((rel / "kept.json").read_text()) == kept  # the selection's own file name
    card = (rel / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "cc-by-nc-4.0" and meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    n_kept = len(kept)
    for text in ("gpt-4-0613", "abc123def456", "accuracy", "ab" * 32, "score ≥ 4.5",
                 f"{n_kept:,} of {len(records):,}", f"| 5 | {n_kept:,} |", "Verbosity audit"):
        assert text in card, text
    assert "| 3.5 |" not in card  # the histogram is of the kept records only
    assert out["kept"] == n_kept and out["histogram"] == {"5": n_kept}
    assert out["audit"]["longest_k"]["k"] == n_kept


def test_a_release_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    make_run(tmp_path)
    release_of(tmp_path)
    before = sorted(p.name for p in (tmp_path / "release" / "alpagasus").rglob("*"))
    import pyarrow.parquet as pq

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError, match="No space"):
        release_of(tmp_path, license_="mit")
    # The earlier release is untouched and no temporary directory is left beside it.
    assert sorted(p.name for p in (tmp_path / "release" / "alpagasus").rglob("*")) == before
    assert front_matter((tmp_path / "release" / "alpagasus" / "README.md").read_text())["license"] == "cc-by-nc-4.0"
    assert [p.name for p in (tmp_path / "release").iterdir()] == ["alpagasus"]


def test_a_kept_record_that_is_not_in_the_set_is_named(tmp_path):
    records, kept = make_run(tmp_path)
    kept[4] = {**kept[4], "output": kept[4]["output"] + " (edited)"}
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    with pytest.raises(ValueError, match=r"kept\.json: record 4 is not in the instruction set"):
        release_of(tmp_path)
    # Duplicates are matched in order, each to its own position.
    a, b = ({"instruction": "i", "input": "", "output": o} for o in ("a", "b"))
    assert kept_indices([a, a, b], [a, b, a], "x") == [0, 2, 1]
    with pytest.raises(ValueError, match="record 2"):
        kept_indices([a, a, b], [a, a, a], "x")


def test_how_each_kind_of_selection_is_said():
    sel = {"method": "threshold", "threshold": 4.5, "score": "score", "random_seed": 7,
           "extra": {"top3k": {"method": "top_k", "k": 3000, "score": "expected_score"}},
           "selectors": {"diverse": {"signal": "score", "method": "top_k", "k": 1000,
                                     "diversity": {"embedding": "minilm"}},
                         "cherry": {"signal": "ifd", "method": "top_fraction", "fraction": 0.1}}}
    assert how_made("alpagasus", sel, 7) == "the records with score ≥ 4.5, as rated by the judge"
    assert how_made("random", sel, 7).startswith("a random sample (seed 7)")
    assert how_made("top3k", sel, 7) == "the 3,000 records with the highest expected_score, as rated by the judge"
    assert how_made("diverse", sel, 7) == ("the 1,000 records with the highest score, walking that ranking through "
                                           "DEITA's diversity filter over minilm")
    assert how_made("cherry", sel, 7) == "the 10% of records with the highest ifd"
    with pytest.raises(ValueError, match="'alpaca': not a selection"):
        how_made("alpaca", sel, 7)
    assert [size_category(n) for n in (999, 1000, 52_002, 9_999_999)] == ["n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


class RecordingHub:
    """Stands in for huggingface_hub.HfApi at the network boundary: the upload itself cannot run
    here (no Hub); what reaches it is recorded."""
    calls = []

    def __init__(self, token=None):
        RecordingHub.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        RecordingHub.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        RecordingHub.calls.append(("upload_folder", kw))


def test_publish_needs_a_release_and_a_token_and_uploads_the_folder(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    make_run(tmp_path)
    rel = tmp_path / "release" / "alpagasus"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(FileNotFoundError, match=r"no release here .*snakemake .*release/alpagasus"):
        publish(rel, "org/name")
    release_of(tmp_path)
    with pytest.raises(KeyError, match=r"\$HF_TOKEN"):
        publish(rel, "org/name")
    secret = "hf_" + os.urandom(8).hex()
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)
    RecordingHub.calls = []
    assert publish(rel, "org/name", private=True) == "https://huggingface.co/datasets/org/name"
    assert RecordingHub.calls[0] == ("init", secret)
    assert RecordingHub.calls[1] == ("create_repo", "org/name", {"repo_type": "dataset", "private": True, "exist_ok": True})
    kind, kw = RecordingHub.calls[2]
    assert kind == "upload_folder" and kw["folder_path"] == str(rel) and kw["repo_id"] == "org/name"
    assert kw["repo_type"] == "dataset"
    out = capsys.readouterr()
    assert secret not in out.out + out.err


def test_the_cli_says_in_one_line_what_publish_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["PYTHONPATH"] = str(REPO / "src")
    make_run(tmp_path)
    release_of(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "alpagasus", "publish", "--selection", "alpagasus", "--repo", "o/n",
                           "--results", str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "HF_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    assert release.PARQUET.startswith("data/")
