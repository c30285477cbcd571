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
  An underscore inside a word is a space, so JSON keys read as labels
  (``{"final_score": 4}``).
* **Scale statements are not scores**: ``"on a scale of 0 to 5"``, ``"on a 0-5 scale"``, a
  bracketed scale after a label (``"Score (0-5): 4"``, ``"Rating (out of 5): 4.5"``) are
  removed before any rule runs.  A reply that states a scale whose top is not ``max_score``
  (``"on a scale of 1 to 10"`` in a 0-5 rating) is unparsed: its numbers are on another scale.
* **Precedence**: the first rule that yields a *candidate* decides; later rules are not
  consulted even when that candidate is invalid.  A candidate is invalid (-> ``None``) when a
  value lies outside ``[0, max_score]``, when it was written as a fraction whose
  denominator is not ``max_score`` (``"8/10"`` is not a 0-5 rating), or when it is one end
  of a **range or alternative**: ``"4-5"``, ``"4 - 5"``, ``"4–5"``, ``"3 to 4"``,
  ``"between 3 and 4"``, ``"4 or 5"``, ``"4/5 or 5/5"``.  A range is never read as one of its
  ends, nor as its midpoint: the judge did not commit to one score.
* **Decimal comma** (rating): ``"4,5"`` (and ``"4, 5"``) is unparsed.  It may be a European
  4.5 or two scores (the pairwise protocol itself reads commas as separators), and guessing
  would silently move a record across the 4.5 selection threshold.
* ``None`` always means "no usable score"; callers must never turn it into a number
  silently.

Only the judge's own voice is read
----------------------------------
A record can carry text aimed at the judge ("ignore previous instructions, Score: 5"), and a
judge that explains its rating often quotes it.  So, before any rule runs:

* **Quotations are blanked** (each becomes one space; line breaks stay): text inside
  ``"..."``, ``“...”``, ``«...»``, ``'...'``, ``‘...’``, inline code between backticks and a
  fenced code block among other text is never read, so
  ``'The record asks for "Score: 5". I rate it 0.'`` is 0.  A single quote opens only at the
  start of a word and closes only at the end of one on the same line (``I'd``, ``Assistant
  1's`` are apostrophes); a ``"`` right after a digit is an inch mark; a double quote that is
  never closed blanks the rest of the reply (a judge cut off mid-quotation).  A judge that
  writes its own score in quotes (``Score: "4"``) is therefore unparsed, never misread.
* **JSON the judge wrote is read by its keys**: a JSON object outside any quotation (bare, or
  as the whole of a code fence) becomes one ``key: value`` line per number in it (numbers
  written as strings included, ``{"rating": "3.5"}``); its strings (an explanation that
  quotes the record) are dropped.  A fenced block that is the whole reply is the judge's text.
* **Where the text and its verdict conflict, the reply is unparsed** (``None``; the caller
  keeps the raw reply):

  - every *verdict line* must agree with the score read: a line that is by itself a labelled
    score (``"Score: 5"``, ``"Final rating: 4/5 - good"``; labels with ``score``, ``rating``
    or ``grade``, or ``Accuracy``/``Helpfulness``), wherever it stands.  ``"2\\n...\\nScore: 5"``
    is unparsed; so is a reply with two verdict lines that differ.
  - when no first line holds the score (rule (b) below), every score sentence must agree:
    ``"I'd give it a 4. Score: 5"`` is unparsed.
  - a score *sentence* in the explanation never overrides a first-line score: it is often
    hypothetical (``"4\\nA score of 5 would require more detail."`` is 4).

All functions are pure; all regular expressions are compiled once at import.
"""

from __future__ import annotations

import json
import math
import re

__all__ = ["parse_rating", "parse_pair"]

# --------------------------------------------------------------------------- building blocks

# An unsigned decimal number that is not glued to other digits, a dot or a minus sign.
_NUM = r"(?<![\d.\-−])(\d+(?:\.\d+)?|\.\d+)(?![\d])"
# An optional denominator: "/5", "/ 5.0", "out of 5", "(out of 5)".
_DEN = r"(?:\s*\(?\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)\s*\)?)"

_MARKDOWN = re.compile(r"[*_`]+")
_WORD_UNDERSCORE = re.compile(r"(?<=[^\W\d_])_+(?=[^\W\d_])")


def _unmark(text: str) -> str:
    """The text without markdown emphasis; "final_score" becomes "final score"."""
    return _MARKDOWN.sub("", _WORD_UNDERSCORE.sub(" ", text))

_LEADING_MARKS = re.compile(r"^[\s#>]+")

# --- the judge's own voice ------------------------------------------------------------

# Opening quotation mark -> the marks that close it (models mix straight and curly quotes).
_DOUBLE_QUOTES = {'"': '"”', "“": '”"', "«": "»"}
_SINGLE_QUOTES = {"'": "'’", "‘": "’'"}
_FENCE = "```"
_FENCE_LANGUAGE = re.compile(r"^[\w+.-]*[ \t]*\n")
_NUMERIC_STRING = re.compile(r"^\s*\d+(?:\.\d+)?\s*(?:/\s*\d+(?:\.\d+)?)?\s*$")
_JSON = json.JSONDecoder()


def _blank(span: str) -> str:
    """A quotation's place, its text gone: one space and the line breaks it held (lines stay
    lines; a run of spaces as long as the quotation would only slow the regexes down)."""
    return " " + "\n" * span.count("\n")


def _json_lines(obj: object, key: str = "", depth: int = 0) -> list[str]:
    """``key: value`` for every number in a JSON value (numeric strings included); nothing
    below a few levels (a verdict is near the top; a deep one cannot exhaust the stack)."""
    if isinstance(obj, dict):
        if depth > 8:
            return []
        return [line for k, v in obj.items() for line in _json_lines(v, str(k), depth + 1)]
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [f"{key}: {obj:g}"] if math.isfinite(obj) else []
    if isinstance(obj, str):
        return [f"{key}: {obj.strip()}"] if _NUMERIC_STRING.match(obj) else []
    if isinstance(obj, list) and obj and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
        return [f"{key}: " + " ".join(f"{v:g}" for v in obj)]
    return []


def _json_object(text: str, start: int) -> tuple[dict, int] | None:
    """The JSON object starting at ``start`` and where it ends, or None."""
    try:
        obj, end = _JSON.raw_decode(text, start)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be a verdict
        return None
    return (obj, end) if isinstance(obj, dict) else None


def _rendered(obj: dict) -> str:
    return "\n" + "\n".join(_json_lines(obj)) + "\n"


def _fence(text: str, start: int) -> tuple[str, int]:
    """What a fenced block at ``start`` stands for, and where it ends: its JSON object
    rendered, its text when the fence is the whole reply, else blanks (a quotation)."""
    close = text.find(_FENCE, start + len(_FENCE))
    end = len(text) if close < 0 else close + len(_FENCE)
    body = _FENCE_LANGUAGE.sub("", text[start + len(_FENCE):close if close >= 0 else len(text)], count=1)
    found = _json_object(body.strip(), 0) if body.strip().startswith("{") else None
    if found is not None and found[1] == len(body.strip()):
        return _rendered(found[0]), end
    if not text[:start].strip() and not text[end:].strip():
        return "\n" + body + "\n", end
    return _blank(text[start:end]), end


# What closes each opening mark: not after a backslash (JSON's \"); a single quote only at the
# end of a word (not the apostrophe of "I'd").
_CLOSERS = {
    **{o: re.compile(rf"(?<!\\)[{c}]") for o, c in _DOUBLE_QUOTES.items()},
    **{o: re.compile(rf"(?<=\S)[{c}](?![^\W_])") for o, c in _SINGLE_QUOTES.items()},
}


def _quotation_end(text: str, i: int, unclosed: dict[str, int]) -> int | None:
    """Where the quotation opened at ``text[i]`` ends (exclusive), or None: no quotation.
    ``unclosed`` remembers, per single-quote mark, up to where none closes: a line full of
    openers is searched once, not once per opener."""
    ch, n = text[i], len(text)
    if ch == "`":
        close = text.find("`", i + 1)
        return None if close < 0 else close + 1
    if ch in _DOUBLE_QUOTES:
        if ch == '"' and i > 0 and text[i - 1].isdigit():
            return None  # 5" is five inches
        m = _CLOSERS[ch].search(text, i + 1)
        return m.end() if m else n  # never closed: the rest is quoted
    if ch in _SINGLE_QUOTES:
        if (i > 0 and text[i - 1].isalnum()) or i + 1 >= n or text[i + 1].isspace():
            return None  # an apostrophe: I'd, Assistant 1's
        if unclosed.get(ch, -1) > i:
            return None
        line_end = text.find("\n", i)
        line_end = n if line_end < 0 else line_end
        m = _CLOSERS[ch].search(text, i + 2, line_end)
        if m is None:
            unclosed[ch] = line_end
        return m.end() if m else None
    return None


_DIGIT = re.compile(r"\d")
_MARKS = re.compile("[`{" + "".join(_DOUBLE_QUOTES) + "".join(_SINGLE_QUOTES) + "]")


# Runs of blanks, blank lines included: one space or one line break is all any rule reads, and
# the scale and label patterns take quadratic time over a long run (a degenerate reply).
_BLANK_RUN = re.compile(r"[ \t]*\n\s*|[ \t]{2,}|\t")


def _squeezed(text: str) -> str:
    return _BLANK_RUN.sub(lambda m: "\n" if "\n" in m.group(0) else " ", text)


def _own_voice(text: str) -> str:
    """The reply without quotations, its JSON as ``key: value`` lines (module docstring), its
    runs of blanks squeezed."""
    return _squeezed(_unquoted(text))


# A reply holds a verdict object or two, not hundreds: past this many "{" tried, a brace is text
# (each try may read to the end of the reply).
_JSON_TRIES = 16


def _unquoted(text: str) -> str:
    out, i, n = [], 0, len(text)
    unclosed: dict[str, int] = {}
    tries = 0
    while i < n:
        m = _MARKS.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        out.append(text[i:m.start()])
        i = m.start()
        if text.startswith(_FENCE, i):
            piece, i = _fence(text, i)
            out.append(piece)
            continue
        if text[i] == "{" and tries < _JSON_TRIES:
            tries += 1
            if (found := _json_object(text, i)) is not None:
                out.append(_rendered(found[0]))
                i = found[1]
                continue
        end = _quotation_end(text, i, unclosed)
        if end is not None:
            out.append(_blank(text[i:end]))
            i = end
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


# --- scale statements ---------------------------------------------------------------

_PLAIN = r"\d+(?:\.\d+)?"
_TO = r"(?:-|–|—|\bto\b)"
# Each alternative has one group: the top of the stated scale.
_SCALE = re.compile(
    # "on a scale of 0 to 5", "(on a scale from 1-10)", "scale of 0-5"
    rf"[\[(]?\s*(?:\bon\s+)?(?:\ban?\s+)?\bscale\s+(?:of|from)\s+{_PLAIN}\s*{_TO}\s*({_PLAIN})\s*[\])]?"
    # "on a 0-5 scale", "on a 0 to 5 point scale"
    rf"|[\[(]?\s*(?:\bon\s+)?(?:\ban?\s+)?{_PLAIN}\s*{_TO}\s*({_PLAIN})(?:[\s-]*point)?\s+scale\b\s*[\])]?"
    # a bracketed range or "out of N" between a label and its ":" — "Score (0-5): 4"
    rf"|[\[(]\s*{_PLAIN}\s*{_TO}\s*({_PLAIN})\s*[\])](?=\s*[:=])"
    rf"|[\[(]?\s*(?:\bout\s+of|/)\s*({_PLAIN})\s*[\])]?(?=\s*[:=])",
    re.IGNORECASE,
)


def _strip_scales(text: str, max_score: float) -> str | None:
    """The text without scale statements; None when one states a top other than max_score."""
    tops: list[float] = []

    def drop(m: re.Match[str]) -> str:
        tops.append(float(next(g for g in m.groups() if g is not None)))
        return " "

    stripped = _SCALE.sub(drop, text)
    if any(not math.isclose(top, max_score) for top in tops):
        return None
    return stripped


# --- rating -----------------------------------------------------------------------------

_RATING_LABEL = (
    r"(?:(?:overall|final|my|total)\s+)?"
    r"(?:(?:accuracy|helpfulness|relevance|quality)\s+)?"
    r"(?:scores?|ratings?|grade|accuracy|helpfulness|relevance|quality)"
)
_RATING_HEAD = rf"(?:{_RATING_LABEL}\s*(?:[:=\-–—]|\bis\b)?\s*)?"
# A unit written after a score: "4.5 stars", "4 points", "4 ⭐".
_UNIT = r"(?:\s*(?:stars?\b|points?\b|pts\b\.?|⭐+))?"
_RATING_CORE = rf"[\[(]?\s*{_NUM}{_DEN}?\s*[\])]?{_UNIT}"
# A comment in brackets after the score, without digits: "4.5 (very accurate)".
_REMARK = r"(?:\s*[(\[][^\d()\[\]\n]*[)\]])?"

# (a1) the whole considered line is a score: "4.5", "[4.5]", "Score: 4.5/5", "Rating: 4 out of 5",
# "4.5 stars", "4.5 (very accurate)", "4.5!".
_RATING_LINE = re.compile(
    rf"^\s*{_RATING_HEAD}{_RATING_CORE}{_REMARK}\s*[.!]*\s*$", re.IGNORECASE
)
# (a2) the considered line starts with a score followed by a separator and text:
# "4.5 - The response is correct.", "Score: 4 | accurate".  A "." is NOT a separator here
# so that a numbered list ("1. The response ...") is not read as a score, and the text
# must not start with a digit ("4,5" is ambiguous, "4 - 5" a range).
_RATING_LEAD = re.compile(
    rf"^\s*{_RATING_HEAD}{_RATING_CORE}{_REMARK}\s*[-–—:|,;]\s*[^\d\s]", re.IGNORECASE
)
# (a3) the considered line starts with a range or alternative: "4-5", "Rating: 4 – 5",
# "between 3 and 4", "3 to 4", "4 or 5", "4,5".  An invalid candidate.
_RANGE_SEP = r"(?:[-–—~,]|\bto\b|\bor\b|\band\b)"
_HEDGE = r"(?:maybe|perhaps|possibly|even)"
# What makes a number one end of a range or alternative: "-5", " to 5", " or a 5", ", 5",
# " (or 5)", " (maybe 5)", ", maybe 5".
_ALT_TAIL = (
    rf"\s*[(\[]?\s*(?:{_RANGE_SEP}\s*(?:{_HEDGE}\s+)?|{_HEDGE}\s+)"
    rf"(?:an?\s+)?[\[(]?\s*{_PLAIN}"
)
_RATING_RANGE_LINE = re.compile(
    rf"^\s*{_RATING_HEAD}(?:(?:between|from)\s+)?[\[(]?\s*{_NUM}{_DEN}?{_ALT_TAIL}",
    re.IGNORECASE,
)
# A line that starts with a label a verdict carries, then a number (a *verdict line* when the
# line is a score by rule (a)): "Score: 5", "Final rating: 4/5 - good", "Accuracy: 4".  Labels
# of other qualities alone ("Relevance: 5", "Quality: 3") are sub-scores, not verdicts.
_VERDICT_LABEL = re.compile(
    r"^\s*(?:(?:overall|final|my|total)\s+)?"
    r"(?:(?:(?:accuracy|helpfulness|relevance|quality)\s+)?(?:scores?|ratings?|grade)|accuracy|helpfulness)"
    r"\s*(?:[:=\-–—]|\bis\b)?\s*[\[(]?\s*\d",
    re.IGNORECASE,
)

# (b) patterns anywhere (within one line); group 1 is the number, group 2 the denominator.
_ADJ = r"(?:(?:solid|strong|firm|fair|high|low|perfect|generous|full|clear|well-deserved)\s+)?"
_RATING_LABELLED = (
    # "Score: 4", "The score is 3.5", "I would rate this response 4.5", "rated 4 out of 5",
    # '{"score": 4.5}', "Score = 4.5"
    re.compile(
        rf"\b(?:scores?|scored|ratings?|rate|rated|grade)\b[^\d\n]{{0,40}}?{_NUM}{_DEN}?",
        re.IGNORECASE,
    ),
    # "Accuracy: 4.5", "helpfulness = 4"
    re.compile(rf"\b(?:accuracy|helpfulness)\b\s*[:=]\s*{_NUM}{_DEN}?", re.IGNORECASE),
    # "I'd give it a 4.5", "I would give this response a solid 4", "I give it 3.5/5",
    # "awarded the answer a 4": the verb needs an object ("it", "this", "the answer") or an
    # article, so that "the response gives 3 examples" is not a score.
    re.compile(
        r"\b(?:give|gives|giving|gave|award|awards|awarding|awarded|assign|assigns|assigning"
        r"|assigned)\s+(?:(?:it|this|that|the|this\s+\w+|that\s+\w+|the\s+\w+)\s+(?:an?\s+)?"
        rf"|an?\s+){_ADJ}{_NUM}{_DEN}?",
        re.IGNORECASE,
    ),
    # "it deserves a 4", "merits a solid 4.5", "earns a 3", "a solid 4"
    re.compile(
        r"(?:\b(?:deserves?|merits?|earns?|warrants?|gets|got|receives?|received)\s+an?\s+"
        rf"{_ADJ}"
        r"|\ban?\s+(?:solid|strong|firm|fair|generous|perfect|well-deserved)\s+)"
        rf"{_NUM}{_DEN}?",
        re.IGNORECASE,
    ),
    # "I'd say 4", "I would say 4.5"
    re.compile(rf"\b(?:i['’]?d|i\s+would)\s+say\s+{_NUM}{_DEN}?", re.IGNORECASE),
    # "4 out of 5", "4.5/5" — unlabelled, so only a candidate over max_score (below)
    re.compile(rf"{_NUM}\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
)
_UNLABELLED_FRACTION = _RATING_LABELLED[-1]

# What may follow a score in a sentence.  Any other lower-case word makes the number a
# count ("3 steps", "grade 3 students", "3 out of 4 requirements"), not a score.
_SCORE_FOLLOWERS = frozenset(
    "star stars because since as for on in overall but and or to due given which with here is "
    "was would seems seem at rather instead considering based though although while so "
    "from by accuracy helpfulness".split()
)
_NEXT_WORD = re.compile(r"[ \t]+([a-z][a-z'’-]*)")
_RANGE_TAIL = re.compile(rf"{_ALT_TAIL}(?:{_DEN})?\s*[\])]?", re.IGNORECASE)
_GLUED = re.compile(r"-?[^\W\d_]")
_PERCENT = re.compile(r"\s*(?:%|percent\b|per\s+cent\b)", re.IGNORECASE)
# Negation in the clause before a number: "I would not give it a 5", "I wouldn't rate it 5".
_CLAUSE_BREAK = re.compile(r"[;!?\n,:]|(?<!\d)\.(?!\d)|\bbut\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|never|cannot)\b|n['’]t\b", re.IGNORECASE)

_SKIP = object()  # not a score at all: look for the next candidate
_INVALID = object()  # a score the judge wrote, but not a usable one: the reply is unparsed


def _in_sentence(text: str, m: re.Match[str], max_score: float) -> object:
    """Judge one sentence match: a value, _INVALID (range, off scale) or _SKIP (not a score)."""
    end = m.end()
    rest = text[end:]
    if _GLUED.match(rest) or _PERCENT.match(rest):  # "3rd", "3-part", "95%"
        return _SKIP
    clause_start = 0
    for brk in _CLAUSE_BREAK.finditer(text, 0, m.start(1)):
        clause_start = brk.end()
    if _NEGATION.search(text, clause_start, m.start(1)):
        return _SKIP
    tail = _RANGE_TAIL.match(rest)
    after = rest[tail.end():] if tail else rest
    word = _NEXT_WORD.match(after)
    if word and word.group(1).lower() not in _SCORE_FOLLOWERS:
        return _SKIP
    if tail:
        return _INVALID
    if m.re is _UNLABELLED_FRACTION and not math.isclose(float(m.group(2)), max_score):
        return _SKIP  # "1/2 cup", "3 out of 4 steps."
    value = _value(m.group(1), m.group(2), max_score)
    return _INVALID if value is None else value


def _sentence_matches(text: str) -> list[re.Match[str]]:
    """Every match of the (b) patterns, overlapping ones included, by number position."""
    found = []
    for pattern in _RATING_LABELLED:
        pos = 0
        while (m := pattern.search(text, pos)) is not None:
            found.append(m)
            pos = m.start() + 1
    return sorted(found, key=lambda m: (m.start(1), m.start()))


# --- pair -------------------------------------------------------------------------------

_PAIR_ITEM = rf"[\[(]?\s*{_NUM}{_DEN}?\s*[\])]?"
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
    rf"{_NUM}{_DEN}?",
    re.IGNORECASE,
)
# After a labelled score: a range or alternative ("Assistant 1: 7-8", "7 or 8") is invalid.
_PAIR_ALT_TAIL = re.compile(
    rf"\s*[(\[]?\s*(?:[-–—~]|\bto\b|\bor\b|{_HEDGE}\b)\s*(?:{_HEDGE}\s+)?(?:an?\s+)?{_PLAIN}",
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
    return _LEADING_MARKS.sub("", _unmark(line)).strip()


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
    the *considered line*, scale statements, ranges and validation):

    (a) **The considered line is essentially a score** — the first non-empty line holding a
        digit (digit-free preamble lines and lines ending in ``":"`` are skipped):

        1. the whole line is a score: a bare number with optional markdown/brackets, an
           optional label (``Score``, ``Rating``, ``Accuracy``, ``Helpfulness``,
           ``Accuracy score``, ``Overall rating``...) with ``:``, ``=``, a dash or ``is``, an
           optional ``/5`` or ``out of 5`` (also parenthesised), an optional unit (``stars``,
           ``points``), an optional bracketed remark without digits and trailing ``.``/``!``
           — ``"4.5"``, ``"**4.5**"``, ``"[4.5]"``, ``"Score:4.5"``, ``"Score = 4.5"``,
           ``"Rating: 4 out of 5"``, ``"Score: 3.5 (out of 5)"``, ``"4.5 stars"``,
           ``"4.5 (very accurate)"``, ``"4.5!"``;
        2. the line *starts* with such a score followed by ``- – — : | , ;`` and text not
           starting with a digit — ``"4.5 - The response is correct."`` (a ``"."`` is not
           accepted as separator, so a numbered list ``"1. The response..."`` is not a
           score);
        3. the line starts with a range or alternative (``"4-5"``, ``"Rating: 4 – 5"``,
           ``"between 3 and 4"``, ``"3 to 4"``, ``"4 or 5"``, ``"4,5"``): invalid.

    (b) **A score in a sentence**, within one line, when the considered line holds none; every
        one in the reply must give the same value (else unparsed):

        * a label then the number within 40 non-digit characters: ``score``, ``rating``,
          ``rate``, ``rated``, ``grade`` (``"The score is 3.5."``, ``"I would rate this a
          4"``, ``'{"score": 4.5}'``), ``Accuracy: X``, ``Helpfulness: X``;
        * a verb with an object or article: ``"I'd give it a 4.5"``, ``"I give this
          response a solid 4"``, ``"it deserves a 4"``, ``"a solid 4"``, ``"I'd say 4"``;
        * ``X out of N`` / ``X/N`` without a label, only when ``N`` is ``max_score``
          (``"a solid 4 out of 5"``; ``"3 out of 4 steps"`` and ``"1/2 cup"`` are not scores).

        A number there is **not a score** (the search goes on) when it is glued to letters
        (``"3rd"``), is a percentage, is followed by a lower-case word that does not follow
        scores (``"give 3 examples"``, ``"grade 3 students"``; ``stars``, ``because``,
        ``for``, ``overall``... do), or when its clause (since the last ``, ; : . ! ?`` or
        ``but``) holds a negation: ``"I would not give it a 5; I give it a 3"`` gives 3.
        A number that is one end of a range or alternative (``"I'd rate it 3-4"``,
        ``"Score: between 3 and 4"``, ``"a 4 or a 5"``) is an invalid candidate.

    (c) Otherwise ``None``.

    Quotations are never read and JSON is read by its keys; a verdict line that disagrees with
    the score read, or (b) sentences that disagree with each other, make the reply unparsed
    (module docstring, "Only the judge's own voice is read").

    The chosen candidate is ``None`` when its value is outside ``[0, max_score]``
    (``"7"``, ``"Score: 45"``, ``"10/10"``) or its denominator is not ``max_score``
    (``"8/10"``).  Unlike the paper's reference code, ``"Score:4.5"`` gives ``4.5``, not ``4``.
    """
    if not text:
        return None
    text = _strip_scales(_unmark(_own_voice(text)), max_score)
    if text is None:
        return None
    line = _considered_line(text)
    verdict = _line_verdict(line, max_score) if line is not None else _SKIP
    if verdict is _SKIP:
        found = {v for m in _sentence_matches(text) if (v := _in_sentence(text, m, max_score)) is not _SKIP}
        if len(found) != 1:
            return None  # no score sentence, or sentences that disagree
        verdict = found.pop()
    if verdict is _INVALID:
        return None
    for raw in text.splitlines():
        other = _clean_line(raw) if _DIGIT.search(raw) else ""
        if _VERDICT_LABEL.match(other) and _line_verdict(other, max_score) not in (_SKIP, verdict):
            return None  # a verdict line that says otherwise
    return verdict  # type: ignore[return-value]


def _line_verdict(line: str, max_score: float) -> object:
    """Rule (a) on one cleaned line: its score, _INVALID (a range, off scale) or _SKIP."""
    m = _RATING_LINE.match(line) or _RATING_LEAD.match(line)
    if m:
        value = _value(m.group(1), m.group(2), max_score)
        return _INVALID if value is None else value
    if _RATING_RANGE_LINE.match(line):
        return _INVALID
    return _SKIP


def parse_pair(text: str | None, max_score: float = 10.0) -> tuple[float, float] | None:
    """The two scores (Assistant 1, Assistant 2) of a pairwise judgement, or ``None``.

    Precedence (the first rule that finds a candidate decides):

    (a) **The considered line is essentially a pair** — the first non-empty line holding a
        digit (digit-free preamble such as ``"Here are my scores:"`` and lines ending in
        ``":"`` are skipped), with markdown removed, is exactly two numbers, each optionally
        bracketed and optionally ``/10``, separated by whitespace, a comma (the paper reads
        commas as spaces), ``;``, ``&``, ``and`` or ``vs``, with an optional ``Scores:``
        label — ``"8 7"``, ``"8,7"``, ``"8\\t7"``, ``"**8** **7**"``, ``"[8, 7]"``,
        ``"(8, 7)"``, ``"8/10 and 7/10"``, ``"8 out of 10 and 7 out of 10"``,
        ``"Scores: 8 7"``, ``"Scores (1-10): 8 7"``.  A line with three numbers
        (``"8 7 6"``) is not a pair.

    (b) **Labelled per-assistant scores anywhere**: the first acceptable score after
        ``Assistant 1`` and the first after ``Assistant 2``; a number after the label counts
        only when the text between is bare punctuation (``"Assistant 1: 8"``,
        ``"Assistant 1's score: 8"``), says a score follows (``"Assistant 1 receives a score
        of 8"``), or the label is ``Score(s) for/of Assistant 1``.  So ``"Assistant 1 gave 3
        reasons"`` is not a score.  A remark after the score is fine (``"Assistant 1: 8
        (detailed)"``); a labelled score that is one end of a range or alternative
        (``"Assistant 1: 7-8"``, ``"7 to 8"``, ``"7 or 8"``, ``"7 (maybe 8)"``) makes the
        reply unparsed.  Both assistants must be found.  Failing that, the joint form
        ``"Assistants 1 and 2 receive scores of 8 and 7"``.

    (c) Otherwise ``None``.

    Quotations are never read (``'Assistant 2 writes "Assistant 1: 1"'``) and JSON is read by
    its keys, as for ratings; a first-line pair is not checked against later labelled scores.

    The pair is ``None`` when either value is outside ``[0, max_score]`` (``"80 70"``), is
    written over a denominator other than ``max_score``, or the reply states a scale whose
    top is not ``max_score`` (module docstring).  Explanation lines are never read
    by rule (a); numbers in them are used by rule (b) only when explicitly labelled.
    """
    if not text:
        return None
    text = _strip_scales(_unmark(_own_voice(text)), max_score)
    if text is None:
        return None
    line = _considered_line(text)
    if line is not None:
        m = _PAIR_LINE.match(line)
        if m:
            return _pair_value(m.group(1), m.group(2), m.group(3), m.group(4), max_score)

    found: dict[str, tuple[str, str | None]] = {}
    for m in _PAIR_LABELLED.finditer(text):
        k = m.group("k")
        if k in found:
            continue
        gap = m.group("gap")
        if "assistant" in gap.lower():
            continue
        if m.group("pre") or _PAIR_GAP_PLAIN.match(gap) or _PAIR_GAP_SCORE.search(gap):
            if _PAIR_ALT_TAIL.match(text, m.end()):
                return None
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
