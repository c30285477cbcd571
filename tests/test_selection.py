import pytest

from alpagasus.selection.select import paper_bin, random_indices, select_indices, summarize


def recs(n):
    return [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(n)]


def test_threshold_keeps_original_order_and_never_unscored():
    scores = [4.5, 3.0, None, 5.0, 4.0, 4.5]
    assert select_indices(recs(6), scores, "threshold", 4.5) == [0, 3, 5]
    assert select_indices(recs(6), scores, "threshold", 4.0) == [0, 3, 4, 5]
    assert select_indices(recs(6), scores, "threshold", 0.0) == [0, 1, 3, 4, 5]


def test_top_k_ties_are_deterministic_and_not_positional():
    scores = [4.5] * 100
    first = select_indices(recs(100), scores, "top_k", k=10)
    assert first == select_indices(recs(100), scores, "top_k", k=10)
    assert len(first) == 10 and first == sorted(first)
    assert first != list(range(10))  # ties broken by content hash, not by position
    # Reordering the records keeps the same records (not the same positions).
    rev = list(reversed(recs(100)))
    kept_rev = {r["output"] for r in (rev[i] for i in select_indices(rev, scores, "top_k", k=10))}
    assert kept_rev == {recs(100)[i]["output"] for i in first}


def test_top_k_prefers_higher_scores_and_skips_unscored():
    scores = [3.0, None, 5.0, 4.0, 4.5, None]
    assert select_indices(recs(6), scores, "top_k", k=2) == [2, 4]
    assert select_indices(recs(6), scores, "top_k", k=10) == [0, 2, 3, 4]


def test_top_fraction():
    scores = [float(i % 5) for i in range(100)]
    kept = select_indices(recs(100), scores, "top_fraction", fraction=0.2)
    assert len(kept) == 20 and all(scores[i] == 4.0 for i in kept)


def test_bad_rules():
    with pytest.raises(ValueError, match="needs selection.k"):
        select_indices(recs(2), [1, 2], "top_k")
    with pytest.raises(ValueError, match="another file"):
        select_indices(recs(2), [1], "threshold", 4.5)
    with pytest.raises(ValueError, match="unknown selection method"):
        select_indices(recs(2), [1, 2], "best")


def test_random_baseline_seeded_and_sized():
    a = random_indices(1000, 100, seed=42)
    assert a == random_indices(1000, 100, seed=42) and len(set(a)) == 100 and a == sorted(a)
    assert a != random_indices(1000, 100, seed=43)
    with pytest.raises(ValueError):
        random_indices(10, 11, 0)


def test_paper_bins_and_summary():
    assert [paper_bin(s) for s in (0, 2.9, 3, 3.4, 3.5, 4.9, 5)] == ["<3", "<3", "3", "3", "3.5", "4.5", "5"]
    rows = [{"score": s, "status": "scored" if s is not None else "unparsed"} for s in (4.5, 5.0, 3.0, None)]
    s = summarize(rows, [0, 1], {"method": "threshold", "threshold": 4.5}, 2)
    assert s["kept"] == 2 and s["unscored"] == 1 and s["score_counts"] == {"3": 1, "4.5": 1, "5": 1}
    assert s["paper_bins"] == {"<3": 0, "3": 1, "3.5": 0, "4": 0, "4.5": 1, "5": 1}
