"""Length under control: how much of a win rate is the judge preferring longer answers.

Pairwise LLM judges prefer longer answers; a win-rate table that does not say how long each
model's answers are, and how much the judge cared, can declare a winner that is only longer.
This module adds to every row of a win-rate table (``winrate.table_rows``):

* ``mean_chars_a`` / ``mean_chars_b``: each model's mean answer length in characters, over
  every item of the row (parsed or not: it describes the answers, not the judgements).
* ``longer_wins_share``: of the *decided* judgements (one order of one item, the judge's two
  scores unequal, the two answers of unequal length), the share won by the longer answer.
  0.5 is a judge indifferent to length; it is measured per order, as the judge decides.
* ``length_spearman``: Spearman's rho, over every parsed order, of the judge's score difference
  (A minus B, in that order) against the length difference (A minus B, characters).
* ``lc_winning_score`` with ``lc_ci_low`` / ``lc_ci_high``: the winning score the judge would
  give at zero length difference (below), with a percentile bootstrap interval over items.

The length-controlled winning score
-----------------------------------
AlpacaEval 2 (Dubois et al. 2024, ``alpaca_eval/metrics/glm_winrate.py``) fits a logistic
model of each preference (ties as 0.5, a soft label) on ``tanh(length difference / its
standard deviation)``, an instruction difficulty and a model term, and reads the model's win
rate off it with the length term set to zero. Its instruction difficulties are precomputed on
AlpacaEval's 805 instructions from many models' annotations (downloaded from the Hub), which is
why it fails on a custom test set (alpaca_eval issues #316, #453). Here the model is fitted on
the pairs this project judged, with no difficulty term, so it works on any test set:

* **Unit: the item, its outcome from both orders.** The raw winning score is the paper's item
  rule (per order +1/0/-1, summed over the two orders; > 0 win, = 0 tie, < 0 lose), so the
  model predicts that same outcome for each parsed item. The two orders of an item show the
  same two answers and mostly agree (a judge without position bias gives the same scores in
  both); a per-order model would need an assumption about how the two orders depend on each
  other to map back to the item rule, an item model needs none. Order effects are averaged
  over by the design, exactly as in the raw score.
* **Ties as half a win**, as AlpacaEval does: y = 1 / 0.5 / 0 for win / tie / lose, and a
  logistic model of its mean, ``E[y | x] = sigmoid(a + b x)``, fitted by the Bernoulli log
  likelihood with y as a soft label (a fractional logit: Papke and Wooldridge 1996; consistent
  for the mean of y whatever the share of ties, with no model of how ties split). Since
  ``2 E[y] - 1 = P(win) - P(lose)``, the prediction maps exactly onto the winning score.
  Ties sit inside the range of y, so a judge that ties every equal-length pair does not send
  a coefficient to infinity, as it does in a multinomial win/tie/lose logit (tried on the
  length-biased judge of tests/test_length_control.py: its estimate was further from 1).
* **x**, the normalised length difference: ``tanh(r / sd(r))`` with
  ``r = log((1 + len(A)) / (1 + len(B)))`` (characters) and ``sd`` the sample standard
  deviation of r over the row's items (AlpacaEval standardises the difference the same way;
  tanh bounds the pull of a few very long answers). A ratio rather than AlpacaEval's
  difference in characters: 200 characters more is much on a one-line answer and little on a
  page, and a pooled row mixes test sets of very different answer lengths (tried on the same
  test: with the character difference the estimate stayed well above 1).
  The scale is fixed from the row's data, also in the bootstrap (a unit, not a parameter).
* **Back to the winning-score scale**: at x = 0 (equal length), ``q = sigmoid(a)`` and
  ``lc_winning_score = 1 + (2q - 1) = stats.winning_score(q, 1 - q, 1)``, so 1 means parity
  and 2 a sure win, as for the raw score.
* **The fit**: maximum likelihood by Newton's method with backtracking (the log likelihood is
  concave), vectorised over bootstrap replicates, with a weak ridge penalty
  ``RIDGE / 2 * (a^2 + b^2)`` that keeps the estimate finite when every item is won (or lost)
  and changes nothing visible otherwise. The intercept's score equation makes the fitted
  means average to the observed mean: when length does not matter (b = 0) or does not vary
  (every r = 0), the length-controlled score equals the raw one, up to the ridge.

Limits: the model cannot tell "longer because better" from "preferred because longer": where a
model's answers are longer because they say more that is right, controlling for length takes
some of its real advantage away (AlpacaEval has the same limit). Reading at x = 0 is an
extrapolation when few items have a small length difference, and a judge whose preference
jumps at any length difference, however small, is not what a smooth model describes (see
docs/evaluation.md, Length control, for what that does). When every item has the same
non-zero length ratio, length and quality cannot be told apart and the score is left empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alpagasus.evaluation import stats

__all__ = [
    "RIDGE",
    "COLUMNS",
    "length_ratio",
    "normalised_length_difference",
    "fit",
    "lc_scores",
    "length_controlled",
    "length_bias",
    "mean_lengths",
    "row_columns",
]

# The ridge penalty on both coefficients (a N(0, 100^2) prior on the logit scale): enough to keep
# 30 items that are all wins finite (1.99993 instead of 2), too weak to move an estimate that
# has data (300 synthetic items: the 7th decimal). 0.01 was tried: on equal-quality answers padded by a
# length-preferring judge it kept the slope short of the data and the score 0.0007 above 1 (mean
# of 30 draws), often outside an interval that narrow.
RIDGE = 1e-4
# The columns this module adds to a win-rate row, in the order the CSV appends them.
COLUMNS = ["mean_chars_a", "mean_chars_b", "longer_wins_share", "length_spearman",
           "lc_winning_score", "lc_ci_low", "lc_ci_high"]
# Bootstrap replicates fitted at once: (replicates x items) arrays of this many rows.
_CHUNK = 1000
_MAX_ITER = 100
_TOL = 1e-9


def length_ratio(len_a: Sequence[float], len_b: Sequence[float]) -> np.ndarray:
    """``log((1 + len_a) / (1 + len_b))``: 0 at equal length, defined for empty answers."""
    return np.log1p(np.asarray(len_a, dtype=float)) - np.log1p(np.asarray(len_b, dtype=float))


def normalised_length_difference(ratio: Sequence[float]) -> tuple[np.ndarray, float]:
    """``(tanh(r / sd(r)), sd(r))`` (sample standard deviation); zeros and scale 0 when every
    r is equal (a single item included): then x carries nothing."""
    r = np.asarray(ratio, dtype=float).ravel()
    scale = float(np.std(r, ddof=1)) if r.size > 1 else 0.0
    if scale == 0.0:
        return np.zeros_like(r), 0.0
    return np.tanh(r / scale), scale


def fit(outcomes: Sequence[int], x: Sequence[float], weights: np.ndarray | None = None,
        ridge: float = RIDGE, start: Sequence[float] | None = None) -> np.ndarray:
    """Penalised maximum-likelihood ``(a, b)`` of ``E[y | x] = sigmoid(a + b x)``, y = 1 / 0.5 / 0.

    ``outcomes``: +1 win, 0 tie, -1 lose per item; ``x``: the normalised length difference per
    item. ``weights``: (replicates, items) item weights, e.g. bootstrap counts; one replicate of
    weight 1 when None. Returns (replicates, 2). ``start``: initial (a, b), e.g. the full-data
    fit for the bootstrap (it then converges in a few steps).
    """
    o = np.asarray(outcomes, dtype=float).ravel()
    x = np.asarray(x, dtype=float).ravel()
    if o.size != x.size:
        raise ValueError(f"{o.size} outcomes but {x.size} length differences")
    if not np.all(np.isin(o, (-1.0, 0.0, 1.0))):
        raise ValueError("outcomes must be +1 (win), 0 (tie) or -1 (lose)")
    if ridge <= 0:
        raise ValueError("ridge must be > 0: without it the fit of items that are all won diverges")
    w = np.ones((1, o.size)) if weights is None else np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != o.size:
        raise ValueError(f"weights must be (replicates, {o.size}), got {w.shape}")
    y = (o + 1.0) / 2.0
    theta = np.zeros((w.shape[0], 2))
    if start is not None:
        theta[:] = np.asarray(start, dtype=float)

    def evaluate(t, wa):
        eta = t[:, :1] + t[:, 1:] * x
        # -log sigmoid(eta), stable for large |eta|; log sigmoid(-eta) = log sigmoid(eta) - eta
        nlp = np.logaddexp(0.0, -eta)
        obj = -(wa * (nlp + (1.0 - y) * eta)).sum(axis=1) - 0.5 * ridge * (t ** 2).sum(axis=1)
        return obj, np.exp(-nlp)

    active = np.arange(w.shape[0])
    obj, p = evaluate(theta, w)
    for _ in range(_MAX_ITER):
        t, wa = theta[active], w[active]
        r, v = wa * (y - p), wa * p * (1.0 - p)
        g0, g1 = r.sum(1) - ridge * t[:, 0], (r * x).sum(1) - ridge * t[:, 1]
        h00, h01, h11 = v.sum(1) + ridge, (v * x).sum(1), (v * x * x).sum(1) + ridge
        det = h00 * h11 - h01 * h01
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=1)
        # Backtracking: the objective is concave, so a short enough Newton step always rises.
        new_obj, new_p = evaluate(t + step, wa)
        scale = np.ones(t.shape[0])
        for _ in range(40):
            worse = new_obj < obj - 1e-12 * np.abs(obj)
            if not worse.any():
                break
            scale[worse] *= 0.5
            new_obj[worse], new_p[worse] = evaluate(t[worse] + scale[worse, None] * step[worse], wa[worse])
        theta[active] = t + scale[:, None] * step
        keep = np.abs(scale[:, None] * step).max(axis=1) >= _TOL
        if not keep.any():
            break
        active, obj, p = active[keep], new_obj[keep], new_p[keep]
    return theta


def lc_scores(theta: np.ndarray) -> np.ndarray:
    """The length-controlled winning score of each replicate's (a, b): at x = 0 the predicted
    mean outcome q = sigmoid(a), on the winning-score scale 1 + P(win) - P(lose) = 2q."""
    q = 1.0 / (1.0 + np.exp(-np.atleast_2d(theta)[:, 0]))
    return stats.winning_score(q, 1.0 - q, 1)


def length_controlled(outcomes: Sequence[int], ratio: Sequence[float],
                      bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                      alpha: float = 0.05, ridge: float = RIDGE) -> dict[str, Any]:
    """``lc_winning_score``, ``lc_ci_low``, ``lc_ci_high`` (None when there are no items, or
    length cannot be told apart from quality: then ``reason`` says why), and the fit: ``coef``
    (a, b) and ``length_scale`` (the sd of the log length ratio).

    ``outcomes``: +1/0/-1 per parsed item (the paper's item rule); ``ratio``: the log length
    ratio of A to B per item (:func:`length_ratio`). The interval: items resampled with
    replacement ``bootstrap_samples`` times (seeded), each resample refitted, percentiles
    ``alpha/2`` and ``1 - alpha/2``.
    """
    o = np.asarray(outcomes, dtype=float).ravel()
    r = np.asarray(ratio, dtype=float).ravel()
    x, scale = normalised_length_difference(r)
    empty = {"lc_winning_score": None, "lc_ci_low": None, "lc_ci_high": None, "coef": None,
             "length_scale": scale}
    if o.size == 0:
        return empty
    if scale == 0.0 and np.any(r != 0):
        return {**empty, "reason": "every item has the same length ratio and it is not 1: "
                                   "length and quality cannot be told apart"}
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    if bootstrap_samples < 1:
        raise ValueError("bootstrap_samples must be positive")
    theta = fit(o, x, ridge=ridge)
    rng = np.random.default_rng(seed)
    n = o.size
    boot = []
    for first in range(0, int(bootstrap_samples), _CHUNK):
        size = min(_CHUNK, int(bootstrap_samples) - first)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)
        boot.append(lc_scores(fit(o, x, counts, ridge=ridge, start=theta[0])))
    low, high = np.quantile(np.concatenate(boot), [alpha / 2, 1 - alpha / 2])
    return {"lc_winning_score": float(lc_scores(theta)[0]), "lc_ci_low": float(low), "lc_ci_high": float(high),
            "coef": [float(c) for c in theta[0]], "length_scale": scale}


def length_bias(score_diff: Sequence[float], length_diff: Sequence[float]) -> dict[str, Any]:
    """The judge's preference for length, over judged orders (one entry per parsed order).

    ``score_diff``: A's score minus B's in that order; ``length_diff``: len(A) - len(B).
    ``longer_wins_share``: among orders with unequal scores and unequal lengths, the share won
    by the longer answer (None if there is none); ``decided``: how many such orders;
    ``length_spearman``: Spearman's rho of the two differences (None when either is constant
    or fewer than 3 orders).
    """
    s = np.asarray(score_diff, dtype=float).ravel()
    d = np.asarray(length_diff, dtype=float).ravel()
    if s.size != d.size:
        raise ValueError(f"{s.size} score differences but {d.size} length differences")
    decided = (s != 0) & (d != 0)
    n_decided = int(decided.sum())
    share = float(np.mean(np.sign(s[decided]) == np.sign(d[decided]))) if n_decided else None
    rho = None
    if s.size >= 3 and np.ptp(s) > 0 and np.ptp(d) > 0:
        from scipy.stats import spearmanr  # not at the top: see stats.sign_test

        rho = float(spearmanr(s, d).statistic)
    return {"longer_wins_share": share, "decided": n_decided, "length_spearman": rho}


def mean_lengths(rows: Sequence[dict]) -> tuple[float | None, float | None]:
    """Mean characters of ``answer_a`` and ``answer_b`` over judgement rows."""
    if not rows:
        return None, None
    return (float(np.mean([len(r["answer_a"]) for r in rows])),
            float(np.mean([len(r["answer_b"]) for r in rows])))


def row_columns(rows: Sequence[dict], pairs: Sequence[tuple], bootstrap_samples: int = stats.BOOTSTRAP_SAMPLES,
                seed: int = stats.BOOTSTRAP_SEED, alpha: float = 0.05) -> dict[str, Any]:
    """:data:`COLUMNS` of one win-rate row (unrounded): ``rows`` are judgement rows (with
    ``answer_a``, ``answer_b``), ``pairs`` their ``(order1, order2)`` in the convention of
    ``stats.item_outcome``."""
    if len(rows) != len(pairs):
        raise ValueError(f"{len(rows)} judgement rows but {len(pairs)} score pairs")
    mean_a, mean_b = mean_lengths(rows)
    outcomes, item_ratio, score_diff, order_diff = [], [], [], []
    for row, (order1, order2) in zip(rows, pairs):
        d = len(row["answer_a"]) - len(row["answer_b"])
        outcome = stats.item_outcome(order1, order2)
        if outcome != "unparsed":
            outcomes.append(stats.outcome_value(outcome))
            item_ratio.append(float(length_ratio(len(row["answer_a"]), len(row["answer_b"]))))
        # Each parsed order is a judgement of its own: (A, B) as written in order 1, (B, A) in 2.
        if order1 is not None:
            score_diff.append(float(order1[0]) - float(order1[1]))
            order_diff.append(d)
        if order2 is not None:
            score_diff.append(float(order2[1]) - float(order2[0]))
            order_diff.append(d)
    bias = length_bias(score_diff, order_diff)
    lc = length_controlled(outcomes, item_ratio, bootstrap_samples, seed, alpha)
    return {"mean_chars_a": mean_a, "mean_chars_b": mean_b, "longer_wins_share": bias["longer_wins_share"],
            "length_spearman": bias["length_spearman"], "lc_winning_score": lc["lc_winning_score"],
            "lc_ci_low": lc["lc_ci_low"], "lc_ci_high": lc["lc_ci_high"]}
