"""Structured outputs: an OpenAI judge asked to answer in a JSON schema (``structured_output: true``).

A provider that supports ``response_format: {"type": "json_schema", ...}`` (OpenAI, vLLM and
most OpenAI-compatible servers) then replies with exactly one JSON object, so a score is never
read from prose. The schemas carry the keys the parser already reads a JSON reply by
(judging/parsing.py: "JSON the judge wrote is read by its keys"):

* a rating: ``{"score": <0-5>, "explanation": "..."}``, the score first, as the paper's prompt
  asks for it on the first line;
* a pairwise judgement: ``{"assistant_1": <1-10>, "assistant_2": <1-10>, "explanation": "..."}``.

The prompts stay the paper's, byte for byte. The response format is part of what a judgement is
paid for: it is in the judgement's cache key (a structured judge never reuses a free-text reply,
nor the reverse), and ``structured_output`` is in the judge's identity only when true, so the
results of every existing judge keep their keys and params.

Not with ``score_mode: logprobs`` (core.config.structured_output_conflict): the first token of a
JSON reply is ``{``, not the score's digit the expected score is read from.
"""

from __future__ import annotations

TASKS = ("rating", "pairwise")

# No minimum/maximum on the scores: not every server's constrained decoding supports them, and
# the parser checks each score's range as it does for a free-text reply.

_RATING = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "explanation": {"type": "string"},
    },
    "required": ["score", "explanation"],
    "additionalProperties": False,
}
_PAIRWISE = {
    "type": "object",
    "properties": {
        "assistant_1": {"type": "number"},
        "assistant_2": {"type": "number"},
        "explanation": {"type": "string"},
    },
    "required": ["assistant_1", "assistant_2", "explanation"],
    "additionalProperties": False,
}
SCHEMAS = {"rating": _RATING, "pairwise": _PAIRWISE}


def response_format(task: str) -> dict:
    """The chat-completions ``response_format`` for ``task`` ("rating" or "pairwise")."""
    if task not in SCHEMAS:
        raise ValueError(f"no structured output for {task!r} (one of {TASKS})")
    # strict: the provider constrains decoding to the schema (OpenAI's structured outputs), so a
    # reply that does not fit it is the provider's fault, not a parse to guess at.
    return {"type": "json_schema", "json_schema": {"name": f"alpagasus_{task}", "strict": True, "schema": SCHEMAS[task]}}


def request_params(judge, task: str) -> tuple[dict, dict | None]:
    """(what a judgement's cache key holds, the response_format to send) for one request of
    ``task`` to ``judge``: the judge's sampling parameters alone unless it asks for structured
    output, which then joins them."""
    if not getattr(judge, "structured_output", False):
        return judge.params, None
    fmt = response_format(task)
    return {**judge.params, "response_format": fmt}, fmt
