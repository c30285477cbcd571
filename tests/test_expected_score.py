"""Expected scores from token probabilities: hand-worked distributions, the openai judge in
logprobs mode against the fake server, and selection by expected_score."""
import math

import pytest

from alpagasus.judging.expected_score import expected_score, score_start, trim_to_score


def pos(token, alts):
    """One position: the sampled ``token`` and its alternatives {token: probability}."""
    return {"token": token, "logprob": math.log(alts[token]),
            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alts.items()]}


def test_four_point_five_split_into_three_tokens_with_mass_on_a_word():
    # "4" (0.6) | "3" (0.3) | "The" (0.1); then "." 0.8 / "\n" 0.2; then "5" 0.9 / "0" 0.1.
    content = [pos("4", {"4": 0.6, "3": 0.3, "The": 0.1}), pos(".", {".": 0.8, "\n": 0.2}),
               pos("5", {"5": 0.9, "0": 0.1}), pos("\n", {"\n": 1.0})]
    got = expected_score(content)
    # By hand: 4.5 = .6*.8*.9 = .432; 4 = .6*.2 + .6*.8*.1 = .168; 3 = .3; valid mass .9.
    assert got.outside_mass == pytest.approx(0.1)
    assert got.probs == pytest.approx({"3": 0.3 / 0.9, "4": 0.168 / 0.9, "4.5": 0.432 / 0.9}, abs=1e-6)
    assert got.expected == pytest.approx((3 * 0.3 + 4 * 0.168 + 4.5 * 0.432) / 0.9, abs=1e-6)


def test_score_after_a_label_and_markdown():
    content = [pos("Score", {"Score": 1.0}), pos(":", {":": 1.0}), pos(" **", {" **": 1.0}),
               pos("5", {"5": 0.7, "4": 0.3}), pos("**", {"**": 0.9, ".": 0.1})]
    assert score_start(content) == 3
    got = expected_score(content)
    # The unsampled "." (0.7 * 0.1) led nowhere known: outside. 5 = .7*.9 = .63, 4 = .3.
    assert got.outside_mass == pytest.approx(0.07)
    assert got.probs == pytest.approx({"4": 0.3 / 0.93, "5": 0.63 / 0.93}, abs=1e-6)


def test_merged_tokens_and_scores_past_five_are_outside():
    # A tokenizer that writes "4.5" as one token; "5.5" is no valid score; "45" neither.
    content = [pos("4.5", {"4.5": 0.5, "5.5": 0.2, "4": 0.2, "45": 0.1})]
    got = expected_score(content)
    assert got.outside_mass == pytest.approx(0.3)
    assert got.probs == pytest.approx({"4": 0.2 / 0.7, "4.5": 0.5 / 0.7}, abs=1e-6)


def test_dot_that_was_a_period_counts_as_the_integer():
    content = [pos("4", {"4": 1.0}), pos(".", {".": 1.0}), pos(" The", {" The": 0.75, "5": 0.25})]
    got = expected_score(content)
    assert got.probs == pytest.approx({"4": 0.75, "4.5": 0.25}) and got.outside_mass == pytest.approx(0)
    assert got.expected == pytest.approx(4.125)


def test_unlisted_tail_is_outside_and_no_digit_is_none():
    content = [pos("3", {"3": 0.5, "2": 0.2})]  # 0.3 of the mass beyond the listed alternatives
    got = expected_score(content)
    assert got.outside_mass == pytest.approx(0.3) and got.expected == pytest.approx((3 * 0.5 + 2 * 0.2) / 0.7)
    assert expected_score([pos("Unable", {"Unable": 1.0})]) is None
    assert expected_score(None) is None and expected_score([]) is None


def test_trim_keeps_only_what_the_expected_score_reads():
    content = [pos("Score", {"Score": 0.9, "Rating": 0.1}), pos(":", {":": 1.0})] + \
              [pos("4", {"4": 0.6, "3": 0.4}), pos(".", {".": 1.0}), pos("5", {"5": 1.0})] + \
              [pos(" word", {" word": 0.5, " other": 0.5}) for _ in range(200)]
    trimmed = trim_to_score(content)
    assert len(trimmed) == 5 and "top_logprobs" not in trimmed[0]
    assert expected_score(trimmed) == expected_score(content)


# --- the openai judge in logprobs mode, through the real SDK and the fake server -------------

from collections import Counter  # noqa: E402

from alpagasus.core.io import read_jsonl  # noqa: E402
from alpagasus.judging.judges import make_judge  # noqa: E402
from alpagasus.judging.prompts import rating_messages  # noqa: E402
from alpagasus.judging.rating import rate_records  # noqa: E402
from alpagasus.selection.select import cut_ties, scores_of, select_indices  # noqa: E402
from alpagasus.testing.fake_openai import (FakeOpenAIServer, FaultPlan, expected_rating, rating_reply, reply_logprobs)  # noqa: E402
from test_rating import unique_records  # noqa: E402


def fake_judge(srv, **over):
    return {"backend": "openai", "model": "gpt-test", "base_url": srv.base_url, "concurrency": 8,
            "timeout_s": 5, "usd_per_1m_input_tokens": 1.0, "usd_per_1m_output_tokens": 2.0, **over}


def test_text_mode_keys_unchanged_and_logprobs_mode_asks_for_them():
    text = make_judge("j", {"backend": "openai", "model": "m"})
    assert text.params == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256}  # existing caches hit
    lp = make_judge("j", {"backend": "openai", "model": "m", "score_mode": "logprobs"})
    assert lp.params == {**text.params, "logprobs": True, "top_logprobs": 20}


def test_logprobs_rating_end_to_end(tmp_path, api_key):
    records = unique_records(60)
    rating = {"judge": "fake", "max_usd": None}
    with FakeOpenAIServer(api_key=api_key, faults=FaultPlan(no_score=0.1)) as srv:
        judges = {"fake": fake_judge(srv, score_mode="logprobs")}
        rate_records(records, judges, rating, tmp_path / "cache", tmp_path / "s.jsonl", tmp_path / "c.json", progress=False)
        bodies = srv.log()
        srv.reset_log()
        rate_records(records, judges, rating, tmp_path / "cache", tmp_path / "s2.jsonl", tmp_path / "c2.json", progress=False)
        assert srv.log() == []  # the log-probabilities came from the cache
    assert len(bodies) == 60
    rows = read_jsonl(tmp_path / "s.jsonl")
    assert (tmp_path / "s2.jsonl").read_text() == (tmp_path / "s.jsonl").read_text()
    status = Counter(r["status"] for r in rows)
    assert status["unparsed"] > 0 and status["scored"] + status["unparsed"] == 60
    for r, rec in zip(rows, records):
        if r["status"] != "scored":
            assert r["expected_score"] is None and r["score_probs"] is None
            continue
        msgs = rating_messages(rec["instruction"], rec["input"], rec["output"])
        assert r["score"] == expected_rating(msgs)
        want = expected_score(reply_logprobs(msgs, rating_reply(msgs)))
        assert r["expected_score"] == pytest.approx(want.expected) and r["score_probs"] == want.probs
        # The written score has a probability, and the expected score lies within one point.
        assert r["score_probs"][f"{r['score']:g}"] > 0.1
        assert abs(r["expected_score"] - r["score"]) < 1.0 and 0 < r["score_outside_mass"] < 0.5
    # Expected scores break the text score's ties.
    written = Counter(r["score"] for r in rows if r["status"] == "scored")
    fine = Counter(r["expected_score"] for r in rows if r["status"] == "scored")
    assert max(fine.values()) == 1 < max(written.values())


def test_selection_by_expected_score_with_ties():
    recs = [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(8)]
    rows = [{"status": "scored", "score": 4.5, "expected_score": e} for e in (4.2, 4.6, 4.6, 4.4, 4.6, 3.9, 4.8, 4.5)]
    rows[1]["status"] = "unparsed"  # never kept, whatever its expected score
    by_expected = scores_of(rows, "expected_score")
    kept = select_indices(recs, by_expected, "top_k", k=3)
    # 4.8 first, then two of the 4.6 ties {2, 4} (1 is unparsed): all of them.
    assert kept == [2, 4, 6]
    kept2 = select_indices(recs, by_expected, "top_k", k=2)
    assert len(kept2) == 2 and 6 in kept2 and set(kept2) - {6} <= {2, 4}
    assert kept2 == select_indices(recs, by_expected, "top_k", k=2)  # deterministic
    ties = cut_ties(by_expected, kept2)
    assert ties == {"distinct_values": 6, "cut_value": 4.6, "ties_at_cut": 2, "ties_at_cut_kept": 1, "largest_tie_group": 2}
    by_text = scores_of(rows, "score")
    assert cut_ties(by_text, select_indices(recs, by_text, "threshold", 4.5))["ties_at_cut"] == 7
    with pytest.raises(ValueError, match="score_mode: logprobs"):
        scores_of([{"status": "scored", "score": 4.5}], "expected_score")


def test_fake_server_logprobs_are_deterministic_and_spell_the_reply(api_key):
    import openai

    msgs = rating_messages("Name a colour.", "", "Blue.")
    with FakeOpenAIServer(api_key=api_key) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=api_key, max_retries=0)
        asked = [client.chat.completions.create(model="m", messages=msgs, logprobs=True, top_logprobs=20)
                 for _ in range(2)]
        plain = client.chat.completions.create(model="m", messages=msgs)
    a, b = (r.choices[0] for r in asked)
    assert a.logprobs.model_dump() == b.logprobs.model_dump()
    assert "".join(t.token for t in a.logprobs.content) == a.message.content
    assert plain.choices[0].logprobs is None
    for pos in a.logprobs.content:  # probabilities of a position's alternatives sum to at most 1
        assert sum(math.exp(t.logprob) for t in pos.top_logprobs) <= 1 + 1e-9
