"""The expected rating from a judge's token probabilities (``score_mode: logprobs``).

A modern judge writes "4.5" for nearly every Alpaca record, yet the probabilities behind that
token still tell a sure 4.5 from a 4.5 that was nearly a 4. The expected score is the mean of
the judge's distribution over the valid scores, read at the position where the score starts.

Input: the per-token log-probabilities of the reply, in the OpenAI chat-completions shape
(``choices[0].logprobs.content``): a list of positions ``{"token", "logprob", "top_logprobs":
[{"token", "logprob"}, ...]}``; ``token`` is the token that was generated (the *sampled path*).

The method, exactly:

1. **Where the score starts**: the first generated token whose text, leading whitespace and
   markdown (``* _ ` [ (``) stripped, begins with a digit. That is the first digit of the reply,
   which is on the line the parser reads (parsing.py: digit-free preamble lines are skipped).
2. **The first digit's distribution** (position *i*): each listed alternative is read as
   ``d`` (a digit, more may follow), ``d.`` or ``d.x`` (a tokenizer that merges them); anything
   else (words, "6", "10", markdown) is *outside* mass.
3. **The decimals, conditioned on the sampled path**: the API lists alternatives only along the
   path it generated, so decimals are known only after the sampled first digit d*. If the sampled
   token is a bare ``d*``, position *i+1* splits its mass: ``.`` (a decimal point, or a period),
   ``.x`` merged (score d*.x), another digit (``45``: outside), anything else (newline, ``/``,
   space: the number ended, score d*). If ``.`` was sampled, position *i+2* splits the ``.``
   mass: a digit x gives d*.x, anything else means the dot was a period (score d*). If ``.`` was
   listed but not sampled, where it led is unknown: that mass is outside. A sampled ``d*.``
   reads its decimal at *i+1* the same way.
4. **Other first digits** (d != d*, and ``d.``-tokens) count as the integer d: their own decimals
   were never generated, so cannot be known. This is the method's main limit: with a judge that
   samples "4.5" and gives "3" 30%, that 30% is scored 3, although it may have become "3.5".
5. **Validity and renormalisation**: a score is valid when 0 <= score <= 5 (5.5 is outside).
   The probabilities of the valid scores are renormalised to sum to 1; ``outside_mass`` is what
   was not on a valid score, the tail beyond the listed top alternatives included (the API lists
   at most 20 per position).

A local model (judges/transformers_judge.py) produces the same shape with every score token
listed, so one function serves both backends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_SCORE = 5.0
_LEAD = re.compile(r"^[\s*_`\[(]+")
_DIGIT = re.compile(r"^(\d)$")
_DIGIT_DOT = re.compile(r"^(\d)\.$")
_DIGIT_DOT_DIGIT = re.compile(r"^(\d)\.(\d)$")
_DOT_DIGIT = re.compile(r"^\.(\d)$")


@dataclass(frozen=True)
class ExpectedScore:
    expected: float             # sum of score x probability over the valid scores (renormalised)
    probs: dict[str, float]     # "4.5" -> probability, renormalised over valid scores
    outside_mass: float         # probability that fell on no valid score (before renormalising)


def _stripped(token: str) -> str:
    return _LEAD.sub("", token)


def _key(score: float) -> str:
    return f"{score:g}"


def score_start(content: list[dict]) -> int | None:
    """Index of the position where the score starts (the first token beginning with a digit)."""
    for i, pos in enumerate(content):
        text = _stripped(pos.get("token") or "")
        if text[:1].isdigit():
            return i
    return None


def _alternatives(pos: dict) -> list[tuple[str, float]]:
    """(token, probability) of a position's listed alternatives; the sampled token is always
    among them (servers list it, but a short list may not)."""
    alts = {a["token"]: math.exp(a["logprob"]) for a in pos.get("top_logprobs") or []}
    alts.setdefault(pos["token"], math.exp(pos["logprob"]))
    return list(alts.items())


def _decimal_split(pos: dict | None) -> tuple[dict[int, float], float, float]:
    """At the position after ``d.``: (decimal digit -> prob, prob the number ended, outside).
    ``pos`` None (the reply ended): the number ended there with certainty."""
    if pos is None:
        return {}, 1.0, 0.0
    digits: dict[int, float] = {}
    ended = 0.0
    for tok, p in _alternatives(pos):
        m = _DIGIT.match(tok.rstrip())
        if m:
            digits[int(m.group(1))] = digits.get(int(m.group(1)), 0.0) + p
        else:
            ended += p  # "4." then a newline or a word: the dot was a period
    return digits, ended, 0.0


def _after_digit_split(content: list[dict], j: int) -> tuple[dict[int, float], float, float]:
    """At position j (right after a sampled bare digit): (decimal digit -> prob, prob the number
    ended, outside prob)."""
    if j >= len(content):
        return {}, 1.0, 0.0
    pos = content[j]
    digits: dict[int, float] = {}
    ended = outside = 0.0
    dot_sampled = pos["token"] == "."
    for tok, p in _alternatives(pos):
        if tok == ".":
            if dot_sampled:
                dd, de, do = _decimal_split(content[j + 1] if j + 1 < len(content) else None)
                for x, q in dd.items():
                    digits[x] = digits.get(x, 0.0) + p * q
                ended += p * de
                outside += p * do
            else:
                outside += p  # where an unsampled "." led is unknown
            continue
        m = _DOT_DIGIT.match(tok.rstrip())
        if m:
            digits[int(m.group(1))] = digits.get(int(m.group(1)), 0.0) + p
        elif tok[:1].isdigit():
            outside += p  # "45", "4 5" glued: not a 0-5 score
        else:
            ended += p
    return digits, ended, outside


def expected_score(content: list[dict] | None, max_score: float = MAX_SCORE) -> ExpectedScore | None:
    """The expected score of one reply, or None when no position starts with a digit or no
    probability falls on a valid score."""
    if not content:
        return None
    i = score_start(content)
    if i is None:
        return None
    mass: dict[float, float] = {}

    def add(score: float, p: float) -> None:
        if 0.0 <= score <= max_score + 1e-9:
            mass[score] = mass.get(score, 0.0) + p

    first = content[i]
    sampled = _stripped(first["token"])
    for tok, p in _alternatives(first):
        text = _stripped(tok)
        if m := _DIGIT_DOT_DIGIT.match(text.rstrip()):
            add(int(m.group(1)) + int(m.group(2)) / 10, p)
        elif m := _DIGIT_DOT.match(text.rstrip()):
            d = int(m.group(1))
            if text == sampled:  # the sampled "d.": its decimal is at i+1
                dd, ended, _ = _decimal_split(content[i + 1] if i + 1 < len(content) else None)
                for x, q in dd.items():
                    add(d + x / 10, p * q)
                add(d, p * ended)
            else:
                add(d, p)
        elif m := _DIGIT.match(text.rstrip()):
            d = int(m.group(1))
            if text == sampled:  # the sampled bare digit: the next positions say what followed
                dd, ended, _ = _after_digit_split(content, i + 1)
                for x, q in dd.items():
                    add(d + x / 10, p * q)
                add(d, p * ended)
            else:
                add(d, p)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    probs = {_key(s): p / total for s, p in sorted(mass.items())}
    expected = sum(s * p for s, p in mass.items()) / total
    return ExpectedScore(expected=round(expected, 6), probs={k: round(v, 6) for k, v in probs.items()},
                         outside_mass=round(max(0.0, 1.0 - total), 6))


def trim_to_score(content: list[dict], keep_after: int = 3) -> list[dict]:
    """The part of a reply's log-probabilities the expected score needs, for the cache: the
    tokens up to the score (without their alternatives) and ``keep_after`` positions from the
    score on, with them. A 256-token reply with 20 alternatives a token is ~100 kB; this is ~2 kB."""
    i = score_start(content)
    if i is None:
        return [{"token": p["token"], "logprob": p["logprob"]} for p in content[:8]]
    head = [{"token": p["token"], "logprob": p["logprob"]} for p in content[:i]]
    return head + [{"token": p["token"], "logprob": p["logprob"],
                    "top_logprobs": [{"token": a["token"], "logprob": a["logprob"]} for a in p.get("top_logprobs") or []]}
                   for p in content[i:i + keep_after]]
