"""Parse the scores an LLM judge wrote.

Two reply shapes matter in AlpaGasus (see ``PAPER.md`` sections 1 and 3):

* the data-selection *rating*: one score on a 0-5 scale (:func:`parse_rating`);
* the pairwise *evaluation*: two scores on a 1-10 scale, Assistant 1 then Assistant 2
  (:func:`parse_pair`).

The paper's reference code reads the first line as a float (rating) or the first line with
commas read as spaces as two numbers (pair), and its ``"Score:"`` fallback for ratings is
buggy (``"Score:4.5"`` gives ``4``).  Real judges — in particular newer chat models — wrap the
score in labels, markdown, fractions and sentences, so these parsers accept those shapes
while refusing to pick numbers out of an explanation.

Shared conventions
------------------
* **Considered line** ("the score line"): the first non-empty line that contains a digit and
  does not end with ``":"``.  Lines without digits ("Sure! Here is my evaluation.") and lines
  announcing what follows ("Here are my scores for the 2 answers:") are preamble and are
  skipped.  Markdown emphasis (``*``, ``_``, backticks) and leading ``#``/``>`` are ignored.
* Rules that search the whole reply (the labelled patterns) also ignore markdown emphasis.
* **Precedence**: the first rule that yields a *candidate* decides; later rules are not
  consulted even when that candidate is invalid.  A candidate is invalid (-> ``None``) when a
  value lies outside ``[0, max_score]`` or when it was written as a fraction whose
  denominator is not ``max_score`` (``"8/10"`` is not a 0-5 rating).
* ``None`` always means "no usable score"; callers must never turn it into a number
  silently.

All functions are pure; all regular expressions are compiled once at import.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_rating", "parse_pair"]

# --------------------------------------------------------------------------- building blocks

# An unsigned decimal number that is not glued to other digits, a dot or a minus sign.
_NUM = r"(?<![\d.\-−])(\d+(?:\.\d+)?|\.\d+)(?![\d])"
# An optional denominator: "/5", "/ 5.0", "out of 5", "(out of 5)".
_DEN = r"(?:\s*\(?\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)\s*\)?)"

_MARKDOWN = re.compile(r"[*_`]+")
_LEADING_MARKS = re.compile(r"^[\s#>]+")

# --- rating -----------------------------------------------------------------------------

_RATING_LABEL = (
    r"(?:(?:overall|final|my|total)\s+)?"
    r"(?:(?:accuracy|helpfulness|relevance|quality)\s+)?"
    r"(?:scores?|ratings?|grade|accuracy|helpfulness|relevance|quality)"
)
_RATING_HEAD = rf"(?:{_RATING_LABEL}\s*(?:[:=\-–—]|\bis\b)?\s*)?"
_RATING_CORE = rf"[\[(]?\s*{_NUM}{_DEN}?\s*[\])]?"

# (a1) the whole considered line is a score: "4.5", "[4.5]", "Score: 4.5/5", "Rating: 4 out of 5".
_RATING_LINE = re.compile(rf"^\s*{_RATING_HEAD}{_RATING_CORE}\s*\.?\s*$", re.IGNORECASE)
# (a2) the considered line starts with a score followed by a separator and text:
# "4.5 - The response is correct.", "Score: 4 | accurate".  A "." is NOT a separator here
# so that a numbered list ("1. The response ...") is not read as a score, and the text
# must not start with a digit ("4,5" is ambiguous, "4 - 5" a range).
_RATING_LEAD = re.compile(
    rf"^\s*{_RATING_HEAD}{_RATING_CORE}\s*[-–—:|,;]\s*[^\d\s]", re.IGNORECASE
)
# (b) labelled patterns anywhere (within one line).
_RATING_LABELLED = (
    # "Score: 4", "The score is 3.5", "I would rate this response 4.5", "rated 4 out of 5"
    re.compile(
        rf"\b(?:scores?|scored|ratings?|rate|rated|grade)\b[^\d\n]{{0,40}}?{_NUM}{_DEN}?",
        re.IGNORECASE,
    ),
    # "Accuracy: 4.5", "helpfulness = 4"
    re.compile(rf"\b(?:accuracy|helpfulness)\b\s*[:=]\s*{_NUM}{_DEN}?", re.IGNORECASE),
    # "4 out of 5", "4.5/5"
    re.compile(rf"{_NUM}\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
)

# --- pair -------------------------------------------------------------------------------

_PAIR_ITEM = rf"[\[(]?\s*{_NUM}(?:\s*/\s*(\d+(?:\.\d+)?))?\s*[\])]?"
_PAIR_SEP = r"(?:\s*(?:[,;&]|\band\b|\bvs\.?)\s*|\s+)"
# (a) the whole considered line is a pair: "8 7", "8,7", "[8, 7]", "Scores: 8/10 and 7/10".
_PAIR_LINE = re.compile(
    rf"^\s*(?:(?:scores?|ratings?)\s*[:=\-]?\s*)?{_PAIR_ITEM}{_PAIR_SEP}{_PAIR_ITEM}\s*\.?\s*$",
    re.IGNORECASE,
)
# (b) labelled per-assistant scores: "Assistant 1: 8", "Score for Assistant 1: 9",
# "Assistant 1 receives a score of 8".
_PAIR_LABELLED = re.compile(
    r"(?P<pre>\b(?:scores?|ratings?)\s+(?:for|of)\s+)?"
    r"\bassistant\s*#?\s*(?P<k>[12])\b"
    r"(?P<gap>[^\d\n]{0,60}?)"
    rf"{_NUM}(?:\s*/\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
# A gap that is only punctuation/filler: "Assistant 1: 8", "Assistant 1's score = 8".
_PAIR_GAP_PLAIN = re.compile(
    r"^\s*(?:['’]s)?\s*(?:(?:overall\s+)?(?:score|rating)s?)?\s*(?:[:=\-–—]|\bis\b)?\s*$",
    re.IGNORECASE,
)
# A gap that says a score follows: "receives a score of", "is rated", "scores".
_PAIR_GAP_SCORE = re.compile(r"\b(?:scores?|scored|ratings?|rated?)\b", re.IGNORECASE)
# (b') joint form: "Assistants 1 and 2 receive scores of 8 and 7 (respectively)".
_PAIR_JOINT = re.compile(
    r"\bassistants?\s*1\s*(?:and|&|,)\s*(?:assistant\s*)?2\b"
    r"(?P<gap>[^\d\n]{0,60}?)"
    rf"{_PAIR_ITEM}{_PAIR_SEP}{_PAIR_ITEM}",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- helpers


def _clean_line(line: str) -> str:
    return _LEADING_MARKS.sub("", _MARKDOWN.sub("", line)).strip()


def _considered_line(text: str) -> str | None:
    """The first non-empty, digit-bearing line not ending with ':' (markdown stripped)."""
    for raw in text.splitlines():
        line = _clean_line(raw)
        if not line or not any(ch.isdigit() for ch in line) or line.endswith(":"):
            continue
        return line
    return None


def _value(num: str, den: str | None, max_score: float) -> float | None:
    """Validate one written score; None when out of range or on another scale."""
    value = float(num)
    if den is not None and not math.isclose(float(den), max_score):
        return None
    if not math.isfinite(value) or value < 0 or value > max_score:
        return None
    return value


# --------------------------------------------------------------------------- public API


def parse_rating(text: str | None, max_score: float = 5.0) -> float | None:
    """The single score a rating judge wrote, or ``None``.

    Precedence (the first rule that finds a candidate decides; see the module docstring for
    the *considered line* and for validation):

    (a) **The considered line is essentially a score** — the first non-empty line holding a
        digit (digit-free preamble lines and lines ending in ``":"`` are skipped):

        1. the whole line is a score: a bare number with optional markdown/brackets, an
           optional label (``Score``, ``Rating``, ``Accuracy``, ``Helpfulness``,
           ``Accuracy score``, ``Overall rating``...) and an optional ``/5`` or
           ``out of 5`` (also parenthesised) — ``"4.5"``, ``"**4.5**"``, ``"[4.5]"``,
           ``"Score:4.5"``, ``"Rating: 4 out of 5"``, ``"Score: 3.5 (out of 5)"``;
        2. the line *starts* with such a score followed by ``- – — : | , ;`` and text not
           starting with a digit (``"4,5"`` and ``"4 - 5"`` are ambiguous) —
           ``"4.5 - The response is correct."`` (a ``"."`` is not accepted as separator, so a
           numbered list ``"1. The response..."`` is not a score).

    (b) **An explicit labelled pattern anywhere** (the earliest in the text wins):
        ``score/rating/rate/rated/grade ... X`` within one line and 40 non-digit characters
        (``"The score is 3.5."``, ``"I would rate this response 4.5 out of 5."``),
        ``Accuracy: X`` / ``Helpfulness: X``, ``X out of N`` / ``X/N``.

    (c) Otherwise ``None``.

    The chosen candidate is ``None`` when its value is outside ``[0, max_score]``
    (``"7"``, ``"Score: 45"``) or its denominator is not ``max_score`` (``"8/10"``).
    Unlike the paper's reference code, ``"Score:4.5"`` gives ``4.5``, not ``4``.
    """
    if not text:
        return None
    line = _considered_line(text)
    if line is not None:
        m = _RATING_LINE.match(line) or _RATING_LEAD.match(line)
        if m:
            return _value(m.group(1), m.group(2), max_score)

    text = _MARKDOWN.sub("", text)
    best: re.Match[str] | None = None
    for pattern in _RATING_LABELLED:
        m = pattern.search(text)
        if m and (best is None or m.start(1) < best.start(1)):
            best = m
    if best is not None:
        return _value(best.group(1), best.group(2), max_score)
    return None


def parse_pair(text: str | None, max_score: float = 10.0) -> tuple[float, float] | None:
    """The two scores (Assistant 1, Assistant 2) of a pairwise judgement, or ``None``.

    Precedence (the first rule that finds a candidate decides):

    (a) **The considered line is essentially a pair** — the first non-empty line holding a
        digit (digit-free preamble such as ``"Here are my scores:"`` and lines ending in
        ``":"`` are skipped), with markdown removed, is exactly two numbers, each optionally
        bracketed and optionally ``/10``, separated by whitespace, a comma (the paper reads
        commas as spaces), ``;``, ``&``, ``and`` or ``vs``, with an optional ``Scores:``
        label — ``"8 7"``, ``"8,7"``, ``"8\\t7"``, ``"**8** **7**"``, ``"[8, 7]"``,
        ``"(8, 7)"``, ``"8/10 and 7/10"``, ``"Scores: 8 7"``.  A line with three numbers
        (``"8 7 6"``) is not a pair.

    (b) **Labelled per-assistant scores anywhere**: the first acceptable score after
        ``Assistant 1`` and the first after ``Assistant 2``; a number after the label counts
        only when the text between is bare punctuation (``"Assistant 1: 8"``,
        ``"Assistant 1's score: 8"``), says a score follows (``"Assistant 1 receives a score
        of 8"``), or the label is ``Score(s) for/of Assistant 1``.  So ``"Assistant 1 gave 3
        reasons"`` is not a score.  Both assistants must be found.  Failing that, the joint
        form ``"Assistants 1 and 2 receive scores of 8 and 7"``.

    (c) Otherwise ``None``.

    The pair is ``None`` when either value is outside ``[0, max_score]`` (``"80 70"``) or is
    written over a denominator other than ``max_score``.  Explanation lines are never read
    by rule (a); numbers in them are used by rule (b) only when explicitly labelled.
    """
    if not text:
        return None
    line = _considered_line(text)
    if line is not None:
        m = _PAIR_LINE.match(line)
        if m:
            return _pair_value(m.group(1), m.group(2), m.group(3), m.group(4), max_score)

    text = _MARKDOWN.sub("", text)
    found: dict[str, tuple[str, str | None]] = {}
    for m in _PAIR_LABELLED.finditer(text):
        k = m.group("k")
        if k in found:
            continue
        gap = m.group("gap")
        if "assistant" in gap.lower():
            continue
        if m.group("pre") or _PAIR_GAP_PLAIN.match(gap) or _PAIR_GAP_SCORE.search(gap):
            found[k] = (m.group(4), m.group(5))
    if "1" in found and "2" in found:
        (n1, d1), (n2, d2) = found["1"], found["2"]
        return _pair_value(n1, d1, n2, d2, max_score)

    m = _PAIR_JOINT.search(text)
    if m and _PAIR_GAP_SCORE.search(m.group("gap")):
        return _pair_value(m.group(2), m.group(3), m.group(4), m.group(5), max_score)
    return None


def _pair_value(
    n1: str, d1: str | None, n2: str, d2: str | None, max_score: float
) -> tuple[float, float] | None:
    v1 = _value(n1, d1, max_score)
    v2 = _value(n2, d2, max_score)
    if v1 is None or v2 is None:
        return None
    return (v1, v2)
