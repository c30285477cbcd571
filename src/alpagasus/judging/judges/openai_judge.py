"""Any OpenAI-compatible chat endpoint (OpenAI, Azure, vLLM, Ollama) as a judge.

Retries are ours, not the SDK's (``max_retries=0``): we honour Retry-After, pause every
worker on a 429 that speaks for the account (ratelimit.RateLimiter), count each attempt by its
cause, and know exactly when a record is given up on.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import socket
import ssl
import time

import openai

from alpagasus.judging import cost
from alpagasus.judging.expected_score import trim_to_score
from alpagasus.core.config import filled, structured_output_conflict
from alpagasus.core.identity import judge_sampling
from alpagasus.judging.ratelimit import RateLimiter
from alpagasus.judging.judges.base import (FailureKind, JudgeFatalError, JudgeReply, JudgeRequest, JudgeRequestError, JudgeTransientError)

log = logging.getLogger(__name__)

SCORE_MODES = ("text", "logprobs")
# A wait the server asks for beyond this is logged: a silent pause looks like a hang.
VISIBLE_WAIT_S = 5.0
# Before any request has succeeded, a connection error is most likely a wrong base_url, a
# closed port or a DNS/TLS problem: retry a couple of times (a blip), then stop the run.
CONNECT_RETRIES_BEFORE_FIRST_SUCCESS = 2
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
# What each cause of a failed connection is called in the ledger's failed_requests_by_kind and
# in the line that stops a run. Every one but a timeout stops the run before any success
# (CONNECT_RETRIES_BEFORE_FIRST_SUCCESS): a TLS error or a wrong scheme is a wrong base_url.
CONNECTION_CAUSES = {
    "connection_tls": "TLS/SSL error (an https:// URL on a plain-HTTP server, or a certificate that does not verify)",
    "connection_refused": "connection refused (nothing listens there)",
    "connection_dns": "DNS lookup failed (no such host)",
    "connection_reset": "connection reset by the server",
    "connection_closed": "the server closed the connection without a reply (an http:// URL on a TLS server?)",
    "connection_bad_url": "not an http(s) URL",
    "connection": "connection error",
}
# Quota exhausted: a 402 (Payment Required) or the "insufficient_quota" code, whatever the
# status: nothing will work until someone pays, so the run stops at the first one.
QUOTA_STATUS = 402
QUOTA_CODE = "insufficient_quota"


def _http_client():
    """The SDK's own aiohttp transport (openai[aiohttp]) where aiohttp is installed: at hundreds
    of requests in flight the default httpx pool costs more CPU than the requests (1.9 against
    1.1 ms a request here), and the client's CPU is what caps a 30,000 rpm rating on 2 cores."""
    try:
        return openai.DefaultAioHttpClient()
    except Exception:  # noqa: BLE001 - no aiohttp: the SDK's default transport
        return None


def make_client(name: str, cfg: dict, key: str | None, http_client=None) -> openai.AsyncOpenAI:
    """The SDK client of a judge; its own retries off (ours honour Retry-After and count)."""
    if not key:
        raise JudgeFatalError(
            f"judge {name!r}: the environment variable {cfg['api_key_env']} is not "
            f"set (the API key is read from the environment only, never from config)"
        )
    return openai.AsyncOpenAI(api_key=key, base_url=cfg["base_url"], max_retries=0, timeout=cfg["timeout_s"],
                              http_client=http_client)


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


class SDKJudge:
    """What the online and the batch judge share: the price, the server, the SDK client, the
    request body."""

    http_client = None  # a factory of the SDK's transport; None: the SDK's default

    @property
    def structured_output(self) -> bool:
        """Whether requests ask for a JSON schema's object (judging/structured.py)."""
        return bool(self.cfg["structured_output"])

    def check_structured(self) -> None:
        if (why := structured_output_conflict(self.name, self.cfg)) is not None:
            raise JudgeFatalError(why)

    def body(self, request: JudgeRequest) -> dict:
        """The chat-completions request body (the online request, a batch's request line)."""
        fmt = {"response_format": request.response_format} if request.response_format else {}
        return {"model": self.model, "messages": request.messages, **self.params, **fmt}

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost.usd(self.cfg, prompt_tokens, completion_tokens)

    def redact(self, text: str) -> str:
        """``text`` without the API key: a server may echo it in an error or in a reply's text,
        and a reply's text is written to the cache and to scores.jsonl."""
        return redact(text, self._key)

    @property
    def where(self) -> str:
        return self.cfg["base_url"] or "https://api.openai.com/v1"

    @property
    def client(self) -> openai.AsyncOpenAI:
        """Created lazily, inside the running event loop that will use it."""
        if self._client is None:
            self._client = make_client(self.name, self.cfg, self._key,
                                       http_client=self.http_client() if self.http_client else None)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class OpenAIJudge(SDKJudge):
    cacheable = True
    http_client = staticmethod(_http_client)

    def __init__(self, name: str, cfg: dict, *, backoff_base_s: float | None = None):
        self.name = name
        self.cfg = filled("openai_judge", cfg)  # the defaults of config/schema.yaml
        self.model = self.cfg["model"]
        self.params = judge_sampling(self.cfg)
        if self.cfg["score_mode"] not in SCORE_MODES:
            raise JudgeFatalError(f"config judges.{name}.score_mode: {self.cfg['score_mode']!r} is not one of {SCORE_MODES}")
        if self.cfg["score_mode"] == "logprobs":
            # Only in logprobs mode: text-mode cache keys stay exactly what they always were.
            self.params.update(logprobs=True, top_logprobs=self.cfg["top_logprobs"])
        self.check_structured()
        self.concurrency = self.cfg["concurrency"]
        # A request waiting out a Retry-After or a backoff gives its place in flight to one that
        # can go: it tells the engine (which may start another worker) and holds no slot.
        self.on_wait = None  # set by the engine: called with +1 as a wait starts, -1 as it ends
        self._sending: tuple | None = None  # (event loop, semaphore of cfg concurrency)
        self._fatal: str | None = None  # why the run stops: no request is sent after it
        self.backoff_base_s = BACKOFF_BASE_S if backoff_base_s is None else backoff_base_s
        # Read at construction, checked at first use: estimating cost needs no key.
        self._key = os.environ.get(self.cfg["api_key_env"])
        self.limiter = RateLimiter(self.cfg["requests_per_minute"], self.cfg["tokens_per_minute"])
        self.attempts = 0  # every HTTP request sent, failed ones included
        self.successes = 0
        self.failures: dict[str, int] = {}
        self.failure_examples: dict[str, str] = {}  # label -> first message of that kind
        self.long_waits = 0  # server-requested waits longer than VISIBLE_WAIT_S
        self._client: openai.AsyncOpenAI | None = None

    def _count(self, label: str, message: str) -> None:
        self.failures[label] = self.failures.get(label, 0) + 1
        self.failure_examples.setdefault(label, message)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: workers that failed together do not retry together.
        return random.uniform(0, min(BACKOFF_MAX_S, self.backoff_base_s * 2 ** attempt))

    def _server_wait(self, asked: float | None, backoff: float, limiter: RateLimiter | None = None) -> float:
        """How long this request waits: the server's Retry-After, capped (a 'come back tomorrow'
        must not hang the run), and at least this attempt's jittered backoff (workers told the
        same Retry-After would otherwise all come back at the same instant, and all but a few be
        refused again). A 429 is also told to the ``limiter``, which may pause every worker."""
        window = backoff if asked is None else min(asked, self.cfg["max_wait_s"])  # what everyone may wait
        wait = min(max(window, backoff), self.cfg["max_wait_s"])
        everyone = limiter.rate_limited(window, asked) if limiter is not None else False
        if asked is not None and asked > VISIBLE_WAIT_S:
            self.long_waits += 1
            # A pause of every worker looks like a hang unless it is said; one request's is not.
            log.log(logging.WARNING if everyone else logging.INFO,
                    "judge %r: server asked to wait %gs; waiting %gs (judges.%s.max_wait_s caps it)%s",
                    self.name, asked, wait, self.name,
                    ", every worker with it" if everyone else "; the other requests go on")
        return wait

    def _no_quota(self, exc: openai.APIStatusError) -> JudgeFatalError:
        message = redact(_server_message(exc), self._key)
        self._count(f"http_{exc.status_code}", message)
        return JudgeFatalError(f"judge {self.name!r} (model {self.model}) at {self.where}: the account has no "
                               f"quota left ({exc.status_code} {QUOTA_CODE}: {message}); nothing more is sent")

    async def _wait(self, seconds: float) -> None:
        # Before any success nothing says the server works at all: no other record is started.
        tell = self.on_wait if self.successes else None
        if tell is not None:
            tell(+1)
        try:
            await asyncio.sleep(seconds)
        finally:
            if tell is not None:
                tell(-1)

    def _slot(self) -> asyncio.Semaphore:
        """A place among the requests in flight (judges.X.concurrency), held only while sending."""
        loop = asyncio.get_running_loop()
        if self._sending is None or self._sending[0] is not loop:
            self._sending = (loop, asyncio.Semaphore(self.cfg["concurrency"]))
        return self._sending[1]

    def read(self, resp) -> JudgeReply:
        """A 200 is only a judgement if it is a chat completion with text in it."""
        if not isinstance(resp, dict):
            raise JudgeTransientError(f"the reply is not a JSON object ({type(resp).__name__})",
                                      FailureKind.MALFORMED_REPLY)
        choices = resp.get("choices")
        if not isinstance(choices, list) or not choices:
            raise JudgeTransientError("the reply has no choices", FailureKind.MALFORMED_REPLY)
        first = choices[0] if isinstance(choices[0], dict) else {}
        message = first.get("message") if isinstance(first.get("message"), dict) else {}
        text = message.get("content")
        if not isinstance(text, str):
            raise JudgeTransientError("the reply's message has no content", FailureKind.MALFORMED_REPLY)
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        reported = isinstance(prompt, int) and isinstance(completion, int)
        return JudgeReply(
            text=text, prompt_tokens=prompt if reported else 0,
            completion_tokens=completion if reported else 0,
            model=resp.get("model") or self.model, usage_reported=reported,
            logprobs=self._logprobs(first) if self.params.get("logprobs") else None,
        )

    @staticmethod
    def _logprobs(choice: dict) -> list:
        """The reply's token log-probabilities around the score (expected_score.trim_to_score).
        A server that ignores ``logprobs: true`` sends none: the reply is still a judgement
        (its text score stands), its expected score is then null."""
        content = (choice.get("logprobs") or {}).get("content") or []
        rows = []
        for pos in content:
            if not isinstance(pos, dict):
                continue
            rows.append({"token": pos.get("token"), "logprob": pos.get("logprob"),
                         "top_logprobs": [{"token": a.get("token"), "logprob": a.get("logprob")}
                                          for a in (pos.get("top_logprobs") or []) if isinstance(a, dict)]})
        return trim_to_score(rows)

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        try:
            return await self._complete(request)
        except JudgeFatalError as exc:
            self._fatal = self._fatal or str(exc)
            raise

    async def _complete(self, request: JudgeRequest) -> JudgeReply:
        # What the provider counts against tokens_per_minute: characters, not the tokenizer.
        tokens = cost.message_tokens(request.messages) + self.params["max_tokens"]
        last, last_kind = "no attempt", FailureKind.SERVER_ERROR
        connect_failures = 0
        for attempt in range(self.cfg["max_retries"] + 1):
            delay = self._backoff(attempt)
            try:
                async with self._slot():
                    await self.limiter.acquire(tokens)
                    if self._fatal is not None:  # another request found that nothing will work
                        raise JudgeFatalError(self._fatal)
                    self.attempts += 1
                    # The SDK's request, auth, timeouts and typed errors, without its per-request
                    # typing of the body and the reply (a third of the client's CPU at 500 req/s).
                    resp = await self.client.post("/chat/completions", body=self.body(request), cast_to=dict)
                self.limiter.answered()
                reply = self.read(resp)
            except openai.RateLimitError as exc:
                if getattr(exc, "code", None) == QUOTA_CODE:
                    raise self._no_quota(exc) from None
                asked = retry_after_seconds(exc.response.headers)
                delay = self._server_wait(asked, delay, self.limiter)
                last = f"429 rate limited{f' (Retry-After {asked:g}s)' if asked is not None else ''}"
                last_kind = FailureKind.RATE_LIMITED
                self._count("http_429", last)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                self.limiter.answered()
                message = redact(_server_message(exc), self._key)
                self._count(f"http_{exc.status_code}", message)
                raise JudgeFatalError(
                    f"judge {self.name!r} (model {self.model}) at {self.where}: {exc.status_code} {message}"
                ) from None
            except openai.APIConnectionError as exc:  # APITimeoutError is one too
                label, cause = connection_failure(exc)
                cause = redact(cause, self._key)
                if label == "timeout":
                    last, last_kind = f"timed out after {self.cfg['timeout_s']}s", FailureKind.TIMEOUT
                    self._count("timeout", last)
                else:
                    last, last_kind = f"{CONNECTION_CAUSES[label]}: {cause}", FailureKind.CONNECTION
                    self._count(label, last)
                    connect_failures += 1
                    if self.successes == 0 and connect_failures > CONNECT_RETRIES_BEFORE_FIRST_SUCCESS:
                        raise JudgeFatalError(f"cannot reach {self.where}: {last}") from None
                    if self.successes == 0:
                        delay = min(delay, 1.0)
            except openai.APIStatusError as exc:
                self.limiter.answered()
                if exc.status_code == QUOTA_STATUS or getattr(exc, "code", None) == QUOTA_CODE:
                    raise self._no_quota(exc) from None
                message = redact(_server_message(exc), self._key)
                if exc.status_code in (408, 409) or exc.status_code >= 500:
                    wait = retry_after_seconds(exc.response.headers)
                    delay = self._server_wait(wait, delay)
                    last, last_kind = f"HTTP {exc.status_code}: {message}", FailureKind.SERVER_ERROR
                    self._count(f"http_{exc.status_code}", last)
                else:
                    self._count(f"http_{exc.status_code}", f"HTTP {exc.status_code}: {message}")
                    raise JudgeRequestError(f"HTTP {exc.status_code}: {message}") from None
            except openai.APIResponseValidationError as exc:
                last, last_kind = f"malformed reply: {redact(str(exc.message), self._key)}", FailureKind.MALFORMED_REPLY
                self._count("malformed_reply", last)
            except JudgeTransientError as exc:  # from read(): a 200 that is no judgement
                last, last_kind = f"malformed reply: {exc}", exc.kind
                self._count("malformed_reply", last)
            except ValueError as exc:  # a 200 whose body is not JSON (the SDK's json.loads)
                last, last_kind = f"malformed reply: {type(exc).__name__}: {str(exc)[:200]}", FailureKind.MALFORMED_REPLY
                self._count("malformed_reply", last)
            else:
                self.successes += 1
                return reply
            if attempt < self.cfg["max_retries"]:
                await self._wait(delay)
        raise JudgeTransientError(f"gave up after {self.cfg['max_retries'] + 1} attempts; last: {last}", last_kind)


def _server_message(exc: openai.APIStatusError) -> str:
    """What the server said, without the SDK's "Error code: N - {...}" wrapping."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner.get("message"), str):
            return inner["message"]
    return str(exc.message)


def _chain(exc: BaseException) -> list[BaseException]:
    seen, out, inner = set(), [], exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        out.append(inner)
        inner = inner.__cause__ or inner.__context__
    return out


# By class name where the class belongs to a transport that may not be installed (aiohttp,
# httpx and their renamed copies): the SDK's aiohttp transport reports every aiohttp connector
# error, TLS and refusals included, as an httpx ConnectTimeout, so the SDK's own class (timeout
# or connection error) says nothing about the cause; the chain of causes below it does.
_TLS_NAMES = ("ClientSSLError", "ClientConnectorSSLError", "ClientConnectorCertificateError")
_DNS_NAMES = ("ClientConnectorDNSError",)
_BAD_URL_NAMES = ("UnsupportedProtocol", "NonHttpUrlClientError", "InvalidURL", "InvalidUrlClientError")
_CLOSED_NAMES = ("ServerDisconnectedError", "RemoteProtocolError")
_TIMEOUT_NAMES = ("SocketTimeoutError", "ServerTimeoutError", "ConnectionTimeoutError", "ReadTimeout",
                  "WriteTimeout", "PoolTimeout", "ConnectTimeout", "TimeoutException")


def connection_failure(exc: BaseException) -> tuple[str, str]:
    """(label, cause) of a failed connection or a timeout: a key of CONNECTION_CAUSES or
    ``timeout``, and the innermost reason. Checked from the most telling cause down: a TLS error
    is reported as a connector error, a timeout, or an OSError, depending on the transport."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}

    if any(isinstance(e, (ssl.SSLError, ssl.CertificateError)) for e in chain) or names & set(_TLS_NAMES):
        label = "connection_tls"
    elif any(isinstance(e, ConnectionRefusedError) for e in chain):
        label = "connection_refused"
    elif any(isinstance(e, socket.gaierror) for e in chain) or names & set(_DNS_NAMES):
        label = "connection_dns"
    elif any(isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) for e in chain):
        label = "connection_reset"
    elif names & set(_BAD_URL_NAMES):
        label = "connection_bad_url"
    elif names & set(_CLOSED_NAMES):
        label = "connection_closed"
    elif (isinstance(exc, openai.APITimeoutError) and len(chain) == 1) or names & set(_TIMEOUT_NAMES) or any(
            isinstance(e, TimeoutError) for e in chain):
        label = "timeout"
    else:
        label = "connection"
    return label, _cause(exc)


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection error ("[Errno 111] Connect call failed", "Name or
    service not known", a TLS failure, an invalid URL), not the SDK's generic "Connection error."."""
    seen, inner = set(), exc
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    if inner is exc:
        return str(exc) or type(exc).__name__
    return f"{type(inner).__name__}: {inner}"
