"""Selectors compared at one k, the data-size curve and seeds (issue #17 items 3, 6, 8): the plan
of generated comparisons, the table and plots on synthetic judgements, the config checks, and
one real (small) snakemake run of the miniature's overlay."""
import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from alpagasus.core.config import ConfigError, load
from alpagasus.data import load_records
from alpagasus.data.miniature import solve
from alpagasus.evaluation import selectors_table as st

SMOKE = REPO / "config" / "smoke.yaml"
OVERLAY = REPO / "config" / "selectors_smoke.yaml"


# --- the plan: comparisons generated, seeds applied --------------------------------------------


def test_the_plan_pairs_each_selector_with_random_at_k_and_the_full_set_per_seed():
    ev = {"comparisons": [["alpagasus", "alpaca"]], "selectors": {"names": ["ifd", "longest"], "k": 500},
          "data_size": ["top3k", "alpagasus"], "seeds": [42, 7]}
    p = st.plan(ev, training_seed=42)
    got = {(e["selector"], e["opponent"], e["seed"]): (e["model_a"], e["model_b"]) for e in p["selectors"]}
    assert got == {
        ("ifd", "random", 42): ("ifd", "random_k500"), ("ifd", "random", 7): ("ifd_seed7", "random_k500_seed7"),
        ("ifd", "alpaca", 42): ("ifd", "alpaca"), ("ifd", "alpaca", 7): ("ifd_seed7", "alpaca"),
        ("longest", "random", 42): ("longest", "random_k500"),
        ("longest", "random", 7): ("longest_seed7", "random_k500_seed7"),
        ("longest", "alpaca", 42): ("longest", "alpaca"), ("longest", "alpaca", 7): ("longest_seed7", "alpaca"),
        # random's own row, against the full set only
        ("random", "alpaca", 42): ("random_k500", "alpaca"), ("random", "alpaca", 7): ("random_k500_seed7", "alpaca"),
    }
    assert [(e["model_a"], e["seed"]) for e in p["data_size"]] == [("top3k", 42), ("top3k_seed7", 7),
                                                                   ("alpagasus", 42), ("alpagasus_seed7", 7)]
    gen = st.generated_comparisons(ev, 42)
    assert ["alpagasus", "alpaca"] not in gen  # configured already: judged once
    assert ["alpagasus_seed7", "alpaca"] in gen and len(gen) == len({tuple(g) for g in gen})
    assert st.split_seed("ifd_seed7", 42) == ("ifd", 7) and st.split_seed("ifd", 42) == ("ifd", 42)
    # No harness configured: nothing generated.
    assert st.generated_comparisons({"comparisons": [], "selectors": {}, "data_size": []}, 42) == []


# --- the table on synthetic judgements ----------------------------------------------------------


def _judgements(path: Path, outcomes, len_a=10, len_b=10):
    """A judgement file whose items have the given outcomes for A (+1 win, 0 tie, -1 lose) in both orders."""
    rows = []
    for i, o in enumerate(outcomes):
        a, b = {1: (9, 3), 0: (5, 5), -1: (3, 9)}[o]
        rows.append({"id": str(i), "answer_a": "x" * len_a, "answer_b": "y" * len_b,
                     "order1": {"scores": [a, b]}, "order2": {"scores": [b, a]}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _selection(path: Path, lengths):
    path.write_text(json.dumps([{"instruction": f"i{n}", "input": "", "output": "o" * n} for n in lengths]))
    return str(path)


def test_rows_pool_test_sets_and_seeds_and_report_the_spread_over_seeds(tmp_path):
    # Seed 42: 8 wins, 2 losses on each test set (winning score 1.6); seed 7: 5/5 (1.0).
    entries = []
    for seed, (w, l) in ((42, (8, 2)), (7, (5, 5))):
        paths = {t: _judgements(tmp_path / f"{seed}" / f"{t}.jsonl", [1] * w + [-1] * l) for t in ("t1", "t2")}
        entries.append({"selector": "ifd", "opponent": "random", "seed": seed, "paths": paths})
    sel = {"ifd": _selection(tmp_path / "ifd.json", [10, 20, 30])}
    rows = st.table_rows(entries, sel, "verifier", k=3, bootstrap_samples=200, seed=0)
    by = {r["test_set"]: r for r in rows}
    assert list(by) == ["t1", "t2", "pooled"]
    pooled = by["pooled"]
    assert pooled["n"] == 40 and (pooled["win"], pooled["lose"]) == (26, 14)
    assert pooled["winning_score"] == pytest.approx(1 + 12 / 40)
    assert pooled["ci_low"] < pooled["winning_score"] < pooled["ci_high"]
    assert pooled["seed_mean"] == pytest.approx(1.3) and pooled["seed_sd"] == pytest.approx(np.std([1.6, 1.0], ddof=1), abs=1e-4)
    assert pooled["seeds"] == 2 and pooled["k"] == 3 and pooled["kept"] == 3
    assert pooled["kept_mean_response_chars"] == 20.0
    # Equal lengths: the length-controlled score is the raw one (up to the ridge).
    assert pooled["lc_winning_score"] == pytest.approx(pooled["winning_score"], abs=1e-3)
    out = tmp_path / "selectors_tiny.csv"
    st.write_table(rows, out)
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == st.COLUMNS
        assert {"selector", "k", "opponent", "winning_score", "ci_low", "ci_high", "lc_winning_score",
                "kept_mean_response_chars", "seed_mean", "seed_sd"} <= set(reader.fieldnames)
        assert len(list(reader)) == 3


def test_one_seed_leaves_the_spread_empty_and_a_length_biased_win_is_corrected(tmp_path):
    # Equal quality; A is longer on 70% of the items and the judge prefers the longer answer
    # 80% of the time (the measurement): the raw score is all length.
    rng = np.random.default_rng(0)
    rows = []
    for i in range(400):
        longer = bool(rng.random() < 0.7)
        la, lb = (40, 10) if longer else (10, 40)
        a_wins = longer == bool(rng.random() < 0.8)
        a, b = (9, 3) if a_wins else (3, 9)
        rows.append({"id": str(i), "answer_a": "x" * la, "answer_b": "y" * lb,
                     "order1": {"scores": [a, b]}, "order2": {"scores": [b, a]}})
    p = tmp_path / "j.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = [{"selector": "longest", "opponent": "random", "seed": 42, "paths": {"mini": str(p)}}]
    [row] = st.table_rows(entries, {"longest": _selection(tmp_path / "s.json", [5])}, "j", k=1,
                          bootstrap_samples=200, seed=0)
    assert row["test_set"] == "mini" and row["seed_sd"] is None and row["seeds"] == 1
    assert row["winning_score"] > 1.1, row
    assert abs(row["lc_winning_score"] - 1) < abs(row["winning_score"] - 1) / 2, row


def test_the_plots_are_written(tmp_path):
    entries, sel = [], {}
    for name, w in (("ifd", 7), ("verifier", 9), ("random", 5)):
        for opp in ("random", "alpaca"):
            if name == opp:
                continue
            entries.append({"selector": name, "opponent": opp, "seed": 42,
                            "paths": {"mini": _judgements(tmp_path / name / f"{opp}.jsonl", [1] * w + [-1] * (10 - w))}})
        sel[name] = _selection(tmp_path / f"{name}.json", [3, 4])
    st.write_selectors(entries, sel, "v", 2, tmp_path / "s.csv", tmp_path / "s.png", title="t", bootstrap_samples=100)
    # On the data-size curve each selection keeps a size of its own (a threshold's, not k).
    sel["verifier"] = _selection(tmp_path / "verifier.json", [3, 4, 5, 6, 7])
    ds = [{**e, "opponent": "alpaca"} for e in entries if e["opponent"] == "alpaca"]
    st.write_data_size(ds, sel, "v", tmp_path / "d.csv", tmp_path / "d.png", title="t", bootstrap_samples=100)
    for f in ("s.png", "d.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "d.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        kept = {r["selector"]: r["kept"] for r in reader}
        assert reader.fieldnames == st.DATA_SIZE_COLUMNS
    assert kept == {"ifd": "2", "verifier": "5", "random": "2"}, kept


# --- config checks --------------------------------------------------------------------------


def _load(tmp_path, overlay: dict):
    f = tmp_path / "o.yaml"
    f.write_text(yaml.safe_dump(overlay))
    return load(REPO / "config" / "config.yaml", SMOKE, f)


def test_a_compared_selector_takes_the_comparisons_k(tmp_path):
    cfg = _load(tmp_path, {"selection": {"selectors": {"v": {"signal": "score", "method": "top_k"}}},
                           "evaluation": {"selectors": {"names": ["v"], "k": 100}}})
    assert cfg["selection"]["selectors"]["v"]["k"] == 100
    assert cfg["evaluation"]["seeds"] is None  # the training seed alone


@pytest.mark.parametrize("overlay, key", [
    ({"evaluation": {"selectors": {"names": ["nope"], "k": 10}}}, "evaluation.selectors.names: no selector named 'nope'"),
    ({"selection": {"selectors": {"v": {"signal": "score", "method": "top_k"}}},
      "evaluation": {"selectors": {"names": ["v"], "k": None}}}, "evaluation.selectors.k: required"),
    ({"selection": {"selectors": {"v": {"signal": "score", "method": "threshold", "threshold": 4}}},
      "evaluation": {"selectors": {"names": ["v"], "k": 10}}}, "selection.selectors.v.method"),
    ({"selection": {"selectors": {"v": {"signal": "score", "method": "top_k", "k": 5}}},
      "evaluation": {"selectors": {"names": ["v"], "k": 10}}}, "selection.selectors.v.k: 5"),
    ({"evaluation": {"selectors": {"names": ["random"], "k": 10}}}, "evaluation.selectors.names: 'random'"),
    ({"evaluation": {"data_size": ["top9"]}}, "evaluation.data_size: 'top9'"),
    ({"selection": {"selectors": {"v_seed3": {"signal": "score", "method": "top_k", "k": 5}}}}, "'v_seed3'"),
])
def test_bad_comparison_config_names_the_key(tmp_path, overlay, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("(", r"\(")):
        _load(tmp_path, overlay)


# --- a real run: the miniature's overlay, shrunk -------------------------------------------------


@pytest.mark.slow
def test_the_overlay_writes_the_selectors_table_through_snakemake(tmp_path):
    # The shipped overlay with one selector, 2 seeds and 10 training steps: the rows and columns
    # are what is checked here, not the models (the README's table comes from the full overlay;
    # the miniature's five selectors, tests/test_miniature.py). The data-size curve holds the
    # selector only (a size of its own per selection: test_the_plots_are_written).
    shrink = tmp_path / "shrink.yaml"
    shrink.write_text(yaml.safe_dump({"evaluation": {"seeds": [42, 43], "data_size": ["verifier"],
                                                     "selectors": {"names": ["verifier"]}},
                                      # the selectors not compared here still need their k
                                      "selection": {"selectors": {n: {"k": 1000} for n in ("cherry", "longest", "diverse")}},
                                      "training": {"sizes": {"tiny": {"max_steps": 10, "save_every_steps": 10}}}}))
    cfg = yaml.safe_load(SMOKE.read_text())
    res = tmp_path / cfg["results_dir"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", "--configfile", str(SMOKE), str(OVERLAY), str(shrink), "--",
           f"{cfg['results_dir']}/selectors_tiny.csv", f"{cfg['results_dir']}/data_size_tiny.csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-6000:]
    with open(res / "selectors_tiny.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == st.COLUMNS
    k = yaml.safe_load(OVERLAY.read_text())["evaluation"]["selectors"]["k"]
    got = {(r["selector"], r["opponent"]) for r in rows}
    assert got == {("verifier", "random"), ("verifier", "alpaca"), ("random", "alpaca")}
    assert all(r["k"] == str(k) and r["kept"] == str(k) and r["seeds"] == "2" and r["test_set"] == "mini"
               for r in rows)
    assert all(r["winning_score"] and r["lc_winning_score"] and r["seed_sd"] for r in rows)
    # Each seed is a training of its own, with its seed.
    for v in ("verifier", "random_k1000"):
        logs = [json.loads((res / "checkpoints" / f"{name}-tiny" / "train_log.json").read_text())
                for name in (v, f"{v}_seed43")]
        assert [lg.get("seed") for lg in logs] == [42, 43], logs[0].keys()
    # The verifier's top k are all correct answers; random's are a draw of the whole set.
    kept = load_records(res / "selections" / "verifier.json")
    assert all(r["output"] == solve(r["instruction"], r["input"]) for r in kept)
    assert len(load_records(res / "selections" / "random_k1000.json")) == k
    # The data-size curve from the same machinery: each selection against the full set, its size its own.
    curve = st.read_table(res / "data_size_tiny.csv")
    assert [(r["selector"], r["opponent"], r["seeds"]) for r in curve] == [("verifier", "alpaca", "2")]
    assert curve[0]["kept"] == str(k)
    # verifier vs alpaca is one comparison, judged once for both tables.
    same = [r for r in rows if (r["selector"], r["opponent"]) == ("verifier", "alpaca")][0]
    assert same["winning_score"] == curve[0]["winning_score"]
    assert (res / "plots" / "data_size_tiny.png").stat().st_size > 0
    # The generated comparisons are ordinary ones: judged by judge_pair in both orders.
    assert (res / "judgements" / "tiny" / "verifier_seed43-vs-random_k1000_seed43" / "mini.jsonl").exists()


# --- the README's selectors block and the report's section, from a synthetic results dir -------


def _fake_results(tmp_path):
    """A results dir as the overlay leaves it: selections, answers of 2 seeds, the table."""
    from alpagasus.evaluation.selectors_table import random_variant

    res = tmp_path / "res"
    (res / "selections").mkdir(parents=True)
    rev = "Write the word backwards."
    good = [{"instruction": rev, "input": w, "output": w[::-1]} for w in ("abc", "dog", "cats")]
    bad = [{"instruction": rev, "input": "emu", "output": "emu"}]
    (res / "selections" / "verifier.json").write_text(json.dumps(good + good[:1]))
    (res / "selections" / f"{random_variant(4)}.json").write_text(json.dumps(good[:2] + bad + bad))
    for variant, hits in (("verifier", [3, 2]), (random_variant(4), [1, 1])):
        for name, h in zip((variant, f"{variant}_seed43"), hits):
            d = res / "generations" / f"{name}-tiny"
            d.mkdir(parents=True)
            d.joinpath("mini.jsonl").write_text("".join(
                json.dumps({"id": str(i), "answer": "x" if i >= h else "r", "reference": "r"}) + "\n" for i in range(4)))
    entries = []
    for sel, opp, w in (("verifier", "random", 6), ("verifier", "alpaca", 7), ("random", "alpaca", 5)):
        for seed in (42, 43):
            entries.append({"selector": sel, "opponent": opp, "seed": seed, "paths": {
                "mini": _judgements(tmp_path / "j" / f"{sel}-{opp}-{seed}.jsonl", [1] * w + [-1] * (10 - w))}})
    sels = {"verifier": str(res / "selections" / "verifier.json"),
            "random": str(res / "selections" / f"{random_variant(4)}.json")}
    st.write_selectors(entries, sels, "verifier", 4, res / "selectors_tiny.csv", res / "plots" / "selectors_tiny.png",
                       title="t", bootstrap_samples=100)
    return res


def test_the_readme_selectors_block_is_printed_from_the_results(tmp_path):
    from alpagasus.reporting import miniature_table as mt

    res = _fake_results(tmp_path)
    text = mt.selectors_markdown(res)
    lines = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()[2:]}
    assert set(lines) == {"verifier", "random"}
    v, r = lines["verifier"], lines["random"]
    assert v[1] == "4" and v[2] == "1.000" and r[2] == "0.500"        # precision from solve()
    assert v[3] == "3.2" and r[3] == "3.0"                            # mean response chars
    assert v[4] == f"0.625 ± {np.std([0.75, 0.5], ddof=1):.3f}"       # exact match over 2 seeds
    assert v[5].startswith("1.200 [") and r[5] == ""                  # vs random; random has none
    assert "2 seeds" in text.splitlines()[0] and "k = 4" in text.splitlines()[0]
    # Rewritten between its own markers, the main block left alone.
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{mt.START}\nmain\n{mt.END}\nb\n{mt.SELECTORS_START}\nold\n{mt.SELECTORS_END}\nc\n")
    assert mt.main([str(res), "--selectors", "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert mt.committed_section(new, start=mt.SELECTORS_START, end=mt.SELECTORS_END) == text
    assert mt.committed_section(new) == "main\n"


def test_the_report_has_a_selectors_section(tmp_path):
    from alpagasus.reporting.report import _harness_section

    res = _fake_results(tmp_path)
    html = "".join(_harness_section([("tiny", "selectors", res / "selectors_tiny.csv",
                                      res / "plots" / "selectors_tiny.png")]))
    assert "Selectors compared" in html and "k = 4" in html and "data:image/png;base64," in html
    assert html.count("<tr>") == 1 + 3  # header + a row per selector and opponent
    assert _harness_section([]) == []
