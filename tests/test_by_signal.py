"""Selectors (selection/by_signal.py, rule select_signal): ranking by any signal in the
literature's direction with the main selection's tie-break, IFD's below-1 rule, signal files
checked against the records, selectors checked at parse time, and the DAG that trains on them."""
import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, shared_path
from test_diversity import ngram_vectors

from alpagasus.core.config import ConfigError, load, merge, validate
from alpagasus.data import load_records
from alpagasus.selection import by_signal
from alpagasus.selection.agreement import content_hash
from alpagasus.selection.select import select_indices
from alpagasus.selection.signals import SignalError, read_embedding, read_signal, signal_values, unit_rows


def recs(n, tag="r"):
    return [{"instruction": f"{tag} instruction {i}", "input": "", "output": f"answer {i}"} for i in range(n)]


def sha(rec):
    # The tie-break as docs/selection.md states it, written out here independently.
    return hashlib.sha256("\x1f".join((rec["instruction"], rec["input"], rec["output"])).encode()).hexdigest()


def rule(kind="length", **kw):
    return by_signal.selector_rule({"signal": "s", **kw}, {"s": {"kind": kind}})


def kept_by(values, records, **kw):
    return by_signal.select(values, [sha(x) for x in records], rule(**kw))[0]


# --- ranking ---------------------------------------------------------------------------------

def test_top_k_in_both_directions_breaks_ties_by_content_hash_not_position():
    records = recs(8)
    values = [3.0, 1.0, 3.0, 2.0, 3.0, None, 0.0, 3.0]
    threes = sorted((i for i, v in enumerate(values) if v == 3.0), key=lambda i: sha(records[i]))
    assert kept_by(values, records, method="top_k", k=2, direction="high") == sorted(threes[:2])
    assert kept_by(values, records, method="top_k", k=5, direction="high") == sorted(threes + [3])
    assert kept_by(values, records, method="top_k", k=3, direction="low") == [1, 3, 6]
    # A record without a value is never kept, however many are asked for.
    assert kept_by(values, records, method="top_k", k=100, direction="low") == [0, 1, 2, 3, 4, 6, 7]
    # The same records in another order: the same records kept.
    perm = [7, 3, 0, 6, 2, 5, 1, 4]
    again = kept_by([values[i] for i in perm], [records[i] for i in perm], method="top_k", k=2, direction="high")
    assert sorted(perm[i] for i in again) == sorted(threes[:2])


def test_threshold_and_fraction_in_both_directions():
    records = recs(10)
    values = [float(v) for v in (5, 1, 4, 4, 2, 9, 0, 4, 7, 3)]
    assert kept_by(values, records, method="threshold", threshold=4, direction="high") == [0, 2, 3, 5, 7, 8]
    assert kept_by(values, records, method="threshold", threshold=4, direction="low") == [1, 2, 3, 4, 6, 7, 9]
    assert kept_by(values, records, method="top_fraction", fraction=0.3, direction="high") == [0, 5, 8]
    assert kept_by(values, records, method="top_fraction", fraction=0.2, direction="low") == [1, 6]


def test_by_score_it_keeps_what_the_main_selection_keeps():
    """The same ranking and tie-break as selection/select.py on real records with a judge that
    gives few distinct scores (large tie groups at the cut)."""
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())[:3000]
    rng = np.random.default_rng(1)
    scores = [float(s) for s in rng.choice([3.0, 4.0, 4.5, 5.0], size=len(alpaca), p=[0.2, 0.3, 0.4, 0.1])]
    scores[7] = None
    r = by_signal.selector_rule({"signal": "score", "method": "top_k", "k": 700})
    kept, details = by_signal.select(scores, [sha(x) for x in alpaca], r)
    assert kept == select_indices(alpaca, scores, method="top_k", k=700)
    assert details["cut"]["value"] == 4.5 and 0 < details["cut"]["ties_at_cut_kept"] < details["cut"]["ties_at_cut"]
    assert details["no_value"] == 1 and details["kept"] == 700


def test_the_literature_directions():
    assert rule(kind="length", method="top_k", k=1)["direction"] == "high"  # Long Is More: the k longest
    assert rule(kind="perplexity", method="top_k", k=1)["direction"] == "high"
    ifd = rule(kind="ifd", method="top_k", k=1)
    assert (ifd["direction"], ifd["below"]) == ("high", 1.0)
    score = by_signal.selector_rule({"signal": "expected_score", "method": "top_k", "k": 1})
    assert (score["direction"], score["below"]) == ("high", None)
    with pytest.raises(ValueError, match=r"config selection.selectors.x.direction: the literature gives no "
                                         r"direction for a signal of kind 'novelty'"):
        by_signal.selector_rule({"signal": "n", "method": "top_k", "k": 1}, {"n": {"kind": "novelty"}},
                                where="selection.selectors.x")
    # Given explicitly, a direction is the user's.
    assert rule(kind="novelty", method="top_k", k=1, direction="low")["direction"] == "low"


def test_ifd_keeps_the_highest_below_one():
    records = recs(7)
    ifd = [0.5, 1.0, 0.99, 1.7, 0.2, None, 0.98]
    # Cherry / Superfiltering: IFD >= 1 is dropped before ranking, then the highest kept.
    assert kept_by(ifd, records, kind="ifd", method="top_k", k=2) == [2, 6]
    assert kept_by(ifd, records, kind="ifd", method="top_k", k=10) == [0, 2, 4, 6]
    assert kept_by(ifd, records, kind="ifd", method="threshold", threshold=0.5) == [0, 2, 6]
    # below: null lifts the bound; another bound is the user's.
    assert kept_by(ifd, records, kind="ifd", method="top_k", k=2, below=None) == [1, 3]
    assert kept_by(ifd, records, kind="ifd", method="top_k", k=2, below=0.99) == [0, 6]
    r = rule(kind="ifd", method="top_k", k=10)
    _, details = by_signal.select(ifd, [sha(x) for x in records], r)
    assert (details["not_below"], details["no_value"], details["candidates"]) == (2, 1, 4)
    assert "fewer than the 10 asked for" in details["warnings"][0]


def test_dedupe_and_diversity_wrap_the_ranking():
    rng = np.random.default_rng(3)
    records = recs(200)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    values = list(rng.normal(size=200))
    tb = [sha(r) for r in records]
    plain = by_signal.select(values, tb, rule(method="top_k", k=30))[0]
    r = rule(method="top_k", k=30, diversity={"embedding": "e"})
    kept, details = by_signal.select(values, tb, r, x)
    sims = x[kept] @ x[kept].T
    np.fill_diagonal(sims, -1)
    assert len(kept) == 30 and kept != plain and sims.max() <= 0.9
    assert details["diversity"]["dropped"] > 0 and details["walked"] == 30 + details["diversity"]["dropped"]
    # With both, a record closer than `cosine` is a duplicate (in a cluster), one closer than tau
    # only a diversity drop.
    r2 = rule(method="threshold", threshold=0.0, dedupe={"embedding": "e", "cosine": 0.99},
              diversity={"embedding": "e", "tau": 0.9})
    kept2, d2 = by_signal.select(values, tb, r2, x)
    nd = d2["near_duplicates"]
    assert nd["removed"] == sum(len(c["duplicates"]) for c in nd["clusters"]) > 0
    assert all(s >= 0.99 for c in nd["clusters"] for s in c["cosine"])
    assert d2["diversity"]["dropped"] + nd["removed"] + len(kept2) == d2["candidates"]


# --- signal files against the records -----------------------------------------------------------

def write_signal(path: Path, records, values):
    path.write_text("".join(json.dumps({"index": i, "value": v, "record_sha256": content_hash(r)}) + "\n"
                            for i, (r, v) in enumerate(zip(records, values))))
    return path


def write_embedding(d: Path, records, x):
    np.save(d / "emb.npy", x.astype(np.float16))
    write_signal(d / "emb.jsonl", records, [None] * len(records))
    return d / "emb.npy", d / "emb.jsonl"


def refused(match, fn, *args):
    with pytest.raises(SignalError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_signal_file_that_does_not_match_the_records_stops_naming_it(tmp_path):
    records = recs(5)
    hashes = [content_hash(r) for r in records]
    good = write_signal(tmp_path / "good.jsonl", records, [1, 2, None, 4, 5])
    assert signal_values(good, hashes=hashes) == [1.0, 2.0, None, 4.0, 5.0]
    lines = good.read_text().splitlines()
    cases = {
        "short": ("\n".join(lines[:4]) + "\n", r"short.jsonl: 4 lines for the 5 records of x.json"),
        "swapped": ("\n".join([lines[1], lines[0], *lines[2:]]) + "\n", r"swapped.jsonl: line 1: index 1 where 0 was expected"),
        "other": (write_signal(tmp_path / "o.jsonl", [*records[:3], {**records[3], "output": "edited"}, records[4]],
                               [1, 2, 3, 4, 5]).read_text(),
                  r"other.jsonl: line 4: record_sha256 '[0-9a-f]{64}' is not that of record 3 of x.json"),
        "nan": (good.read_text().replace('"value": 2', '"value": NaN'), r"nan.jsonl: line 2: field 'value': nan is neither"),
        "text": (good.read_text().replace('"value": 2', '"value": "2"'), r"text.jsonl: line 2: field 'value': '2' is neither"),
        "broken": (good.read_text().replace("}", "", 1), r"broken.jsonl: line 1: not valid JSON"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / f"{name}.jsonl").write_text(text)
        msg = refused(match, lambda p: read_signal(p, hashes=hashes, records_path="x.json"), tmp_path / f"{name}.jsonl")
        assert msg.startswith(str(tmp_path / f"{name}.jsonl")), msg


def test_an_embedding_that_does_not_match_stops_naming_it(tmp_path):
    records = recs(6)
    hashes = [content_hash(r) for r in records]
    x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    npy, jsonl = write_embedding(tmp_path, records, x)
    def read(npy_path, hashes=hashes):
        return read_embedding(npy_path, jsonl_path=jsonl, hashes=hashes)

    got = unit_rows(read(npy))
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    assert np.allclose(got, x, atol=2e-3)
    np.save(tmp_path / "rows.npy", x[:5].astype(np.float16))
    refused(r"rows.npy: a 2-D array of shape \(5, 8\), expected one row for each of the 6 records", read,
            tmp_path / "rows.npy")
    np.save(tmp_path / "norm.npy", (x * np.array([[1], [1], [2], [1], [1], [1]])).astype(np.float16))
    refused(r"norm.npy: row 2 has norm 2, expected 1", read, tmp_path / "norm.npy")
    np.save(tmp_path / "flat.npy", x[:, 0].astype(np.float16))
    refused(r"flat.npy: a 1-D array of shape \(6,\)", read, tmp_path / "flat.npy")
    np.save(tmp_path / "wide.npy", x)
    refused(r"wide.npy: dtype float32, expected float16", read, tmp_path / "wide.npy")
    inf = x.astype(np.float16)
    inf[3, 1] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    refused(r"inf.npy: row 3 is not finite", read, tmp_path / "inf.npy")
    refused(r"emb.jsonl: 6 lines for the 7 records", read, npy, hashes + ["0" * 64])


def test_write_selection_checks_before_it_writes(tmp_path):
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())[:400]
    records_path = tmp_path / "alpaca_52k.json"
    records_path.write_text(json.dumps(alpaca))
    lengths = [float(len(r["output"])) for r in alpaca]
    signal = write_signal(tmp_path / "length.jsonl", alpaca, lengths)
    npy, jsonl = write_embedding(tmp_path, alpaca, ngram_vectors([r["instruction"] + r["output"] for r in alpaca]))
    r = by_signal.selector_rule({"signal": "length", "method": "top_k", "k": 50,
                                 "dedupe": {"embedding": "emb", "cosine": 0.6}}, {"length": {"kind": "length"}})
    out, details = tmp_path / "sel" / "longest.json", tmp_path / "sel" / "longest.details.json"
    kept = by_signal.write_selection(records_path, r, out, details, signal_path=signal,
                                     embedding_npy=npy, embedding_jsonl=jsonl, name="longest")
    assert load_records(out) == [alpaca[i] for i in kept] and kept == sorted(kept)  # Alpaca's order
    d = json.loads(details.read_text())
    assert d["selector"] == "longest" and d["rule"] == r and d["kept_indices"] == kept and d["kept"] == 50
    # Among the longest, whatever the dedupe left: no two kept closer than 0.6, and each removed
    # record named in the cluster of the kept one it duplicates.
    assert d["near_duplicates"]["removed"] == sum(len(c["duplicates"]) for c in d["near_duplicates"]["clusters"])
    assert d["walked"] == 50 + d["near_duplicates"]["removed"]
    assert min(lengths[i] for i in kept) >= sorted(lengths, reverse=True)[d["walked"] - 1]
    # A signal of other records: one line naming the file, nothing written.
    write_signal(signal, alpaca[:399] + [alpaca[0]], lengths)
    out2 = tmp_path / "sel" / "again.json"
    with pytest.raises(SignalError, match=r"length.jsonl: line 400: record_sha256"):
        by_signal.write_selection(records_path, r, out2, tmp_path / "sel" / "again.details.json",
                                  signal_path=signal, embedding_npy=npy, embedding_jsonl=jsonl)
    assert sorted(p.name for p in out.parent.iterdir()) == ["longest.details.json", "longest.json"]


# --- the config ----------------------------------------------------------------------------------

def overlaid(over):
    return validate(merge(copy.deepcopy(load()), over))


def test_a_selector_naming_no_configured_signal_is_a_parse_time_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^config selection.selectors.cherry.signal: no signal named 'ifd' "
                                          r"\(signals: length; or score / expected_score\)$"):
        overlaid({"signals": {"length": {"kind": "length"}},
                  "selection": {"selectors": {"cherry": {"signal": "ifd", "method": "top_k", "k": 5}}}})
    with pytest.raises(ConfigError, match=r"^config selection.selectors.d.diversity.embedding: 'emb' is not under "
                                          r"signals:"):
        overlaid({"selection": {"selectors": {"d": {"signal": "score", "method": "top_k", "k": 5,
                                                    "diversity": {"embedding": "emb"}}}}})
    with pytest.raises(ConfigError, match=r"^config selection.selectors.d.k: required with method: top_k"):
        overlaid({"selection": {"selectors": {"d": {"signal": "score", "method": "top_k"}}}})
    with pytest.raises(ConfigError, match=r"^config training.variants: 'longest' is neither"):
        overlaid({"training": {"variants": ["alpagasus", "longest"]}})
    cfg = overlaid({"signals": {"length": {"kind": "length"}},
                    "selection": {"selectors": {"longest": {"signal": "length", "method": "top_k", "k": 5}}},
                    "training": {"variants": ["alpagasus", "longest"]}})
    # The schema fills a selector's defaults; the literature's values are resolved for its rule.
    assert cfg["selection"]["selectors"]["longest"]["direction"] == "literature"


SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def dry_run(workdir, *args):
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "-n", "--cores", "2", *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def jobs(out: str) -> list[dict]:
    """The dry run's jobs: each one's rule and its input/output lines."""
    found = []
    for block in out.split("\nrule ")[1:] + out.split("\ncheckpoint ")[1:]:
        head, *lines = block.splitlines()
        job = {"rule": head.rstrip(":")}
        for ln in lines:
            key, _, val = ln.strip().partition(": ")
            if key in ("input", "output"):
                job[key] = val.split(", ")
            if not ln.startswith(" "):
                break
        found.append(job)
    return found


def test_a_dry_run_selects_by_signal_and_trains_the_variant(tmp_path):
    over = {"signals": {"length": {"kind": "length"}, "emb": {"kind": "embedding", "model": "hashing"}},
            "selection": {"selectors": {
                "judge_top": {"signal": "score", "method": "top_k", "k": 100},
                "longest": {"signal": "length", "method": "top_k", "k": 100, "diversity": {"embedding": "emb"}}}},
            "training": {"variants": ["alpagasus", "longest", "judge_top"]}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(over))
    signals = tmp_path / "results/smoke/signals"
    signals.mkdir(parents=True)
    for f in ("length.jsonl", "emb.npy", "emb.jsonl"):  # another rule's outputs, here already made
        (signals / f).write_text("")
    targets = ["results/smoke/checkpoints/longest-tiny", "results/smoke/checkpoints/judge_top-tiny"]
    proc = dry_run(tmp_path, *targets, "--configfile", REPO / "config/smoke.yaml", tmp_path / "o.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = jobs(proc.stdout + proc.stderr)
    select = {tuple(j["output"]): j for j in planned if j["rule"] == "select_signal"}
    longest = select[("results/smoke/selections/longest.json", "results/smoke/selections/longest.details.json")]
    assert set(longest["input"]) == {"results/smoke/alpaca_52k.json", "results/smoke/signals/length.jsonl",
                                     "results/smoke/signals/emb.npy", "results/smoke/signals/emb.jsonl"}
    judge = select[("results/smoke/selections/judge_top.json", "results/smoke/selections/judge_top.details.json")]
    assert set(judge["input"]) == {"results/smoke/alpaca_52k.json", "results/smoke/scores.jsonl"}
    trains = {j["output"][0]: j["input"] for j in planned if j["rule"] == "train"}
    assert trains == {"results/smoke/checkpoints/longest-tiny": ["results/smoke/selections/longest.json"],
                      "results/smoke/checkpoints/judge_top-tiny": ["results/smoke/selections/judge_top.json"]}
    # A selector naming a signal that is not configured stops the parse, naming the key.
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(
        {"selection": {"selectors": {"cherry": {"signal": "ifd", "method": "top_k", "k": 5}}}}))
    bad = dry_run(tmp_path, "--configfile", REPO / "config/smoke.yaml", tmp_path / "bad.yaml")
    assert bad.returncode != 0
    assert "config selection.selectors.cherry.signal: no signal named 'ifd'" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_a_real_run_selects_from_signal_files_and_stops_on_a_stale_one(tmp_path):
    """The miniature's records, a length signal and an n-gram embedding written for them, and the
    rule run for real; then a signal of other records stops it with the file named."""
    over = {"data": {"miniature": {"n_records": 300}},
            "signals": {"length": {"kind": "length"}, "emb": {"kind": "embedding", "model": "hashing"}},
            "selection": {"selectors": {
                "judge_top": {"signal": "score", "method": "top_k", "k": 40},
                "longest": {"signal": "length", "method": "top_k", "k": 40,
                            "dedupe": {"embedding": "emb", "cosine": 0.9}}}}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(over))
    cfg = ["--configfile", REPO / "config/smoke.yaml", tmp_path / "o.yaml"]
    res = tmp_path / "results/smoke"

    def run(*targets):
        return subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "2", *map(str, targets), *map(str, cfg)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO / "src")})

    assert run("results/smoke/alpaca_52k.json").returncode == 0
    records = load_records(res / "alpaca_52k.json")
    (res / "signals").mkdir()
    lengths = [float(len(r["output"])) for r in records]
    write_signal(res / "signals/length.jsonl", records, lengths)
    np.save(res / "signals/emb.npy", ngram_vectors([r["instruction"] + r["output"] for r in records]).astype(np.float16))
    write_signal(res / "signals/emb.jsonl", records, [None] * len(records))
    proc = run("results/smoke/selections/longest.json", "results/smoke/selections/judge_top.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    longest = load_records(res / "selections/longest.json")
    details = json.loads((res / "selections/longest.details.json").read_text())
    assert len(longest) == 40 and longest == [records[i] for i in details["kept_indices"]]
    assert min(len(r["output"]) for r in longest) >= sorted(lengths, reverse=True)[details["walked"] - 1]
    assert len(load_records(res / "selections/judge_top.json")) == 40

    write_signal(res / "signals/length.jsonl", records[1:] + records[:1], lengths)  # other order
    proc = run("results/smoke/selections/longest.json", "--forcerun", "select_signal")
    assert proc.returncode != 0
    log = (res / "logs/select_longest.log").read_text()
    assert "signals/length.jsonl: line 1: record_sha256" in log


def test_ifd_under_a_model_this_pipeline_trains_waits_for_its_training(tmp_path):
    # config/selectors_smoke.yaml: the miniature's IFD comes from its own full-set model.
    proc = dry_run(tmp_path, "results/smoke/signals/ifd.jsonl", "--configfile", REPO / "config/smoke.yaml",
                   REPO / "config/selectors_smoke.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = jobs(proc.stdout)
    train = [j for j in planned if j["rule"] == "train"]
    signal = [j for j in planned if j["rule"] == "signal_lm"]
    assert [j["output"] for j in train] == [["results/smoke/checkpoints/alpaca-tiny"]]
    assert len(signal) == 1 and "results/smoke/checkpoints/alpaca-tiny" in signal[0]["input"]
