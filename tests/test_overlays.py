"""How an overlay changes the base config: a mapping merges key by key, anything else (null
included) replaces; an overlay's `{}` that would silently keep the base's entries is an error;
a selection that keeps everything is warned about. Checked in the library (alpagasus.core.config,
the CLI's path) and through Snakemake's own merge, which the workflow uses."""
import logging

import pytest
from conftest import REPO
from test_workflow import overlay, planned_jobs, snakemake

from alpagasus.core.config import ConfigError, load, merge, selection_warnings
from alpagasus.core.io import write_jsonl
from alpagasus.selection.select import keeps_everything, write_selection

BASE = REPO / "config" / "config.yaml"
PAPER_EXTRA = {"t40", "top3k", "top6k"}


def test_merge_mapping_key_by_key_list_and_null_replace():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2, 3], "m": {"k": 1}}
    over = {"a": {"y": {"q": 9}}, "l": [4], "m": None}
    assert merge(base, over) == {"a": {"x": 1, "y": {"p": 1, "q": 9}}, "l": [4], "m": None}
    assert base["a"]["y"]["q"] == 2  # the base is not modified


def test_null_removes_the_base_extra_selections(tmp_path):
    cfg = load(BASE, overlay(tmp_path / "o.yaml", {"selection": {"extra": None}}))
    assert cfg["selection"]["extra"] is None and cfg["selection"]["threshold"] == 4.5


def test_an_empty_mapping_that_removes_nothing_is_an_error_saying_what_to_write(tmp_path):
    o = overlay(tmp_path / "o.yaml", {"selection": {"extra": {}}})
    with pytest.raises(ConfigError, match=r"o.yaml: selection.extra: \{\} removes nothing: .*t40, top3k, top6k "
                                          r"stay; write `extra: null` to remove them"):
        load(BASE, o)
    # Where the base holds nothing, {} is harmless (config.yaml's own `references: {}`).
    load(BASE, overlay(tmp_path / "p.yaml", {"evaluation": {"references": {}}}))


def test_snakemake_merges_overlays_the_same_way(tmp_path):
    targets = [f"results/selections/{n}.json" for n in sorted(PAPER_EXTRA)]
    data = {"data": {"source": "miniature", "miniature": {"n_records": 100}},
            "rating": {"judge": "verifier"}, "evaluation": {"judge": "verifier"}}
    # Inherited: the paper's extra selections are part of the default target.
    o = overlay(tmp_path / "keep.yaml", data)
    assert "select_extra" in planned_jobs(tmp_path, [], "--configfile", o)
    # null: gone from the DAG, and asking for one is no longer a known target.
    o = overlay(tmp_path / "null.yaml", {**data, "selection": {"extra": None}})
    assert "select_extra" not in planned_jobs(tmp_path, [], "--configfile", o)
    proc = snakemake(tmp_path, targets[0], "-n", "--configfile", o, check=False)
    assert proc.returncode != 0
    # {}: stopped at parse time, the overlay file and the fix named, nothing run.
    o = overlay(tmp_path / "empty.yaml", {**data, "selection": {"extra": {}}})
    proc = snakemake(tmp_path, "-n", "--configfile", o, check=False)
    assert proc.returncode != 0
    assert "empty.yaml: selection.extra: {} removes nothing" in proc.stdout + proc.stderr
    assert "write `extra: null`" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_top_k_beyond_max_records_is_warned_at_parse_time(tmp_path):
    cfg = load(BASE, overlay(tmp_path / "o.yaml", {"data": {"source": "local", "local_path": str(BASE),
                                                             "max_records": 300}}))
    warnings = selection_warnings(cfg)
    assert len(warnings) == 2 and all("max_records = 300" in w for w in warnings)
    assert "selection.extra.top3k: top_k k = 3000" in warnings[0]
    assert selection_warnings(load(BASE)) == []  # the paper's run: nothing to warn about


@pytest.mark.parametrize("rule, scores, expected", [
    ({"method": "top_k", "k": 3000}, [4.0, 4.5, None], "k = 3000 >= the 2 scored records"),
    ({"method": "threshold", "threshold": 2.0}, [4.0, 4.5, 3.0], "threshold 2.0 drops no scored record (lowest score 3)"),
    ({"method": "top_fraction", "fraction": 1.0}, [4.0, 4.5], "top_fraction keeps all 2 scored records"),
    ({"method": "threshold", "threshold": 4.5}, [4.0, 4.5, 3.0], None),
    ({"method": "top_k", "k": 1}, [4.0, 4.5], None),
])
def test_keeps_everything(rule, scores, expected):
    from alpagasus.selection.select import select_indices

    kept = select_indices([{"instruction": str(i), "input": "", "output": "o"} for i in range(len(scores))],
                          scores, **rule)
    message = keeps_everything(rule, scores, kept)
    assert (message is None) if expected is None else (expected in message)


def test_a_selection_that_keeps_everything_warns_in_its_log(tmp_path, caplog):
    records = [{"instruction": f"q{i}", "input": "", "output": "a"} for i in range(5)]
    (tmp_path / "r.json").write_text(__import__("json").dumps(records))
    write_jsonl(tmp_path / "s.jsonl", [{"index": i, "score": 4.0, "status": "scored"} for i in range(5)])
    with caplog.at_level(logging.WARNING, logger="alpagasus.selection.select"):
        kept = write_selection(tmp_path / "r.json", tmp_path / "s.jsonl", {"method": "top_k", "k": 3000},
                               tmp_path / "out.json")
    assert kept == list(range(5))
    assert "keeps everything: k = 3000 >= the 5 scored records" in caplog.text
