"""What the fake OpenAI server answers, shared by its chat endpoint (fake_openai) and its Batch API
(fake_batches): replies, billed usage and token probabilities are pure functions of the request,
so a test can compute what it must end up with without calling the server; faults are drawn
from a seeded hash of the request and its attempt number.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from alpagasus.judging.prompts import PAIRWISE_SYSTEM, RATING_SYSTEM

# ---------------------------------------------------------------------------------------------
# Deterministic judge: replies are a pure function of the request content
# ---------------------------------------------------------------------------------------------

# Skewed towards 4-4.5 like real GPT ratings, so a 4.5 threshold selects a minority of records.
RATING_SCORES: tuple[float, ...] = (2.0, 3.0, 3.5, 4.0, 4.0, 4.0, 4.5, 4.5, 5.0)

# Explanations hold no digit, so any sensible score parser can only pick up the score itself.
_EXPLANATIONS: tuple[str, ...] = (
    "The response addresses the instruction and is mostly correct, though some details are thin.",
    "The answer is relevant and clear; a few points could be explained more precisely.",
    "The response follows the instruction but misses part of what the input asks for.",
    "Overall the answer is accurate and helpful, with minor omissions.",
)
_PAIR_EXPLANATIONS: tuple[str, ...] = (
    "Assistant one gives a more complete answer, while assistant two is shorter but relevant.",
    "Both assistants answer the question; they differ in detail and precision.",
    "The second assistant is more precise, the first one is more verbose.",
)
# A paid 200 reply with no number in it: the judge answered but gave no usable score.
NO_SCORE_REPLY = "I am unable to evaluate this response."
# Reply to any prompt that is neither a rating nor a pairwise prompt.
OTHER_REPLY = "This is a canned reply from the fake OpenAI server."

_RATING_SHAPES: tuple[str, ...] = (
    "{s}\n{e}",
    "Score: {s}\n{e}",
    "Score:{s}\n{e}",
    "{s}/5\n{e}",
    "**{s}**\n{e}",
    "Rating: {s} out of 5\n{e}",
)
_PAIR_SHAPES: tuple[str, ...] = (
    "{a} {b}\n{e}",
    "{a}, {b}\n{e}",
    "Assistant 1: {a}\nAssistant 2: {b}\n{e}",
)

_PAIRWISE_RE = re.compile(
    r"\[Question\]\n(?P<q>.*?)\n\n"
    r"\[The Start of Assistant 1's Answer\]\n(?P<a1>.*?)\n\n\[The End of Assistant 1's Answer\]\n\n"
    r"\[The Start of Assistant 2's Answer\]\n(?P<a2>.*?)\n\n\[The End of Assistant 2's Answer\]",
    re.DOTALL,
)


def _text(content: Any) -> str:
    """Message content as plain text (the SDK may send a list of typed parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _system_text(messages: list[dict]) -> str | None:
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "system":
            return _text(m.get("content"))
    return None


def _user_text(messages: list[dict]) -> str:
    """The last user message: that is what the judge is asked about."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def user_text(messages: list[dict]) -> str:
    """What the judge is asked about (the last user message), as the fault plan matches it."""
    return _user_text(messages)


def _u64(digest: bytes, i: int) -> int:
    return int.from_bytes(digest[8 * i : 8 * i + 8], "big")


def _fmt(x: float) -> str:
    return f"{x:g}"


def expected_rating(messages: list[dict]) -> float:
    """The score the fake judge gives a rating prompt (a pure function of the user message)."""
    d = hashlib.sha256(_user_text(messages).encode("utf-8")).digest()
    return RATING_SCORES[_u64(d, 0) % len(RATING_SCORES)]


def rating_reply(messages: list[dict]) -> str:
    """The full reply text to a rating prompt; the shape varies so parsers meet each form."""
    d = hashlib.sha256(_user_text(messages).encode("utf-8")).digest()
    shape = _RATING_SHAPES[_u64(d, 1) % len(_RATING_SHAPES)]
    expl = _EXPLANATIONS[_u64(d, 2) % len(_EXPLANATIONS)]
    return shape.format(s=_fmt(expected_rating(messages)), e=expl)


_TOKEN_RE = re.compile(r"\d|\.|\s*[A-Za-z']+|\s+|[^\w\s]")


def reply_logprobs(messages: list[dict], text: str, top_logprobs: int = 20) -> list[dict]:
    """``choices[0].logprobs.content`` for ``text``: one entry per token (digits and "." are
    tokens of their own, as in GPT tokenizers, so "4.5" is three), each with alternatives whose
    probabilities are a pure function of the request. The first digit of a rating puts most of its
    mass on the written digit, the rest on its neighbours and on a word ("The"), so the expected
    score differs from the written one record by record."""
    d = hashlib.sha256(("logprobs\x1f" + _user_text(messages)).encode("utf-8")).digest()
    u = [_u64(d, i) / 2**64 for i in range(4)]
    tokens = _TOKEN_RE.findall(text)
    first_digit = next((i for i, t in enumerate(tokens) if t.isdigit()), None)
    content = []
    for i, tok in enumerate(tokens):
        if i == first_digit:
            v = int(tok)
            main, down, up = 0.5 + 0.4 * u[0], 0.0, 0.0
            rest = 1.0 - main
            down = rest * u[1] if v > 0 else 0.0
            up = rest * (1 - u[1]) * 0.8 if v < 9 else 0.0
            alts = [(tok, main), (str(v - 1), down), (str(v + 1), up), ("The", 1.0 - main - down - up)]
        elif first_digit is not None and i == first_digit + 1 and tok == ".":
            alts = [(".", 0.7 + 0.25 * u[2]), ("\n", 0.3 - 0.25 * u[2])]
        elif first_digit is not None and i == first_digit + 2 and tok.isdigit() and tokens[i - 1] == ".":
            other = "0" if tok != "0" else "5"
            alts = [(tok, 0.6 + 0.35 * u[3]), (other, 0.4 - 0.35 * u[3])]
        else:
            alts = [(tok, 0.9), (" the" if tok != " the" else " a", 0.1)]
        alts = [(t, p) for t, p in alts if p > 0][: max(1, top_logprobs)]
        content.append({
            "token": tok, "logprob": math.log(alts[0][1]), "bytes": list(tok.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": list(t.encode("utf-8"))} for t, p in alts],
        })
    return content


def answer_score(question: str, answer: str) -> int:
    """Score (1..10) of one answer; independent of its position, so swaps are comparable."""
    d = hashlib.sha256(json.dumps([question, answer], ensure_ascii=False).encode("utf-8")).digest()
    return 1 + _u64(d, 0) % 10


def parse_pairwise_user(content: str) -> tuple[str, str, str]:
    """(question, answer_1, answer_2) out of a ``PAIRWISE_USER`` message; ValueError otherwise."""
    m = _PAIRWISE_RE.search(content)
    if m is None:
        raise ValueError("not a PAIRWISE_USER message")
    return m.group("q"), m.group("a1"), m.group("a2")


def _check_length_bias(length_bias: float | None) -> None:
    if length_bias is not None and not 0.0 <= length_bias <= 1.0:
        raise ValueError(f"length_bias must be a probability in [0, 1] or None, got {length_bias!r}")


def expected_pair(messages: list[dict], position_bias: float = 0.0,
                  length_bias: float | None = None) -> tuple[float, float]:
    """Scores (assistant 1, assistant 2) the fake judge gives a pairwise prompt.

    ``position_bias`` is added to assistant 1 to simulate a judge that favours the answer shown
    first. The biased score is clamped to the protocol's 1..10 scale (a real judge never says
    11), so with a bias the shift is exact only where it does not cross the scale's ends.

    ``length_bias`` (None: off) simulates a judge that prefers longer answers: where the two
    answers are of equal quality (equal :func:`answer_score`) and unequal length, it prefers
    the longer one with probability ``length_bias`` (else the shorter), drawn from a hash of
    the prompt, so each order of an item draws on its own and a rerun draws the same. The
    preferred answer gets one point more (one point less for the other at the top of the
    scale). Answers of unequal quality are scored as without it. Applied before the position bias.
    """
    _check_length_bias(length_bias)
    text = _user_text(messages)
    q, a1, a2 = parse_pairwise_user(text)
    s1, s2 = float(answer_score(q, a1)), float(answer_score(q, a2))
    if length_bias is not None and s1 == s2 and len(a1) != len(a2):
        u = _u64(hashlib.sha256(("length\x1f" + text).encode("utf-8")).digest(), 0) / 2**64
        first_longer = len(a1) > len(a2)
        first_preferred = first_longer if u < length_bias else not first_longer
        up = 1.0 if s1 < 10 else 0.0
        if first_preferred:
            s1, s2 = s1 + up, s2 - (1.0 - up)
        else:
            s1, s2 = s1 - (1.0 - up), s2 + up
    s1 = min(10.0, max(1.0, s1 + position_bias))
    return float(s1), float(s2)


def pairwise_reply(messages: list[dict], position_bias: float = 0.0, length_bias: float | None = None) -> str:
    """The full reply text to a pairwise prompt, in one of several score-line shapes."""
    s1, s2 = expected_pair(messages, position_bias, length_bias)
    d = hashlib.sha256(_user_text(messages).encode("utf-8")).digest()
    shape = _PAIR_SHAPES[_u64(d, 1) % len(_PAIR_SHAPES)]
    expl = _PAIR_EXPLANATIONS[_u64(d, 2) % len(_PAIR_EXPLANATIONS)]
    return shape.format(a=_fmt(s1), b=_fmt(s2), e=expl)


def format_name(response_format: Any) -> str | None:
    """How the server's log names a request's response_format: its schema's name, else its type."""
    if not isinstance(response_format, dict):
        return response_format
    return (response_format.get("json_schema") or {}).get("name") or response_format.get("type")


def response_schema(response_format: Any) -> dict | None:
    """The JSON schema a request's ``response_format`` asks for (None: free text), checked as
    OpenAI checks it; ValueError with the server's message for one it would answer 400."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise ValueError("response_format.type must be one of 'text', 'json_object', 'json_schema'")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object", "properties": {}}
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("schema"), dict):
        raise ValueError("response_format.json_schema needs a 'name' and a 'schema'")
    schema = spec["schema"]
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, dict):
        raise ValueError("response_format.json_schema.schema must be an object schema with properties")
    if spec.get("strict") and (schema.get("additionalProperties") is not False
                               or sorted(schema.get("required") or []) != sorted(props)):
        raise ValueError("Invalid schema for response_format: in strict mode, 'additionalProperties' must be "
                         "false and every property must be required")
    return schema


def structured_reply(messages: list[dict], schema: dict, position_bias: float = 0.0,
                     length_bias: float | None = None) -> str:
    """The fake judge's answer as one JSON object of ``schema``: its number properties named
    ``score`` (a rating) or ``assistant_1``/``assistant_2`` (a pair) hold the same scores as the
    free-text reply, any other number 0, every string the explanation."""
    d = hashlib.sha256(_user_text(messages).encode("utf-8")).digest()
    kind = classify(messages)
    numbers: dict[str, float] = {}
    explanation = OTHER_REPLY
    if kind == "rating":
        numbers = {"score": expected_rating(messages)}
        explanation = _EXPLANATIONS[_u64(d, 2) % len(_EXPLANATIONS)]
    elif kind == "pairwise":
        try:
            s1, s2 = expected_pair(messages, position_bias, length_bias)
            numbers = {"assistant_1": s1, "assistant_2": s2}
            explanation = _PAIR_EXPLANATIONS[_u64(d, 2) % len(_PAIR_EXPLANATIONS)]
        except ValueError:
            pass
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind_of = prop.get("type") if isinstance(prop, dict) else None
        if kind_of in ("number", "integer"):
            out[name] = numbers.get(name, 0)
        else:
            out[name] = explanation
    if not out:  # json_object: no schema to follow
        out = {**numbers, "explanation": explanation}
    return json.dumps(out)


def reply_text(messages: list[dict], position_bias: float = 0.0, length_bias: float | None = None,
               response_format: Any = None) -> str:
    """The fake judge's deterministic answer to a chat request (online and in a batch alike): a
    JSON object where ``response_format`` asks for one (ValueError for one OpenAI refuses)."""
    _check_length_bias(length_bias)  # before the try: a wrong setting is not a non-pairwise prompt
    schema = response_schema(response_format)
    if schema is not None:
        return structured_reply(messages, schema, position_bias, length_bias)
    kind = classify(messages)
    if kind == "rating":
        return rating_reply(messages)
    if kind == "pairwise":
        try:
            return pairwise_reply(messages, position_bias, length_bias)
        except ValueError:
            return OTHER_REPLY
    return OTHER_REPLY


def reply_usage(messages: list[dict], text: str, chars_per_token: float = 4.0) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) the fake server bills for a reply: ``chars_per_token``
    characters a token (4: English on OpenAI's tokenizers; 1: a token per character)."""
    prompt_len = sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict))
    return tokens(prompt_len, chars_per_token), tokens(len(text), chars_per_token)


def classify(messages: list[dict]) -> str:
    system = _system_text(messages)
    if system == RATING_SYSTEM:
        return "rating"
    if system == PAIRWISE_SYSTEM:
        return "pairwise"
    return "other"


def request_key(model: Any, messages: Any) -> str:
    """Identity of "what is being paid for": the same prompt to the same model twice is a waste."""
    canon = json.dumps(
        {"model": model, "messages": messages}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def tokens(text_len: int, chars_per_token: float = 4.0) -> int:
    return math.ceil(text_len / chars_per_token)


def draw(seed: int, key: str, attempt: int) -> float:
    d = hashlib.sha256(f"{seed}:{key}:{attempt}".encode()).digest()
    return _u64(d, 0) / 2.0**64


def error_body(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
