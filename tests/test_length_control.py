"""Length under control: the fit on synthetic data with known coefficients, and a length-preferring
judge behind the fake OpenAI server (through the openai SDK) on answer sets built to be of equal
quality: the raw winning score declares a winner, the length-controlled one does not."""
import csv
import json

import numpy as np
import pytest

import alpagasus.judging.judges.openai_judge as openai_judge
from alpagasus.core.io import write_jsonl
from alpagasus.data import write_records
from alpagasus.data.miniature import make_records, make_test_items, question_of
from alpagasus.evaluation import length_control as lc
from alpagasus.evaluation import stats
from alpagasus.evaluation.pairwise import judge_pair
from alpagasus.evaluation.winrate import COLUMNS, write_winrate
from alpagasus.judging.prompts import pairwise_messages
from alpagasus.judging.rating import rate_records
from alpagasus.selection.select import write_random, write_selection, write_summary
from alpagasus.selection.verbosity import audit
from alpagasus.testing.fake_openai import FakeOpenAIServer, answer_score, expected_pair

N_ITEMS = 120
PADDED_EVERY = (0, 1, 2, 3, 4, 5, 6)  # of every 10 items: 70% padded
FILLER = ("This point deserves a little more context. ", "Put differently, the same idea holds. ",
          "In summary, the answer above stands. ")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_judge, "BACKOFF_BASE_S", 0.01)


def simulate(coef, x, rng, tie_share=0.0):
    """Outcomes (+1/0/-1) whose mean (1 win, 0.5 tie, 0 lose) is sigmoid(a + b x): two orders
    that each prefer A with that probability, or (``tie_share`` > 0) a share of the decided
    items turned into ties in equal parts from wins and losses, which leaves the mean alone."""
    a, b = coef
    p = 1 / (1 + np.exp(-(a + b * x)))
    if tie_share:
        m = tie_share * np.minimum(p, 1 - p)
        pw, pl = p - m, 1 - p - m
    else:
        pw, pl = p * p, (1 - p) * (1 - p)
    u = rng.uniform(size=x.size)
    return np.where(u < pw, 1, np.where(u < pw + pl, -1, 0))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# --- the fit, on synthetic data ---------------------------------------------------------------


@pytest.mark.parametrize("coef, tie_share", [((0.3, 1.2), 0.0), ((-0.5, 2.0), 0.0), ((0.8, -1.5), 0.6),
                                             ((1.0, 0.0), 0.3)])
def test_the_fit_recovers_known_coefficients(coef, tie_share):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 40_000)
    y = simulate(coef, x, rng, tie_share)
    (theta,) = lc.fit(y, x)
    # 40k items: standard errors of about 0.02 on each coefficient.
    assert theta == pytest.approx(coef, abs=0.08)
    truth = 2 * sigmoid(coef[0])  # 1 + P(win) - P(lose) at x = 0
    assert lc.lc_scores(theta)[0] == pytest.approx(truth, abs=0.02)


def test_the_bootstrap_interval_covers_the_true_length_controlled_score():
    coef = (0.4, 1.5)
    rng = np.random.default_rng(11)
    len_b = rng.integers(50, 400, 600)
    len_a = (len_b * np.exp(rng.normal(0.5, 0.6, 600))).astype(int)  # A mostly longer
    r = lc.length_ratio(len_a, len_b)
    x, scale = lc.normalised_length_difference(r)
    assert scale == pytest.approx(np.std(r, ddof=1)) and np.all(np.abs(x) < 1)
    y = simulate(coef, x, rng, tie_share=0.3)
    out = lc.length_controlled(y, r, bootstrap_samples=1000, seed=3)
    assert out["lc_ci_low"] < 2 * sigmoid(coef[0]) < out["lc_ci_high"]
    assert out["lc_ci_low"] < out["lc_winning_score"] < out["lc_ci_high"]
    # The raw score counts the length advantage; the model takes it out.
    raw = stats.winning_score((y == 1).sum(), (y == -1).sum(), y.size)
    assert raw > out["lc_ci_high"]
    assert out == lc.length_controlled(y, r, bootstrap_samples=1000, seed=3)  # seeded


def test_without_length_differences_the_score_is_the_raw_one():
    rng = np.random.default_rng(5)
    y = rng.choice([-1, 0, 1], 200, p=[0.2, 0.3, 0.5])
    out = lc.length_controlled(y, np.zeros(200), bootstrap_samples=2000, seed=0)
    raw = stats.winning_score((y == 1).sum(), (y == -1).sum(), y.size)
    assert out["lc_winning_score"] == pytest.approx(raw, abs=1e-3)
    assert out["coef"][1] == 0.0
    lo, hi = stats.bootstrap_ci(y, 2000, 0)
    assert out["lc_ci_low"] == pytest.approx(lo, abs=0.02) and out["lc_ci_high"] == pytest.approx(hi, abs=0.02)


def test_a_length_effect_of_zero_leaves_the_raw_score():
    rng = np.random.default_rng(9)
    len_a, len_b = rng.integers(10, 500, 5000), rng.integers(10, 500, 5000)
    y = simulate((0.5, 0.0), lc.normalised_length_difference(lc.length_ratio(len_a, len_b))[0], rng, 0.2)
    out = lc.length_controlled(y, lc.length_ratio(len_a, len_b), bootstrap_samples=200)
    raw = stats.winning_score((y == 1).sum(), (y == -1).sum(), y.size)
    assert abs(out["coef"][1]) < 0.1 and out["lc_winning_score"] == pytest.approx(raw, abs=0.01)


def test_all_wins_stay_finite_and_near_two():
    out = lc.length_controlled(np.ones(30), np.arange(30) - 10.0, bootstrap_samples=200, seed=0)
    assert 1.99 < out["lc_winning_score"] < 2.0 and out["lc_ci_high"] <= 2.0


def test_a_constant_length_difference_cannot_be_told_from_quality():
    out = lc.length_controlled([1, 0, -1, 1], [0.5, 0.5, 0.5, 0.5], bootstrap_samples=100)
    assert out["lc_winning_score"] is None and "cannot be told apart" in out["reason"]
    assert lc.length_controlled([], [], bootstrap_samples=100)["lc_winning_score"] is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="outcomes must be"):
        lc.fit([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 outcomes but 2"):
        lc.fit([1, 0, -1], [0.1, 0.2])


def test_length_bias_counts_decided_judgements_won_by_the_longer_answer():
    # score differences (A - B) and length differences (A - B), one per judged order
    s = [3, 1, -2, 0, 2, -1, 4]
    d = [10, 5, 7, 9, 0, -3, -8]
    out = lc.length_bias(s, d)
    # decided with unequal lengths: (3,10) yes, (1,5) yes, (-2,7) no, (-1,-3) yes, (4,-8) no
    assert out["decided"] == 5 and out["longer_wins_share"] == pytest.approx(3 / 5)
    # ranks (6,4,1,3,5,2,7) and (7,4,5,6,3,2,1): sum of squared differences 66, 1 - 6*66/(7*48)
    assert out["length_spearman"] == pytest.approx(1 - 6 * 66 / (7 * 48))
    assert lc.length_bias([0, 0], [1, 2]) == {"longer_wins_share": None, "decided": 0, "length_spearman": None}


# --- the fake server's length-preferring judge ------------------------------------------------


def test_the_fake_judge_prefers_the_longer_of_equal_answers_with_the_given_probability():
    q = "Say something."
    longer_first = 0
    for k in range(400):
        short = f"answer {k:04d}"
        m = 0
        while answer_score(q, f"{short} and more {m}") != answer_score(q, short):
            m += 1
        long_ = f"{short} and more {m}"
        s1, s2 = expected_pair(pairwise_messages(q, long_, short), length_bias=0.8)
        assert abs(s1 - s2) == 1
        longer_first += s1 > s2
        # Unequal quality is scored as without the bias.
        other = f"other {k:04d}"
        if answer_score(q, other) != answer_score(q, short):
            assert expected_pair(pairwise_messages(q, other, short), length_bias=0.8) == \
                expected_pair(pairwise_messages(q, other, short))
    assert longer_first / 400 == pytest.approx(0.8, abs=0.05)
    with pytest.raises(ValueError, match="length_bias must be a probability"):
        FakeOpenAIServer(length_bias=1.5)


def _variant(q, base, target, fmt):
    """The first ``fmt.format(base, m)`` the fake judge scores ``target``: answers of a known quality."""
    m = 0
    while answer_score(q, fmt.format(base, m)) != target:
        m += 1
    return fmt.format(base, m)


def _answer_sets(tmp_path, *, padding: str | None, a_better: bool):
    """Answers A and B to the same items. Equal quality: the judge's score of A and B is equal on
    every item (found by varying a tag), and where A is not padded A and B are the same answer.
    ``padding``: A is longer on 70% of the items by a filler paragraph, the same one everywhere
    (``"fixed"``) or 1 to 12 filler sentences (``"varied"``). ``a_better``: A scores higher
    than B on 70% of the items, lower on 10%, and A and B are of equal length everywhere."""
    items = [{**it, "question": question_of(it)} for it in make_test_items(N_ITEMS, seed=21)]
    write_jsonl(tmp_path / "mini.jsonl", items)
    rows_a, rows_b = [], []
    for k, it in enumerate(items):
        q, ref = it["question"], it["reference"]
        a = _variant(q, ref, 5, "{} [{:03d}]")
        target = (3 if k % 10 < 7 else 5 if k % 10 < 9 else 8) if a_better else 5
        b = _variant(q, ref, target, "{} [{:03d}]")
        if padding and k % 10 in PADDED_EVERY:
            filler = "".join(FILLER) if padding == "fixed" else "".join(FILLER[: 1 + k % 3]) * (1 + k % 4)
            a = _variant(q, f"{a}\n\n{filler}", 5, "{}({:03d})")
        rows_a.append({"id": it["id"], "answer": a})
        rows_b.append({"id": it["id"], "answer": b})
    write_jsonl(tmp_path / "a.jsonl", rows_a)
    write_jsonl(tmp_path / "b.jsonl", rows_b)


def _judged_row(tmp_path, srv):
    judges = {"fake": {"backend": "openai", "model": "gpt-4-fake", "base_url": srv.base_url, "concurrency": 8,
                       "timeout_s": 5, "max_retries": 4}}
    judge_pair(tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "mini.jsonl", judges, {"judge": "fake"},
               tmp_path / "cache", tmp_path / "j.jsonl", tmp_path / "j.cost.json", model_a="A", model_b="B",
               testset="mini", progress=False)
    (row,) = write_winrate([{"model_a": "A", "model_b": "B", "test_set": "mini", "path": tmp_path / "j.jsonl"}],
                           "fake", tmp_path / "w.csv", tmp_path / "w.png", title="t", bootstrap_samples=2000)
    with open(tmp_path / "w.csv", newline="") as fh:
        (back,) = csv.DictReader(fh)
    assert list(back) == COLUMNS and COLUMNS[-len(lc.COLUMNS):] == lc.COLUMNS
    print(f"\n{tmp_path.name}:", {k: back[k] for k in COLUMNS[3:] if k != "judge"})
    return row


def test_a_length_preferring_judge_on_equal_answers_raw_is_biased_length_controlled_is_not(tmp_path, api_key):
    _answer_sets(tmp_path, padding="fixed", a_better=False)
    with FakeOpenAIServer(length_bias=0.8) as srv:
        row = _judged_row(tmp_path, srv)
    assert row["n"] == N_ITEMS and row["unparsed"] == 0
    assert row["ci_low"] > 1.2 and row["p_value"] < 1e-6  # the raw table declares A the winner
    assert row["lc_ci_low"] <= 1.0 <= row["lc_ci_high"] and abs(row["lc_winning_score"] - 1.0) < 0.01
    assert row["longer_wins_share"] == pytest.approx(0.8, abs=0.07)
    assert row["length_spearman"] > 0.3
    assert row["mean_chars_a"] > row["mean_chars_b"] + 50


def test_with_padding_of_every_size_the_length_controlled_score_stays_near_one(tmp_path, api_key):
    """1 to 12 filler sentences, and a judge whose preference is the same for all of them: not the
    smooth effect of length the model assumes, so it is near 1 without being exactly 1 (on this
    draw its narrow interval may miss 1 by a hair; docs/evaluation.md has the figures)."""
    _answer_sets(tmp_path, padding="varied", a_better=False)
    with FakeOpenAIServer(length_bias=0.8) as srv:
        row = _judged_row(tmp_path, srv)
    assert row["ci_low"] > 1.2
    assert abs(row["lc_winning_score"] - 1.0) < 0.03 and row["lc_ci_high"] - row["lc_ci_low"] < 0.1
    assert row["longer_wins_share"] > 0.7


def test_when_quality_differs_and_lengths_are_equal_raw_and_length_controlled_agree(tmp_path, api_key):
    _answer_sets(tmp_path, padding=None, a_better=True)
    with FakeOpenAIServer(length_bias=0.8) as srv:
        row = _judged_row(tmp_path, srv)
    assert row["winning_score"] == pytest.approx(1.6, abs=0.01)  # 70% wins, 10% losses, 20% ties
    assert row["lc_winning_score"] == pytest.approx(row["winning_score"], abs=0.002)
    assert row["lc_ci_low"] == pytest.approx(row["ci_low"], abs=0.03)
    assert row["lc_ci_high"] == pytest.approx(row["ci_high"], abs=0.03)
    assert row["mean_chars_a"] == row["mean_chars_b"]
    assert row["longer_wins_share"] is None and row["length_spearman"] is None


# --- the verbosity audit of a selection -------------------------------------------------------


def test_the_verbosity_audit_compares_the_kept_lengths_and_the_longest_k():
    lengths = [5, 1, 9, 3, 7, 2, 10, 4, 8, 6]
    records = [{"instruction": f"i{n}", "input": "", "output": "x" * n} for n in lengths]
    v = audit(records, [2, 4, 6, 5])  # lengths 9, 7, 10, 2
    # kept sorted 2, 7, 9, 10: linear interpolation between order statistics
    assert v["kept"] == {"q1": 5.75, "median": 8.0, "q3": 9.25, "mean": 7.0}
    assert v["all"] == {"q1": 3.25, "median": 5.5, "q3": 7.75, "mean": 5.5}
    # the 4 longest are lengths 10, 9, 8, 7 (records 6, 2, 8, 4): 3 of them kept
    assert v["longest_k"] == {"k": 4, "overlap": 3, "share": 0.75, "jaccard": 0.6, "share_if_random": 0.4}
    # equal lengths at the cut: the first record is the longer one
    tied = [{"instruction": "a", "input": "", "output": "yy"}, {"instruction": "b", "input": "", "output": "yy"}]
    assert audit(tied, [0])["longest_k"]["overlap"] == 1 and audit(tied, [1])["longest_k"]["overlap"] == 0
    assert audit(records, [])["kept"]["median"] is None and audit(records, [])["longest_k"]["share"] is None
    with pytest.raises(ValueError, match="record 1: field 'output' must be a string"):
        audit([records[0], {"instruction": "x"}], [0])


def test_selection_summary_carries_the_verbosity_audit(tmp_path):
    records = make_records(200, 0.3, seed=4)
    write_records(tmp_path / "all.json", records)
    rate_records(records, {"verifier": {"backend": "verifier"}}, {"judge": "verifier"}, tmp_path / "cache",
                 tmp_path / "scores.jsonl", tmp_path / "cost.json", progress=False)
    rule = {"method": "threshold", "threshold": 4.5}
    kept = write_selection(tmp_path / "all.json", tmp_path / "scores.jsonl", rule, tmp_path / "kept.json")
    write_random(tmp_path / "all.json", tmp_path / "kept.json", 1, tmp_path / "random.json")
    summary = write_summary(tmp_path / "all.json", tmp_path / "scores.jsonl", rule, tmp_path / "random.json",
                            tmp_path / "summary.json", tmp_path / "hist.png")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["verbosity"] == summary["verbosity"] == audit(records, kept)
    assert 0 < on_disk["verbosity"]["longest_k"]["k"] == len(kept) < len(records)
