"""The Win/Tie/Lose rule and the statistics around it, on hand-worked cases.

Convention under test: order1 = (A, B) as written with A as Assistant 1,
order2 = (B, A) as written with B as Assistant 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alpagasus.evaluation.stats import (aggregate, bootstrap_ci, consistent, item_outcome, item_points, order_points, outcome_value, pool, relative_total_score, sign_test)

# Order 1 written with A first: (A, B).  Order 2 written with B first: (B, A).
A_BETTER_1, A_EQUAL_1, A_WORSE_1 = (8, 6), (7, 7), (5, 9)
A_BETTER_2, A_EQUAL_2, A_WORSE_2 = (6, 8), (7, 7), (9, 5)


def test_order_points() -> None:
    assert order_points(8, 7) == 1
    assert order_points(7, 7) == 0
    assert order_points(6.5, 7) == -1


# (order1, order2, points, outcome, consistent): all 3 x 3 combinations.
NINE_CASES = [
    (A_BETTER_1, A_BETTER_2, 2, "win", True),
    (A_BETTER_1, A_EQUAL_2, 1, "win", False),
    (A_BETTER_1, A_WORSE_2, 0, "tie", False),
    (A_EQUAL_1, A_BETTER_2, 1, "win", False),
    (A_EQUAL_1, A_EQUAL_2, 0, "tie", True),
    (A_EQUAL_1, A_WORSE_2, -1, "lose", False),
    (A_WORSE_1, A_BETTER_2, 0, "tie", False),
    (A_WORSE_1, A_EQUAL_2, -1, "lose", False),
    (A_WORSE_1, A_WORSE_2, -2, "lose", True),
]


@pytest.mark.parametrize(("o1", "o2", "points", "outcome", "agree"), NINE_CASES)
def test_nine_combinations(o1, o2, points, outcome, agree) -> None:
    assert item_points(o1, o2) == points
    assert item_outcome(o1, o2) == outcome
    assert consistent(o1, o2) is agree


def test_order2_is_not_swapped_back() -> None:
    # The judge wrote (B=9, A=4) in order 2: A is worse there, whatever the raw order says.
    assert item_points((6, 6), (9, 4)) == -1
    assert item_outcome((6, 6), (9, 4)) == "lose"
    # A judge that always prefers Assistant 1 by the same margin: a tie, inconsistent.
    assert item_outcome((9, 5), (9, 5)) == "tie"
    assert consistent((9, 5), (9, 5)) is False


@pytest.mark.parametrize(
    ("o1", "o2"), [(None, (7, 8)), ((8, 7), None), (None, None)]
)
def test_unparsed(o1, o2) -> None:
    assert item_outcome(o1, o2) == "unparsed"
    assert item_points(o1, o2) is None
    assert consistent(o1, o2) is None


def test_outcome_value() -> None:
    assert [outcome_value(x) for x in ("win", "tie", "lose")] == [1, 0, -1]
    with pytest.raises(ValueError):
        outcome_value("unparsed")


def test_bad_order_shape() -> None:
    with pytest.raises(ValueError):
        item_outcome((8, 7, 6), (7, 8))


# --------------------------------------------------------------------------- aggregate

# A hand-computed table: 3 wins, 1 tie, 1 lose, 1 unparsed.
TABLE = [
    ((9, 6), (6, 9)),  # +1 +1 = 2 win, consistent
    ((8, 7), (7, 7)),  # +1  0 = 1 win, inconsistent
    ((7, 7), (8, 9)),  # 0  +1 = 1 win, inconsistent
    ((7, 8), (7, 8)),  # -1 +1 = 0 tie, inconsistent
    ((5, 9), (9, 5)),  # -1 -1 = -2 lose, consistent
    (None, (8, 7)),  # unparsed
]


def test_aggregate_table() -> None:
    row = aggregate(TABLE, bootstrap_samples=2000, seed=1)
    assert (row["n"], row["win"], row["tie"], row["lose"], row["unparsed"]) == (5, 3, 1, 1, 1)
    assert row["winning_score"] == pytest.approx((3 - 1) / 5 + 1)  # 1.4, n excludes unparsed
    assert row["position_consistency"] == pytest.approx(2 / 5)
    assert row["p_value"] == pytest.approx(sign_test(3, 1))
    assert row["p_value"] == pytest.approx(0.625)  # 2 * (1 + 4) / 16
    assert row["ci_low"] <= row["winning_score"] <= row["ci_high"]
    assert set(row) == {
        "n", "win", "tie", "lose", "unparsed", "winning_score",
        "ci_low", "ci_high", "p_value", "position_consistency",
    }


def test_aggregate_paper_vicuna_7b_row() -> None:
    # Table: AlpaGasus-9k vs Alpaca-52k on Vicuna, 7B: 41/15/24 -> (41-24)/80 + 1.
    pairs = [((9, 6), (6, 9))] * 41 + [((7, 7), (7, 7))] * 15 + [((5, 9), (9, 5))] * 24
    row = aggregate(pairs, bootstrap_samples=2000)
    assert row["winning_score"] == pytest.approx(1.2125)
    assert row["position_consistency"] == 1.0
    assert row["ci_low"] < 1.2125 < row["ci_high"]


def test_aggregate_empty_and_all_unparsed() -> None:
    for pairs in ([], [(None, None), ((8, 7), None)]):
        row = aggregate(pairs)
        assert row["n"] == 0
        assert row["unparsed"] == len(pairs)
        assert row["winning_score"] is None
        assert row["ci_low"] is None and row["ci_high"] is None
        assert row["position_consistency"] is None
        assert row["p_value"] == 1.0


def test_aggregate_all_ties() -> None:
    row = aggregate([((7, 7), (7, 7))] * 4, bootstrap_samples=500)
    assert row["winning_score"] == 1.0
    assert (row["ci_low"], row["ci_high"]) == (1.0, 1.0)
    assert row["p_value"] == 1.0


def test_pool_counts_items_not_test_sets() -> None:
    # Set 1: three wins (winning score 2.0); set 2: a tie, a loss and an unparsed item (0.5).
    # Pooled over the five parsed items: (3 - 1)/5 + 1 = 1.4, not the mean of 2.0 and 0.5.
    pooled = pool([TABLE[:3], TABLE[3:]], bootstrap_samples=1000, seed=3)
    assert (pooled["n"], pooled["win"], pooled["tie"], pooled["lose"], pooled["unparsed"]) == (5, 3, 1, 1, 1)
    assert pooled["winning_score"] == pytest.approx(1.4)
    assert pooled["p_value"] == pytest.approx(0.625)
    assert pooled["position_consistency"] == pytest.approx(2 / 5)
    assert pooled["ci_low"] <= 1.4 <= pooled["ci_high"]


# --------------------------------------------------------------------------- sign test


@pytest.mark.parametrize(
    ("win", "lose", "p"),
    [
        (7, 3, 0.34375),
        (3, 7, 0.34375),
        (10, 0, 0.001953125),
        (0, 10, 0.001953125),
        (5, 5, 1.0),
        (1, 0, 1.0),
        (0, 0, 1.0),
        (9, 1, 0.021484375),  # 2 * (1 + 10) / 1024
    ],
)
def test_sign_test(win: int, lose: int, p: float) -> None:
    assert sign_test(win, lose) == pytest.approx(p, rel=1e-12)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_all_wins() -> None:
    assert bootstrap_ci([1] * 30, n_samples=1000, seed=0) == (2.0, 2.0)
    assert bootstrap_ci([-1] * 30, n_samples=1000, seed=0) == (0.0, 0.0)


def test_bootstrap_deterministic_for_seed() -> None:
    outcomes = [1] * 40 + [0] * 25 + [-1] * 35
    a = bootstrap_ci(outcomes, n_samples=2000, seed=7)
    b = bootstrap_ci(outcomes, n_samples=2000, seed=7)
    assert a == b
    # with few samples a different seed moves the percentiles (the seed is actually used)
    others = {bootstrap_ci(outcomes, n_samples=50, seed=s) for s in range(5)}
    assert len(others) > 1


def test_bootstrap_exact_small_cases() -> None:
    # [win, tie]: a resample of 2 items has 0, 1 or 2 wins with probabilities 1/4, 1/2, 1/4, so
    # its winning score is 1.0, 1.5 or 2.0; the 2.5/97.5% percentiles are the extremes and the
    # 40/60% ones the middle value.
    assert bootstrap_ci([1, 0], n_samples=20_000, seed=0, alpha=0.05) == (1.0, 2.0)
    assert bootstrap_ci([1, 0], n_samples=20_000, seed=0, alpha=0.8) == (1.5, 1.5)
    assert bootstrap_ci([1, -1], n_samples=20_000, seed=0, alpha=0.05) == (0.0, 2.0)
    assert bootstrap_ci([1, -1], n_samples=20_000, seed=0, alpha=0.8) == (1.0, 1.0)


@pytest.mark.parametrize(("alpha", "low", "high"), [(0.05, 0.93, 0.985), (0.5, 0.44, 0.60)])
def test_bootstrap_interval_covers_the_true_score_at_its_nominal_rate(alpha, low, high) -> None:
    """Simulated test sets of 100 items drawn with a known win/tie/lose rate (true winning score
    1 + 0.45 - 0.25 = 1.2): the interval holds the truth in about 1 - alpha of them."""
    rng = np.random.default_rng(2024)
    truth, trials = 1.2, 300
    hits = 0
    for _ in range(trials):
        outcomes = rng.choice([1, 0, -1], size=100, p=[0.45, 0.30, 0.25])
        lo, hi = bootstrap_ci(outcomes, n_samples=2000, seed=int(rng.integers(2**31)), alpha=alpha)
        assert 0.0 <= lo <= hi <= 2.0
        hits += lo <= truth <= hi
    assert low <= hits / trials <= high, hits / trials


def test_bootstrap_width_matches_normal_approximation() -> None:
    rng = np.random.default_rng(123)
    outcomes = rng.choice([1, 0, -1], size=2000, p=[0.45, 0.30, 0.25])
    low, high = bootstrap_ci(outcomes, n_samples=10_000, seed=0, alpha=0.05)
    sd = np.std(outcomes)
    normal_width = 2 * 1.959964 * sd / math.sqrt(len(outcomes))
    assert (high - low) == pytest.approx(normal_width, rel=0.15)
    mid = (low + high) / 2
    assert mid == pytest.approx(np.mean(outcomes) + 1, abs=0.01)


def test_bootstrap_alpha_narrows_interval() -> None:
    outcomes = [1] * 50 + [0] * 20 + [-1] * 30
    wide = bootstrap_ci(outcomes, n_samples=4000, seed=0, alpha=0.01)
    narrow = bootstrap_ci(outcomes, n_samples=4000, seed=0, alpha=0.5)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def test_bootstrap_matches_explicit_item_resampling() -> None:
    outcomes = np.array([1] * 30 + [0] * 10 + [-1] * 20)
    rng = np.random.default_rng(99)
    idx = rng.integers(0, outcomes.size, size=(20_000, outcomes.size))
    explicit = np.quantile(outcomes[idx].mean(axis=1) + 1, [0.025, 0.975])
    low, high = bootstrap_ci(outcomes, n_samples=20_000, seed=0)
    assert low == pytest.approx(explicit[0], abs=0.02)
    assert high == pytest.approx(explicit[1], abs=0.02)


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([], n_samples=10)
    with pytest.raises(ValueError):
        bootstrap_ci([2, 1], n_samples=10)


# --------------------------------------------------------------------------- relative score


def test_relative_total_score() -> None:
    pairs = [
        ((8, 10), (10, 9)),  # A: 8 + 9 = 17, B: 10 + 10 = 20
        ((6, 5), (5, 7)),  # A: 6 + 7 = 13, B: 5 + 5 = 10
        (None, (1, 10)),  # ignored
    ]
    assert relative_total_score(pairs) == pytest.approx(30 / 30)
    assert relative_total_score(pairs[:1]) == pytest.approx(17 / 20)
    assert relative_total_score([((9, 10), (10, 9))]) == pytest.approx(18 / 20)


def test_relative_total_score_empty() -> None:
    assert relative_total_score([]) is None
    assert relative_total_score([(None, (8, 7))]) is None
