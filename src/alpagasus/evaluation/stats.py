"""The paper's Win/Tie/Lose rule for pairwise judgements, plus the statistics it never reported.

Conventions (read these before passing data in)
-----------------------------------------------
Model **A** is the model under test (e.g. AlpaGasus-9k), model **B** the reference (e.g.
Alpaca-52k).  Every test item is judged twice:

* ``order1`` — A shown as *Assistant 1*, B as *Assistant 2*.  ``order1`` is the pair exactly as
  the judge wrote it, i.e. ``(score of A, score of B)``.
* ``order2`` — B shown as *Assistant 1*, A as *Assistant 2*.  ``order2`` is also the pair exactly
  as the judge wrote it, i.e. ``(score of B, score of A)`` — **not** swapped back.

So A's scores are ``order1[0]`` and ``order2[1]``; B's are ``order1[1]`` and ``order2[0]``.
Either order may be ``None`` (the judge's reply could not be parsed); such an item is
*unparsed*, is counted separately, and is never silently a tie.

In each order A gets +1 / 0 / -1 when A's score is higher / equal / lower than B's; the sum
over the two orders (-2..2) is > 0 -> ``"win"``, = 0 -> ``"tie"``, < 0 -> ``"lose"``
(PAPER.md section 3).  Winning score = (#win - #lose) / n + 1 with n the number of *parsed*
items (range 0..2; 1 means parity).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional, Tuple

import numpy as np

from alpagasus.core.config import defaults

# The bootstrap's size and seed when a caller names none: the config's (config/schema.yaml).
BOOTSTRAP_SAMPLES = defaults("evaluation")["bootstrap_samples"]
BOOTSTRAP_SEED = defaults("evaluation")["seed"]

__all__ = [
    "Order",
    "order_points",
    "item_points",
    "item_outcome",
    "consistent",
    "outcome_value",
    "sign_test",
    "bootstrap_ci",
    "aggregate",
    "pool",
    "relative_total_score",
]

Order = Optional[Tuple[float, float]]
"""One judged order as written by the judge: (Assistant 1's score, Assistant 2's score)."""

_OUTCOME_VALUE = {"win": 1, "tie": 0, "lose": -1}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _scores(order: Any) -> tuple[float, float]:
    if len(order) != 2:
        raise ValueError(f"a judged order must hold exactly two scores, got {order!r}")
    return float(order[0]), float(order[1])


def order_points(score_a: float, score_b: float) -> int:
    """A's points in one order: +1 if A scored higher than B, 0 if equal, -1 if lower."""
    return _sign(float(score_a) - float(score_b))


def _a_minus_b_signs(order1: Order, order2: Order) -> tuple[int, int] | None:
    if order1 is None or order2 is None:
        return None
    a1, b1 = _scores(order1)  # A was Assistant 1
    b2, a2 = _scores(order2)  # B was Assistant 1
    return order_points(a1, b1), order_points(a2, b2)


def item_points(order1: Order, order2: Order) -> int | None:
    """A's summed points over both orders (-2..2), or ``None`` if either order is unparsed.

    ``order1`` = (A's score, B's score) as written with A as Assistant 1;
    ``order2`` = (B's score, A's score) as written with B as Assistant 1.
    """
    signs = _a_minus_b_signs(order1, order2)
    return None if signs is None else signs[0] + signs[1]


def item_outcome(order1: Order, order2: Order) -> str:
    """``"win"``, ``"tie"``, ``"lose"`` for model A on one item, or ``"unparsed"``.

    ``order1`` = (A's score, B's score) as written with A as Assistant 1;
    ``order2`` = (B's score, A's score) as written with B as Assistant 1.
    Either order ``None`` -> ``"unparsed"`` (never a tie).
    """
    points = item_points(order1, order2)
    if points is None:
        return "unparsed"
    if points > 0:
        return "win"
    if points < 0:
        return "lose"
    return "tie"


def consistent(order1: Order, order2: Order) -> bool | None:
    """Whether both orders agree on who is better (same sign of A-minus-B; two ties agree).

    ``None`` when either order is unparsed.  Same order convention as :func:`item_outcome`.
    """
    signs = _a_minus_b_signs(order1, order2)
    return None if signs is None else signs[0] == signs[1]


def outcome_value(outcome: str) -> int:
    """+1 / 0 / -1 for ``"win"`` / ``"tie"`` / ``"lose"`` (ValueError otherwise)."""
    try:
        return _OUTCOME_VALUE[outcome]
    except KeyError:
        raise ValueError(f"no numeric value for outcome {outcome!r}") from None


def sign_test(win: int, lose: int) -> float:
    """Two-sided exact sign test of wins vs losses (ties excluded); 1.0 when there are none.

    Null hypothesis: a non-tied item is a win with probability 1/2.
    """
    win, lose = int(win), int(lose)
    if win < 0 or lose < 0:
        raise ValueError("win and lose must be non-negative")
    if win + lose == 0:
        return 1.0
    # scipy.stats imported here, not at the top: the Snakefile imports this module to plan the
    # DAG, and scipy.stats costs ~3 s of every snakemake start (each Slurm job parses it again).
    from scipy.stats import binomtest

    return float(binomtest(win, win + lose, 0.5, alternative="two-sided").pvalue)


def winning_score(win, lose, n):
    """The paper's winning score, (#win - #lose) / n + 1, in [0, 2] (1: as many wins as losses),
    n the parsed items; works on counts and on numpy arrays of counts alike."""
    return (win - lose) / n + 1.0


def bootstrap_ci(
    outcomes: Sequence[int],
    n_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the winning score.

    ``outcomes`` holds one value per parsed item: +1 win, 0 tie, -1 lose.  Items are resampled
    with replacement ``n_samples`` times; the winning score of a resample is
    ``mean(outcomes) + 1``.  Because the outcomes take only three values, resampling n items
    with replacement is exactly a multinomial draw of the (win, tie, lose) counts with the
    observed proportions, which is how it is computed (vectorised, O(n_samples)).  The result
    is deterministic for a given ``seed``.  Returns the ``alpha/2`` and ``1 - alpha/2``
    percentiles.
    """
    values = np.asarray(outcomes, dtype=float).ravel()
    n = values.size
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one outcome")
    if not np.all(np.isin(values, (-1.0, 0.0, 1.0))):
        raise ValueError("outcomes must be +1 (win), 0 (tie) or -1 (lose)")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    if n_samples < 1:
        raise ValueError("n_samples must be positive")
    counts = np.array([(values == 1).sum(), (values == 0).sum(), (values == -1).sum()])
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=int(n_samples))
    scores = winning_score(draws[:, 0], draws[:, 2], n)
    low, high = np.quantile(scores, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def aggregate(
    pairs: Iterable[tuple[Order, Order]],
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Win/Tie/Lose counts and statistics for model A over a list of ``(order1, order2)``.

    Keys: ``n`` (items with both orders parsed), ``win``, ``tie``, ``lose``, ``unparsed``,
    ``winning_score`` ((win - lose) / n + 1, None if n == 0), ``ci_low``/``ci_high``
    (percentile bootstrap over items, see :func:`bootstrap_ci`; None if n == 0),
    ``p_value`` (:func:`sign_test`, 1.0 if win + lose == 0), ``position_consistency``
    (fraction of parsed items whose two orders agree, see :func:`consistent`; None if n == 0).
    """
    win = tie = lose = unparsed = agree = 0
    outcomes: list[int] = []
    for order1, order2 in pairs:
        outcome = item_outcome(order1, order2)
        if outcome == "unparsed":
            unparsed += 1
            continue
        outcomes.append(outcome_value(outcome))
        win += outcome == "win"
        tie += outcome == "tie"
        lose += outcome == "lose"
        agree += bool(consistent(order1, order2))
    n = len(outcomes)
    if n:
        score: float | None = winning_score(win, lose, n)
        ci_low, ci_high = bootstrap_ci(outcomes, bootstrap_samples, seed, alpha)
        position_consistency: float | None = agree / n
    else:
        score = ci_low = ci_high = position_consistency = None
    return {
        "n": n,
        "win": win,
        "tie": tie,
        "lose": lose,
        "unparsed": unparsed,
        "winning_score": score,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": sign_test(win, lose),
        "position_consistency": position_consistency,
    }


def pool(
    pairs_lists: Iterable[Iterable[tuple[Order, Order]]],
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The pooled row over several test sets: :func:`aggregate` of all their items together."""
    items = [item for pairs in pairs_lists for item in pairs]
    return aggregate(items, bootstrap_samples=bootstrap_samples, seed=seed, alpha=alpha)


def relative_total_score(pairs: Iterable[tuple[Order, Order]]) -> float | None:
    """The paper's "A reaches X% of B": total of A's scores / total of B's scores.

    Sums run over both orders of every parsed item (A: ``order1[0] + order2[1]``; B:
    ``order1[1] + order2[0]``).  Returns a ratio (0.901 = 90.1%), or ``None`` when no item is
    parsed or B's total is 0.
    """
    total_a = total_b = 0.0
    parsed = 0
    for order1, order2 in pairs:
        if order1 is None or order2 is None:
            continue
        a1, b1 = _scores(order1)
        b2, a2 = _scores(order2)
        total_a += a1 + a2
        total_b += b1 + b2
        parsed += 1
    if parsed == 0 or total_b == 0:
        return None
    return total_a / total_b
