"""Any OpenAI-compatible chat endpoint (OpenAI, Azure, vLLM, Ollama) as a judge.

Retries are ours, not the SDK's (``max_retries=0``): we honour Retry-After, pause every
worker on a 429, count each attempt, and know exactly when a record is given up on.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time

import openai

from ..cost import message_tokens
from ..identity import judge_sampling
from ..ratelimit import RateLimiter
from .base import JudgeFatalError, JudgeReply, JudgeRequest, JudgeRequestError, JudgeTransientError

log = logging.getLogger(__name__)

DEFAULTS = {
    "base_url": None, "api_key_env": "OPENAI_API_KEY", "temperature": 0.0, "top_p": 1.0,
    "max_tokens": 256, "concurrency": 16, "requests_per_minute": None, "tokens_per_minute": None,
    "timeout_s": 60.0, "max_retries": 8, "usd_per_1m_input_tokens": 0.0, "usd_per_1m_output_tokens": 0.0,
}
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0


def redact(text: str, secret: str | None) -> str:
    """Remove the key from anything we might print; servers sometimes echo it in errors."""
    if secret and secret in text:
        text = text.replace(secret, "***")
    return text


def retry_after_seconds(headers) -> float | None:
    """Seconds to wait from retry-after-ms / Retry-After (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


class OpenAIJudge:
    cacheable = True

    def __init__(self, name: str, cfg: dict, *, backoff_base_s: float | None = None):
        self.name = name
        self.cfg = {**DEFAULTS, **cfg}
        self.model = self.cfg["model"]
        self.params = judge_sampling(self.cfg)
        self.concurrency = self.cfg["concurrency"]
        self.backoff_base_s = BACKOFF_BASE_S if backoff_base_s is None else backoff_base_s
        # Read at construction, checked at first use: estimating cost needs no key.
        self._key = os.environ.get(self.cfg["api_key_env"])
        self.limiter = RateLimiter(self.cfg["requests_per_minute"], self.cfg["tokens_per_minute"])
        self.attempts = 0  # every HTTP request sent, failed ones included
        self.failures: dict[str, int] = {}
        self._client = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        # Created lazily, inside the running event loop that will use it.
        if self._client is None:
            if not self._key:
                raise JudgeFatalError(
                    f"judge {self.name!r}: the environment variable {self.cfg['api_key_env']} is not "
                    f"set (the API key is read from the environment only, never from config)"
                )
            self._client = openai.AsyncOpenAI(
                api_key=self._key, base_url=self.cfg["base_url"], max_retries=0,
                timeout=self.cfg["timeout_s"],
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _count(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def _backoff(self, attempt: int) -> float:
        # Full jitter: workers that failed together do not retry together.
        return random.uniform(0, min(BACKOFF_MAX_S, self.backoff_base_s * 2 ** attempt))

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        tokens = message_tokens(request.messages) + self.params["max_tokens"]
        last = "no attempt"
        for attempt in range(self.cfg["max_retries"] + 1):
            await self.limiter.acquire(tokens)
            self.attempts += 1
            delay = self._backoff(attempt)
            try:
                resp = await self.client.chat.completions.create(
                    model=self.model, messages=request.messages, **self.params
                )
            except openai.RateLimitError as exc:
                if getattr(exc, "code", None) == "insufficient_quota":
                    raise JudgeFatalError(f"judge {self.name!r}: the account has no quota left (429 insufficient_quota)") from None
                self._count("429")
                wait = retry_after_seconds(exc.response.headers)
                delay = wait if wait is not None else delay
                self.limiter.pause(delay)
                last = f"429 rate limited{f' (Retry-After {wait:g}s)' if wait is not None else ''}"
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise JudgeFatalError(
                    f"judge {self.name!r} (model {self.model}): {exc.status_code} "
                    f"{redact(str(exc.message), self._key)}"
                ) from None
            except openai.APITimeoutError:
                self._count("timeout")
                last = f"timed out after {self.cfg['timeout_s']}s"
            except openai.APIConnectionError as exc:
                self._count("connection")
                last = f"connection error: {redact(str(exc), self._key)}"
            except openai.APIStatusError as exc:
                if exc.status_code in (408, 409) or exc.status_code >= 500:
                    self._count(str(exc.status_code))
                    wait = retry_after_seconds(exc.response.headers)
                    delay = wait if wait is not None else delay
                    last = f"HTTP {exc.status_code}"
                else:
                    raise JudgeRequestError(
                        f"HTTP {exc.status_code}: {redact(str(exc.message), self._key)}"
                    ) from None
            else:
                text = (resp.choices[0].message.content if resp.choices else None) or ""
                usage = resp.usage
                return JudgeReply(
                    text=text,
                    prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                    completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                    model=resp.model or self.model,
                )
            if attempt < self.cfg["max_retries"]:
                await asyncio.sleep(delay)
        raise JudgeTransientError(f"gave up after {self.cfg['max_retries'] + 1} attempts; last: {last}")
