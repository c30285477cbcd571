"""A fake OpenAI-compatible chat-completions server, for tests and benchmarks.

Why a real HTTP server rather than a mocked client: the judging code must be exercised through
the official ``openai`` SDK exactly as in production (its retries, timeouts, header parsing and
exception classes), and the properties we care about (no record lost, no record paid for twice
under 429s, 5xx, dropped connections and hung requests) only show up with a real network path.

The server answers deterministically from the request content, so a test can compute the score
it must end up with (:func:`expected_rating`, :func:`expected_pair`) without calling the server,
and it keeps its own request log (what was *paid for*), which is the ground truth against which
a client's bookkeeping is checked.

Quick use::

    with FakeOpenAIServer(latency_s=0.1, faults=FaultPlan(rate_429=0.05)) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        ...
        assert max(srv.paid_counts().values()) == 1   # nothing paid for twice

Or as a separate process (prints one ``BASE_URL ...`` line, serves until SIGTERM)::

    python -m alpagasus.testing.fake_openai --port 0 --latency-ms 100 --rpm-cap 6000 --log log.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from aiohttp import web

from alpagasus.testing.fake_batches import FakeBatches  # the Batch API's /v1/files and /v1/batches
from alpagasus.testing.replies import (NO_SCORE_REPLY, OTHER_REPLY, RATING_SCORES, answer_score, classify, draw,
                                       error_body, format_name, expected_pair, expected_rating, pairwise_reply,
                                       parse_pairwise_user, rating_reply, reply_logprobs, reply_text,
                                       reply_usage, request_key, user_text)

__all__ = [
    "FAULT_KINDS",
    "FaultPlan",
    "FakeOpenAIServer",
    "NO_SCORE_REPLY",
    "OTHER_REPLY",
    "RATING_SCORES",
    "answer_score",
    "expected_pair",
    "expected_rating",
    "main",
    "pairwise_reply",
    "parse_pairwise_user",
    "rating_reply",
    "reply_logprobs",
]

# ---------------------------------------------------------------------------------------------
# Fault injection
# ---------------------------------------------------------------------------------------------

FAULT_KINDS = ("429", "500", "503", "hang", "no_score", "drop",
               # a 200 whose usage is missing, whose body is not JSON, whose choices are empty,
               # whose message content is null; a 400 for this one request
               "no_usage", "not_json", "empty_choices", "null_content", "400",
               # no quota left: a 402 (as OpenRouter or DeepSeek say it) and a 429 with code
               # insufficient_quota (as OpenAI does); the connection reset (a TCP RST, not a
               # close); a 200 whose text echoes the caller's API key
               "402", "quota_429", "reset", "echo_key")
# Schedule entries: a fault kind, "ok" (force a normal answer) or None (fall through to the
# probabilistic draw).
_SCHEDULE_VALUES = frozenset(FAULT_KINDS) | {"ok", None}


@dataclasses.dataclass
class FaultPlan:
    """Which failures the server injects, and how often.

    The probabilistic draw is deterministic (seeded by server seed, request key and how often
    that key has been seen), so a failing run replays exactly, while a retry of the same
    content still gets a fresh draw, as with a real flaky service.

    ``schedule`` forces the outcome of the first requests in arrival order (counting only
    requests that passed authentication and the rpm cap), for tests that need one exact
    failure: ``schedule[i]`` is a fault kind, ``"ok"`` or None (None: use the probabilistic draw).
    ``by_content`` gives every attempt of a request whose last user message contains a text
    the fault kind it maps to (a key that always fails, whatever its position), before the rest.
    """

    rate_429: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    hang: float = 0.0
    no_score: float = 0.0
    drop: float = 0.0
    no_usage: float = 0.0
    not_json: float = 0.0
    empty_choices: float = 0.0
    null_content: float = 0.0
    bad_request: float = 0.0
    payment_required: float = 0.0
    insufficient_quota: float = 0.0
    reset: float = 0.0
    echo_key: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = 3600.0
    schedule: list[str | None] = dataclasses.field(default_factory=list)
    by_content: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        probs = self._probabilities()
        for name, p in probs:
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"FaultPlan.{name} must be in [0, 1], got {p}")
        if sum(p for _, p in probs) > 1.0 + 1e-9:
            raise ValueError("FaultPlan probabilities must sum to at most 1")
        bad = [s for s in self.schedule if s not in _SCHEDULE_VALUES]
        if bad:
            raise ValueError(f"unknown schedule entries {bad}; allowed: {sorted(FAULT_KINDS)}, 'ok', None")
        bad = [k for k in self.by_content.values() if k not in FAULT_KINDS]
        if bad:
            raise ValueError(f"unknown by_content fault kinds {bad}; allowed: {sorted(FAULT_KINDS)}")
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must be >= 0")

    def _probabilities(self) -> list[tuple[str, float]]:
        return [
            ("rate_429", self.rate_429),
            ("error_500", self.error_500),
            ("error_503", self.error_503),
            ("hang", self.hang),
            ("no_score", self.no_score),
            ("drop", self.drop),
            ("no_usage", self.no_usage),
            ("not_json", self.not_json),
            ("empty_choices", self.empty_choices),
            ("null_content", self.null_content),
            ("bad_request", self.bad_request),
            ("payment_required", self.payment_required),
            ("insufficient_quota", self.insufficient_quota),
            ("reset", self.reset),
            ("echo_key", self.echo_key),
        ]

    def pick(self, u: float) -> str | None:
        """The fault for a uniform draw ``u`` in [0, 1), or None for a normal answer."""
        acc = 0.0
        for (_, p), kind in zip(self._probabilities(), FAULT_KINDS):
            acc += p
            if u < acc:
                return kind
        return None


def _seconds_header(s: float) -> str:
    """Retry-After value: decimal seconds ("1", "0.25"); the SDK parses floats."""
    return f"{round(s, 3):g}"


class _TokenBucket:
    """Rate cap as a token bucket holding one second's worth of requests.

    Why a bucket: a client pacing itself exactly at the cap never trips it, while a burst
    larger than one second of quota does, which is what providers' per-minute limits feel
    like in practice (they enforce sub-minute windows).
    """

    def __init__(self, rpm: float) -> None:
        if rpm <= 0:
            raise ValueError("rpm_cap must be > 0")
        self.rate = rpm / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.t = time.monotonic()

    def take(self) -> float:
        """0.0 if a request may pass (and consume a token), else seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class FakeOpenAIServer:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint on 127.0.0.1, in a background thread.

    It runs its own event loop in a daemon thread so that synchronous tests and code that runs
    its own asyncio loop can both talk to it over real HTTP. ``latency_s``, ``faults``,
    ``position_bias`` and ``length_bias`` are read per request and may be reassigned while the
    server runs. ``length_bias`` (None: off): on answers of equal quality and unequal length the
    pairwise judge prefers the longer one with this probability (see :func:`expected_pair`).

    Log entries (:meth:`log`): ``t``/``t_done`` (``time.monotonic()`` at arrival / when the
    answer was sent or the connection dropped; None while in flight), ``key``
    (:func:`request_key`), ``kind`` ("rating" | "pairwise" | "other"), ``status``
    ("pending" while in flight, "hang" from the moment a request starts hanging, else one of
    "ok", "no_score", "429", "500", "503", "drop", "rate_limited", "401", "400"), ``paid``
    (True exactly for 200 replies, including replies whose client already gave up: a provider
    bills those too), ``model``, ``index`` (position in the fault schedule, None if rejected
    before it), ``attempt`` (how often the key had been seen before), ``path``; for a paid reply
    ``prompt_tokens`` and ``completion_tokens`` as billed.

    ``chars_per_token`` is how the server bills: 4 characters a token by default (English on
    OpenAI's tokenizers); 1 bills a token per character (CJK text on many tokenizers), for tests
    of a budget that must hold whatever the text.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        rpm_cap: float | None = None,
        api_key: str | None = None,
        seed: int = 0,
        log_path: str | None = None,
        position_bias: float = 0.0,
        length_bias: float | None = None,
        shutdown_timeout_s: float = 1.0,
        chars_per_token: float = 4.0,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.faults = faults
        self.rpm_cap = rpm_cap
        self.api_key = api_key
        self.seed = seed
        self.log_path = log_path
        self.position_bias = position_bias
        if length_bias is not None and not 0.0 <= length_bias <= 1.0:
            raise ValueError(f"length_bias must be a probability in [0, 1] or None, got {length_bias!r}")
        self.length_bias = length_bias
        self.shutdown_timeout_s = shutdown_timeout_s
        if chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")
        self.chars_per_token = chars_per_token

        self._lock = threading.Lock()
        self._log: list[dict] = []
        self._attempts: collections.Counter[str] = collections.Counter()
        self._schedule_pos = 0
        self._bucket = _TokenBucket(rpm_cap) if rpm_cap else None
        self._ids = itertools.count(1)
        self._log_file = None

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

        self.batch_api = FakeBatches(self)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to ``openai.OpenAI`` / ``AsyncOpenAI``."""
        if self._thread is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        """Bind and serve; returns once the port is listening (so base_url is valid)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if self.log_path:
            self._log_file = open(self.log_path, "a", encoding="utf-8")
        self._thread = threading.Thread(target=self._thread_main, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("fake OpenAI server did not start within 30 s")
        if self._start_error is not None:
            self._thread = None
            raise RuntimeError(f"fake OpenAI server failed to start: {self._start_error!r}") from self._start_error
        return self

    def stop(self) -> None:
        """Stop serving, promptly even with hung requests in flight (they are aborted)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            fut.result(timeout=self.shutdown_timeout_s + 5)
        except Exception:  # noqa: BLE001 - stopping must not raise over a messy shutdown
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._start_error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/chat/completions", self._handle_chat)
        app.router.add_get("/_fake/log", self._handle_log)
        app.router.add_post("/_fake/reset", self._handle_reset)
        self.batch_api.mount(app)
        # access_log=None: per-request logging would cost more than the request itself.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout_s
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()  # wakes hung handlers, which abort their connections
        await asyncio.sleep(0)
        await self._runner.cleanup()

    # -- log ------------------------------------------------------------------------------------

    def log(self) -> list[dict]:
        """A snapshot of the request log (copies; safe to read while the server runs)."""
        with self._lock:
            return [dict(e) for e in self._log]

    def paid_counts(self) -> collections.Counter:
        """How many 200 replies each request key got: any count > 1 is money spent twice."""
        with self._lock:
            return collections.Counter(e["key"] for e in self._log if e["paid"])

    def reset_log(self) -> None:
        """Forget the log only; fault-draw attempts and the schedule position carry on."""
        with self._lock:
            self._log.clear()

    def reset(self) -> None:
        """Forget everything (log, attempt counts, schedule position, rate bucket): a fresh server."""
        with self._lock:
            self._log.clear()
            self._attempts.clear()
            self._schedule_pos = 0
            self._bucket = _TokenBucket(self.rpm_cap) if self.rpm_cap else None

    def _finish(self, entry: dict, status: str, paid: bool = False) -> None:
        with self._lock:
            entry["status"] = status
            entry["paid"] = paid
            entry["t_done"] = time.monotonic()
            if self._log_file is not None:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()

    # -- handlers -------------------------------------------------------------------------------

    async def _handle_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        if request.query.get("all") in ("1", "true", "yes"):
            self.reset()
        else:
            self.reset_log()
        return web.json_response({"ok": True})

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        t = time.monotonic()
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001 - any unreadable body is the client's 400
            body = None
        valid = isinstance(body, dict) and isinstance(body.get("messages"), list)
        model = body.get("model") if isinstance(body, dict) else None
        messages = body["messages"] if valid else []
        entry: dict[str, Any] = {
            "t": t,
            "t_done": None,
            "key": request_key(model, messages if valid else None),
            "kind": classify(messages),
            "status": "pending",
            "paid": False,
            "model": model,
            "index": None,
            "attempt": None,
            "path": request.path,
        }
        with self._lock:
            self._log.append(entry)

        auth = request.headers.get("Authorization")
        if auth is None or (self.api_key is not None and auth != f"Bearer {self.api_key}"):
            self._finish(entry, "401")
            return web.json_response(
                error_body(
                    "Incorrect API key provided." if auth else "You didn't provide an API key.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
                status=401,
            )
        if not valid or body.get("stream"):
            self._finish(entry, "400")
            msg = "streaming is not supported by the fake" if valid else "body must be JSON with 'messages'"
            return web.json_response(error_body(msg, "invalid_request_error", None), status=400)

        faults = self.faults
        index = attempt = 0
        with self._lock:
            wait = self._bucket.take() if self._bucket is not None else 0.0
            if wait == 0.0:
                index = self._schedule_pos
                self._schedule_pos += 1
                attempt = self._attempts[entry["key"]]
                self._attempts[entry["key"]] += 1
                entry["index"], entry["attempt"] = index, attempt
        if wait > 0.0:
            self._finish(entry, "rate_limited")
            return web.json_response(
                error_body(
                    f"Rate limit reached: {self.rpm_cap:g} requests per minute.", "requests", "rate_limit_exceeded"
                ),
                status=429,
                headers={"Retry-After": _seconds_header(wait), "retry-after-ms": _seconds_header(wait * 1000)},
            )

        fault: str | None = None
        if faults is not None and faults.by_content:
            user = user_text(messages)
            fault = next((k for text, k in faults.by_content.items() if text in user), None)
        if faults is not None and fault is None:
            if index < len(faults.schedule):
                fault = faults.schedule[index]
            if fault is None:
                fault = faults.pick(draw(self.seed, entry["key"], attempt))
            if fault == "ok":
                fault = None

        if fault == "429":
            assert faults is not None
            self._finish(entry, "429")
            return web.json_response(
                error_body("Rate limit reached for requests (injected).", "requests", "rate_limit_exceeded"),
                status=429,
                headers={
                    "Retry-After": _seconds_header(faults.retry_after_s),
                    "retry-after-ms": _seconds_header(faults.retry_after_s * 1000),
                },
            )
        if fault in ("402", "quota_429"):
            self._finish(entry, fault)
            if fault == "402":
                return web.json_response(error_body("Insufficient balance: add credit to go on.", "insufficient_quota",
                                                    "insufficient_quota"), status=402)
            return web.json_response(error_body(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota", "insufficient_quota"), status=429)
        if fault == "hang":
            assert faults is not None and self._stopping is not None
            with self._lock:
                entry["status"] = "hang"  # visible while it hangs (t_done stays None)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=faults.hang_s)
            except asyncio.TimeoutError:
                pass
            finally:
                # Never answer: whoever is still connected sees the connection die.
                self._abort(request)
                self._finish(entry, "hang")
            return web.Response(status=504)  # written to a dead transport; nobody receives it

        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

        if fault in ("drop", "reset"):
            self._abort(request, reset=fault == "reset")
            self._finish(entry, fault)
            return web.Response(status=502)  # written to a dead transport; nobody receives it
        if fault in ("500", "503"):
            self._finish(entry, fault)
            if fault == "500":
                err = error_body("The server had an error while processing your request.", "server_error", None)
            else:
                err = error_body("The engine is currently overloaded, please try again later.", "server_error",
                                  "service_unavailable")
            return web.json_response(err, status=int(fault))
        if fault == "400":
            self._finish(entry, "400")
            return web.json_response(
                error_body("This request was refused (injected).", "invalid_request_error", None), status=400)
        if fault == "not_json":
            self._finish(entry, "not_json")  # malformed replies are not billed
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", status=200,
                                content_type="application/json")

        fmt = body.get("response_format")
        entry["response_format"] = format_name(fmt)
        try:
            text = (NO_SCORE_REPLY if fault == "no_score"
                    else reply_text(messages, self.position_bias, self.length_bias, response_format=fmt))
        except ValueError as exc:  # a response_format OpenAI refuses: 400, not billed
            self._finish(entry, "400")
            return web.json_response(error_body(str(exc), "invalid_request_error", "invalid_response_format"),
                                     status=400)
        if fault == "echo_key":  # some servers repeat what they were sent, credentials included
            text = f"{text}\n(request authorised with {auth.removeprefix('Bearer ')})"
        pt, ct = reply_usage(messages, text, self.chars_per_token)
        payload = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": ({"content": reply_logprobs(messages, text, int(body.get("top_logprobs") or 0)),
                                  "refusal": None} if body.get("logprobs") else None),
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        }
        if fault == "empty_choices":
            payload["choices"] = []
        if fault == "null_content":
            payload["choices"][0]["message"]["content"] = None
        if fault in ("empty_choices", "null_content"):
            self._finish(entry, fault)
            return web.json_response(payload)
        if fault == "no_usage":
            del payload["usage"]
        # What the server bills, whether or not it tells the client (no_usage).
        entry["prompt_tokens"], entry["completion_tokens"] = pt, ct
        self._finish(entry, fault if fault in ("no_score", "no_usage", "echo_key") else "ok", paid=True)
        return web.json_response(payload)

    @staticmethod
    def _abort(request: web.Request, reset: bool = False) -> None:
        """Close the TCP connection with no HTTP response: the SDK sees APIConnectionError.
        ``reset``: with a TCP RST (SO_LINGER 0), so the client reads ECONNRESET, not a close."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if reset and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()


# ---------------------------------------------------------------------------------------------
# CLI: the same server as a separate process (benchmarks, pipeline runs against a fake judge)
# ---------------------------------------------------------------------------------------------

_FAULT_FIELDS = {f.name: f.type for f in dataclasses.fields(FaultPlan) if f.name not in ("schedule", "by_content")}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m alpagasus.testing.fake_openai",
        description="Fake OpenAI-compatible chat-completions server (prints BASE_URL, serves until SIGTERM).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port (printed on stdout)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rpm-cap", type=float, default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", default=None, help="append each request's log entry here as a JSON line")
    p.add_argument("--position-bias", type=float, default=0.0)
    p.add_argument("--length-bias", type=float, default=None,
                   help="on equal-quality answers prefer the longer one with this probability (default: off)")
    p.add_argument("--chars-per-token", type=float, default=4.0,
                   help="how usage is billed: 4 characters a token (default); 1 = a token per character")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                   help=f"FaultPlan field, repeatable; names: {', '.join(_FAULT_FIELDS)}")
    p.add_argument("--schedule", default=None,
                   help="comma-separated forced outcomes for the first requests, e.g. 429,ok,drop ('-' = none)")
    return p.parse_args(argv)


def _fault_plan(args: argparse.Namespace) -> FaultPlan | None:
    if not args.fault and args.schedule is None:
        return None
    kw: dict[str, Any] = {}
    for item in args.fault:
        name, sep, value = item.partition("=")
        if not sep or name not in _FAULT_FIELDS:
            raise SystemExit(f"--fault wants NAME=VALUE with NAME in {sorted(_FAULT_FIELDS)}, got {item!r}")
        kw[name] = float(value)
    if args.schedule is not None:
        kw["schedule"] = [None if s in ("-", "") else s for s in args.schedule.split(",")]
    return FaultPlan(**kw)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the single stdout line tells the parent where."""
    args = _parse_args(argv)
    server = FakeOpenAIServer(
        host=args.host,
        port=args.port,
        latency_s=args.latency_ms / 1000.0,
        faults=_fault_plan(args),
        rpm_cap=args.rpm_cap,
        api_key=args.api_key,
        seed=args.seed,
        log_path=args.log,
        position_bias=args.position_bias,
        length_bias=args.length_bias,
        chars_per_token=args.chars_per_token,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"BASE_URL {server.base_url}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
