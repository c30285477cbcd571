"""The contract between the engine and every judge backend, and the ways a request can fail.

The engine (engine.run_judgements) relies on exactly what ``Judge`` names, nothing else: a
backend (openai, verifier, a local transformers model, the Batch API) implements this Protocol
and gets the cache, the budget, the retries' accounting, the ledger and the progress bar.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class JudgeRequest:
    """One question to a judge.

    ``messages`` is what an LLM judge sees; ``context`` carries the same item as structured
    fields so a programmatic judge (the verifier) can answer without parsing the prompt back.
    ``key`` identifies what is paid for (see cache.judgement_key; it holds ``response_format``).
    """

    key: str
    messages: list[dict]
    context: dict = field(default_factory=dict)
    # The chat-completions response_format to send (judging/structured.py), or None: free text.
    response_format: dict | None = None


@dataclass(frozen=True)
class JudgeReply:
    """What a judge answered. ``usage_reported`` is False when the server sent no token usage:
    the engine then charges the request's worst case (a server that omits usage must not be
    free). ``logprobs`` holds the per-token top log-probabilities where the backend asked for
    them (score_mode: logprobs); they are paid for, so they are cached with the text."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    usage_reported: bool = True
    logprobs: list | None = None


class FailureKind(str, enum.Enum):
    """Why a request has no reply. The value is what ledgers and scores.jsonl show."""

    BUDGET = "budget"                # not sent: its worst case would pass the budget
    RATE_LIMITED = "rate_limited"    # 429 until retries ran out
    SERVER_ERROR = "server_error"    # 5xx / 408 / 409 until retries ran out
    TIMEOUT = "timeout"
    CONNECTION = "connection"        # refused, reset, DNS, TLS
    BAD_REQUEST = "bad_request"      # 400/413/422: the server refuses this one request
    MALFORMED_REPLY = "malformed_reply"  # a 200 that is not a usable chat completion
    STOPPED = "stopped"              # never sent or abandoned: the run stopped (fatal error, lost write)

    @property
    def retried_next_run(self) -> bool:
        return True  # nothing that failed is cached, so every kind is asked again on a rerun


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


class JudgeError(Exception):
    """Base class; messages never contain a secret (see openai_judge.redact)."""

    kind: FailureKind = FailureKind.SERVER_ERROR


class JudgeTransientError(JudgeError):
    """Retries ran out on 429/5xx/timeouts/dropped connections/malformed replies: leave the
    item unscored, retry next run."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.SERVER_ERROR):
        super().__init__(message)
        self.kind = kind


class JudgeRequestError(JudgeError):
    """The server refused this one request (400, content filter): unscored, the rest goes on."""

    kind = FailureKind.BAD_REQUEST


class JudgeFatalError(JudgeError):
    """Nothing will work (missing or wrong key, unknown model, no quota, unreachable server):
    stop the whole run."""

    kind = FailureKind.STOPPED


async def await_startup(name: str, startup, what: str) -> None:
    """Wait for a local judge's one start-up (a model load, an engine), begun by whichever request
    came first: any error but a JudgeFatalError stops the run, saying what could not start."""
    try:
        await startup
    except JudgeFatalError:
        raise
    except Exception as exc:  # noqa: BLE001 - a judge that cannot start stops the run, with why
        raise JudgeFatalError(f"judge {name!r}: {what}: {type(exc).__name__}: {exc}") from None


@runtime_checkable
class Judge(Protocol):
    """What the engine relies on. Counters are the backend's own (it knows what it sent)."""

    name: str
    model: str
    params: dict          # sampling parameters that define a judgement (part of its cache key)
    cacheable: bool       # worth keeping (paid for or slow); the free verifier is not
    concurrency: int      # requests the engine keeps in flight
    attempts: int         # requests actually sent, retries included
    failures: dict        # attempt failures by label ("http_500", "timeout", ...), for the ledger

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        """One judgement; raises JudgeTransientError / JudgeRequestError / JudgeFatalError."""

    async def aclose(self) -> None:
        """Release connections (called once, at the end of a run)."""

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of a reply with this usage (0 for a free judge)."""
