"""What every judge backend takes and gives, and the three ways a request can fail."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class JudgeRequest:
    """One question to a judge.

    ``messages`` is what an LLM judge sees; ``context`` carries the same item as structured
    fields so a programmatic judge (the verifier) can answer without parsing the prompt back.
    ``key`` identifies what is paid for (see cache.judgement_key).
    """

    key: str
    messages: list[dict]
    context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""


class JudgeError(Exception):
    """Base class; messages never contain a secret (see openai_judge.redact)."""


class JudgeTransientError(JudgeError):
    """Retries ran out on 429/5xx/timeouts/dropped connections: leave the item unscored, retry next run."""


class JudgeRequestError(JudgeError):
    """The server refused this one request (400, content filter): unscored, the rest goes on."""


class JudgeFatalError(JudgeError):
    """Nothing will work (missing or wrong key, unknown model, no quota): stop the whole run."""
