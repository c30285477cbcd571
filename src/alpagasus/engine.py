"""Run many judge requests: cache first, bounded concurrency, a budget, a progress bar.

Shared by rating (data selection) and pairwise judging. Guarantees:
- a judgement in the cache is never requested again (duplicates within a run are sent once);
- every reply is in the cache the moment it arrives (so a kill loses only what is in flight);
- a request is only sent while the money already spent plus what is in flight plus its own
  worst case stays within the budget; past that, it is left unsent and reported;
- a failure is reported per request and never cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from . import cost
from .cache import JudgementCache
from .judges import (Failure, FailureKind, Judge, JudgeFatalError, JudgeRequest, JudgeRequestError,
                     JudgeTransientError)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Per request key: the reply (``entry``) or why there is none (``error``)."""

    entries: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, Failure] = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)
    paid_now: int = 0
    reused: int = 0
    prompt_tokens_now: int = 0
    completion_tokens_now: int = 0
    usd_now: float = 0.0
    attempts: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    fatal: str | None = None
    seconds: float = 0.0
    without_usage: int = 0  # replies with no token usage, charged at their worst case

    def ledger(self) -> dict:
        return {
            "estimate_before_run": self.estimate,
            "requests_sent": self.attempts,
            "judgements_paid_this_run": self.paid_now,
            "judgements_reused_from_cache": self.reused,
            "prompt_tokens_this_run": self.prompt_tokens_now,
            "completion_tokens_this_run": self.completion_tokens_now,
            "usd_this_run": round(self.usd_now, 6),
            "failed_requests_by_kind": self.failures_by_kind,
            "replies_without_usage": self.without_usage,
            "unscored_failed": sum(1 for e in self.errors.values() if e.kind is not FailureKind.BUDGET),
            "unscored_budget": sum(1 for e in self.errors.values() if e.kind is FailureKind.BUDGET),
            "fatal_error": self.fatal,
            "seconds": round(self.seconds, 2),
        }


def run_judgements(
    requests: list[JudgeRequest],
    judge: Judge,
    judge_cfg: dict,
    prompt_version: str,
    cache: JudgementCache | None,
    *,
    max_usd: float | None = None,
    expected_output_tokens: int = 80,
    desc: str = "judging",
    progress: bool = True,
) -> Outcome:
    out = Outcome()
    t0 = time.monotonic()
    unique: dict[str, JudgeRequest] = {}
    for req in requests:
        unique.setdefault(req.key, req)
    pending = []
    for key, req in unique.items():
        entry = cache.get(key) if cache is not None else None
        if entry is not None:
            out.entries[key] = entry
            out.reused += 1
        else:
            pending.append(req)

    out.estimate = cost.estimate(judge_cfg, [r.messages for r in pending], expected_output_tokens)
    out.estimate["cached"] = out.reused
    out.estimate["duplicates_in_input"] = len(requests) - len(unique)
    if pending and judge_cfg.get("backend") != "verifier":
        log.info(
            "%s with %s (%s): %d requests to send (%d already cached), ~%d input tokens, "
            "expected $%.2f, at most $%.2f; budget %s",
            desc, judge.name, judge.model, len(pending), out.reused, out.estimate["input_tokens"],
            out.estimate["usd_expected"], out.estimate["usd_at_most"],
            f"${max_usd:.2f}" if max_usd is not None else "none",
        )
    if pending:
        asyncio.run(_run(pending, judge, judge_cfg, prompt_version, cache, max_usd, desc, progress, out))
    out.attempts = judge.attempts
    out.failures_by_kind = dict(judge.failures)
    out.seconds = time.monotonic() - t0
    if cache is not None:
        cache.sync()
    return out


class _BatchSink:
    """What a judge that takes every request at once (``complete_many``, the Batch API) calls
    back: each reply is priced, cached and counted the moment it is read; ``reserve`` is the
    budget gate for what it is about to submit (the rest fail as BUDGET)."""

    def __init__(self, judge, judge_cfg, prompt_version, cache, max_usd, out: Outcome, desc, progress):
        self.judge, self.prompt_version, self.cache, self.max_usd, self.out = judge, prompt_version, cache, max_usd, out
        self.max_tokens = judge_cfg.get("max_tokens", 256)
        self.cache_dir = cache.path.parent if cache is not None else None
        self.desc, self.progress = desc, progress
        self._reserved: dict[str, float] = {}  # key -> worst case of a submitted, unanswered request
        self._held = 0.0                        # their sum
        self._budget_hit = False

    def _worst(self, req) -> float:
        return self.judge.usd(cost.message_tokens(req.messages), self.max_tokens)

    def reserve(self, requests: list[JudgeRequest]) -> list[JudgeRequest]:
        allowed = []
        for req in requests:
            if req.key in self._reserved:  # resent after a failed line: already reserved
                allowed.append(req)
                continue
            worst = self._worst(req)
            held = self._held
            if self.max_usd is not None and self.out.usd_now + held + worst > self.max_usd + 1e-12:
                self.out.errors[req.key] = Failure(FailureKind.BUDGET, f"not sent: budget ${self.max_usd:.2f} reached")
                if not self._budget_hit:
                    self._budget_hit = True
                    log.warning("budget $%.2f reached (spent $%.4f, submitted up to $%.4f): no new requests",
                                self.max_usd, self.out.usd_now, held)
                continue
            self._reserved[req.key] = worst
            self._held += worst
            allowed.append(req)
        return allowed

    def reply(self, req: JudgeRequest, reply) -> None:
        out, judge = self.out, self.judge
        worst = self._release(req)
        if reply.usage_reported:
            spent = judge.usd(reply.prompt_tokens, reply.completion_tokens)
        else:
            spent = self._worst(req) if worst is None else worst
            out.without_usage += 1
        extra = {} if reply.usage_reported else {"usage_reported": False}
        if reply.logprobs is not None:
            extra["logprobs"] = reply.logprobs
        entry = {"key": req.key, "text": reply.text, "prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens, "model": reply.model,
                 "prompt_version": self.prompt_version, "usd": spent, **extra}
        if self.cache is not None and judge.cacheable:
            entry = self.cache.put(req.key, reply.text, reply.prompt_tokens, reply.completion_tokens, reply.model,
                                   self.prompt_version, spent, **extra)
        out.entries[req.key] = entry
        out.errors.pop(req.key, None)
        out.paid_now += 1 if judge.cacheable else 0
        out.prompt_tokens_now += reply.prompt_tokens
        out.completion_tokens_now += reply.completion_tokens
        out.usd_now += spent

    def _release(self, req: JudgeRequest) -> float | None:
        worst = self._reserved.pop(req.key, None)
        if worst is not None:
            self._held -= worst
        return worst

    def fail(self, req: JudgeRequest, failure: Failure) -> None:
        self._release(req)
        self.out.errors[req.key] = failure


async def _run_many(pending, judge, judge_cfg, prompt_version, cache, max_usd, desc, progress, out: Outcome):
    sink = _BatchSink(judge, judge_cfg, prompt_version, cache, max_usd, out, desc, progress)
    try:
        await judge.complete_many(pending, sink)
    except JudgeFatalError as exc:
        out.fatal = str(exc)
    except (JudgeTransientError, JudgeRequestError) as exc:  # a files/batches call gave up
        out.fatal = f"{type(exc).__name__}: {exc}; everything already submitted is resumed by the next run"
    finally:
        await judge.aclose()
    for req in pending:
        if req.key not in out.entries and req.key not in out.errors:
            out.errors[req.key] = Failure(FailureKind.STOPPED, f"run stopped: {out.fatal or 'no reply'}")


async def _run(pending, judge, judge_cfg, prompt_version, cache, max_usd, desc, progress, out: Outcome):
    if hasattr(judge, "complete_many"):
        return await _run_many(pending, judge, judge_cfg, prompt_version, cache, max_usd, desc, progress, out)
    max_tokens = judge_cfg.get("max_tokens", 256)
    reserved = 0.0  # worst-case cost of the requests in flight
    budget_hit = False
    stop = asyncio.Event()
    queue: asyncio.Queue = asyncio.Queue()
    for req in pending:
        queue.put_nowait(req)
    bar = tqdm(total=len(pending), desc=desc, unit="req", disable=not progress, mininterval=0.5)

    def postfix():
        fails = sum(1 for e in out.errors.values() if e.kind is not FailureKind.BUDGET)
        bar.set_postfix(spent=f"${out.usd_now:.2f}", failed=fails, refresh=False)

    async def worker():
        nonlocal reserved, budget_hit
        while not stop.is_set():
            try:
                req = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            worst = judge.usd(cost.message_tokens(req.messages), max_tokens)
            if max_usd is not None and out.usd_now + reserved + worst > max_usd + 1e-12:
                out.errors[req.key] = Failure(FailureKind.BUDGET, f"not sent: budget ${max_usd:.2f} reached")
                if not budget_hit:
                    budget_hit = True
                    log.warning("budget $%.2f reached (spent $%.4f, in flight up to $%.4f): no new requests",
                                max_usd, out.usd_now, reserved)
                continue
            reserved += worst
            try:
                reply = await judge.complete(req)
            except JudgeFatalError as exc:
                out.fatal = str(exc)
                stop.set()
                return
            except (JudgeTransientError, JudgeRequestError) as exc:
                out.errors[req.key] = Failure(exc.kind, str(exc))
            else:
                if reply.usage_reported:
                    spent = judge.usd(reply.prompt_tokens, reply.completion_tokens)
                else:
                    spent = worst  # a server that omits usage is charged its worst case, not $0
                    out.without_usage += 1
                extra = {}
                if not reply.usage_reported:
                    extra["usage_reported"] = False
                if reply.logprobs is not None:
                    extra["logprobs"] = reply.logprobs
                entry = {"key": req.key, "text": reply.text, "prompt_tokens": reply.prompt_tokens,
                         "completion_tokens": reply.completion_tokens, "model": reply.model,
                         "prompt_version": prompt_version, "usd": spent, **extra}
                if cache is not None and judge.cacheable:
                    entry = cache.put(req.key, reply.text, reply.prompt_tokens, reply.completion_tokens,
                                      reply.model, prompt_version, spent, **extra)
                out.entries[req.key] = entry
                out.paid_now += 1 if judge.cacheable else 0
                out.prompt_tokens_now += reply.prompt_tokens
                out.completion_tokens_now += reply.completion_tokens
                out.usd_now += spent
            finally:
                reserved -= worst
            bar.update(1)
            postfix()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, judge.concurrency))))
    finally:
        bar.close()
        await judge.aclose()
    if out.fatal:
        for req in pending:
            if req.key not in out.entries and req.key not in out.errors:
                out.errors[req.key] = Failure(FailureKind.STOPPED, f"run stopped: {out.fatal}")
