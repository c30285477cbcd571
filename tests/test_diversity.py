"""DEITA's diversity filter and near-duplicate removal (selection/diversity.py,
selection/near_duplicates.py): the blocked walk against a brute-force reading of the rule, its
properties whatever the block size, and planted paraphrases among real Alpaca records."""
import json
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import REPO, shared_path

from alpagasus.selection.diversity import diversity_filter, walk
from alpagasus.selection.near_duplicates import remove_near_duplicates


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x, order, tau=None, cosine=None, k=None):
    """The rule read literally: one candidate at a time, its float64 similarity to each kept."""
    kept = []
    for i in order:
        if k is not None and len(kept) >= k:
            break
        sims = [float(np.dot(x[i].astype(np.float64), x[j].astype(np.float64))) for j in kept]
        if sims and ((tau is not None and max(sims) > tau) or (cosine is not None and max(sims) >= cosine)):
            continue
        kept.append(int(i))
    return kept


def clear_of(x, threshold, margin=1e-6):
    """No pair's similarity within ``margin`` of the threshold: float32 products and the float64
    reference then agree on every comparison."""
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    return not (np.abs(s - threshold) < margin).any()


@pytest.mark.parametrize("seed", range(12))
def test_the_blocked_walk_keeps_exactly_what_the_rule_keeps(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(40, 400)), int(rng.integers(2, 8))  # low dimension: many records too close
    x = unit_rows(rng, n, d)
    order = rng.permutation(n)
    tau = float(rng.uniform(0.5, 0.97))
    while not clear_of(x, tau):
        tau -= 0.003
    k = int(rng.integers(2, n)) if seed % 2 else None
    want = brute_force(x, order, tau=tau, k=k)
    assert 1 < len(want) < n  # the rule drops some and keeps some here: a real test of both
    for block, chunk in ((1, 1), (7, 3), (64, 5), (1024, 8192)):
        assert diversity_filter(x, order, tau, k, block=block, chunk=chunk) == want, (block, chunk)
    # near-duplicates: `>=` at the threshold, the same walk
    assert walk(x, order, cosine=tau, k=k, block=16, chunk=4).kept == brute_force(x, order, cosine=tau, k=k)


def test_properties_of_the_kept_set():
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 600, 5)
    order = rng.permutation(600)
    tau = 0.9
    full = walk(x, order, tau=tau, block=50)
    kept = full.kept
    sims = x[kept] @ x[kept].T
    np.fill_diagonal(sims, -1)
    assert sims.max() <= tau  # every pair kept is far enough apart
    assert kept[0] == order[0]  # the best-ranked record is always kept
    assert [i for i in order if i in set(kept)] == kept  # in ranking order
    pos = {int(r): p for p, r in enumerate(order)}
    for rec, (rep, sim) in full.dropped.items():  # each dropped one: too close to one kept before it
        assert pos[rep] < pos[rec] and sim > tau
        assert float(x[rec] @ x[rep]) == pytest.approx(sim, abs=1e-5)
    assert len(full.dropped) + len(kept) == full.walked == 600
    # Asking for k keeps the first k of the whole walk, and walks only as far as it needs.
    part = walk(x, order, tau=tau, k=10, block=50)
    assert part.kept == kept[:10] and part.walked == order.tolist().index(kept[9]) + 1
    # tau = 1 drops nothing (no cosine exceeds 1): the plain top k.
    assert diversity_filter(x, order, 1.0, 25) == order[:25].tolist()
    # An exact copy of a kept row is dropped at any tau < 1 and by near-duplicates at cosine 1.
    y = np.vstack([x, x[order[0]]])
    order2 = np.append(order, 600)
    assert 600 not in diversity_filter(y, order2, 0.999)
    assert walk(y, order2, cosine=1.0).dropped[600][0] == order[0]


def test_at_the_threshold_diversity_keeps_and_near_duplicates_drop():
    # cosine exactly 0.5 in float32: DEITA drops only above tau; a near-duplicate is >= cosine.
    x = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]], dtype=np.float32)
    assert float(x[0] @ x[1]) == 0.5
    assert diversity_filter(x, [0, 1], tau=0.5) == [0, 1]
    assert walk(x, [0, 1], cosine=0.5).kept == [0]


def test_the_walk_refuses_a_ranking_beyond_the_embedding():
    x = unit_rows(np.random.default_rng(0), 5, 3)
    with pytest.raises(ValueError, match="names record 5 of an embedding of 5 rows"):
        walk(x, [0, 5], tau=0.9)


# --- planted paraphrases among real Alpaca records ----------------------------------------------

def ngram_vectors(texts, dim=1 << 14, sizes=(3, 4, 5)):
    """A cheap deterministic embedding: signed hashed character n-grams, L2-normalised."""
    x = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        t = re.sub(r"\s+", " ", t.lower())
        for n in sizes:
            for j in range(len(t) - n + 1):
                h = zlib.crc32(t[j:j + n].encode("utf-8"))
                x[i, h % dim] += 1.0 if (h >> 20) & 1 else -1.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


SYNONYMS = {"give": "provide", "list": "enumerate", "describe": "explain", "explain": "describe",
            "write": "compose", "create": "make", "generate": "produce", "three": "3", "five": "5",
            "following": "given", "sentence": "phrase", "find": "identify", "make": "create"}


def reword(rec):
    """A paraphrase: synonyms and a polite prefix in the instruction, the response's last
    sentence dropped and a comma changed."""
    words = [SYNONYMS.get(w.lower(), w) for w in rec["instruction"].split()]
    sents = re.split(r"(?<=[.!?])\s+", rec["output"])
    out = " ".join(sents[:-1]) if len(sents) > 2 else rec["output"]
    return {"instruction": "Please " + words[0].lower() + " " + " ".join(words[1:]), "input": rec["input"],
            "output": out.replace(", ", "; ", 1)}


def test_planted_paraphrases_among_real_records_are_found_and_unrelated_ones_are_not():
    alpaca = json.loads(shared_path("data", "alpaca", "alpaca_data.json").read_text())
    real = alpaca[:1000]
    sources = [i for i, r in enumerate(real) if len(r["output"]) >= 200][:25]
    records = real + [reword(real[i]) for i in sources]
    copies = {1000 + j: src for j, src in enumerate(sources)}
    assert all(records[c] != records[s] for c, s in copies.items())
    x = ngram_vectors([f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in records])
    # Rank the copies first: each is kept and its original is the duplicate dropped.
    order = list(copies) + list(range(1000))
    kept, clusters = remove_near_duplicates(x, order, cosine=0.8)
    found = {(c["kept"], d) for c in clusters for d in c["duplicates"]}
    assert found == set(copies.items())  # every planted pair, and nothing else among 1,000 real records
    assert len(kept) == len(records) - len(sources)
    # The records nearest each other that are not a planted pair are not near-duplicates here.
    s = x[:1000] @ x[:1000].T
    np.fill_diagonal(s, -1)
    assert 0.5 < s.max() < 0.8
    # Ranked the other way round the originals are kept and the copies dropped.
    _, clusters = remove_near_duplicates(x, list(range(len(records))), cosine=0.8)
    assert {(c["kept"], d) for c in clusters for d in c["duplicates"]} == {(s_, c_) for c_, s_ in copies.items()}


# --- the benchmark --------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_diversity_bench_runs_small(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_diversity.py"), "--records", "3000",
                           "--k", "600", "--sample", "300", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["records"] == 3000 and r["kept"] == 600 and r["same_kept_set_on_sample"] is True
    # The speedup is printed to 2 decimals, the times to the microsecond.
    assert r["speedup_over_naive"] == pytest.approx(r["naive_sample_s"] / r["blocked_sample_s"], abs=0.006)
