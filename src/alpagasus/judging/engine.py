"""Run many judge requests: cache first, bounded concurrency, a budget, a progress bar.

Shared by rating (data selection) and pairwise judging. Guarantees:
- a judgement in the cache is never requested again (duplicates within a run are sent once),
  and processes sharing a cache never send the same key at once (claims.KeyClaims);
- every reply is in the cache the moment it arrives (so a kill loses only what is in flight);
  the first write that fails (the cache or the claim journal: a full disk) stops the run:
  nothing more is sent, what is in flight is awaited, and its replies that could not be kept
  are counted (``lost_replies``);
- a stage's budget (``max_usd``) holds over all its runs: the money paid before by the same
  stage for the same output (tagged in the cache with the output's resolved path, however it was
  spelled) counts, and a request is only sent while that plus this run's spend plus what is in
  flight plus its own worst case stays within it. The worst case is a true bound for any text
  (cost.prompt_tokens: the model's tokenizer, else one token per UTF-8 byte, and max_tokens);
- SIGTERM (scancel, preemption) stops sending and awaits what is in flight, so a cancelled job
  loses no reply it paid for (kill -9 still loses what was in flight);
- a reply is kept without the API key in it (a server may echo it);
- a failure is reported per request, typed (judges.FailureKind), and never cached.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field, replace

from tqdm import tqdm

from alpagasus.judging import cost
from alpagasus.judging.cache import JudgementCache
from alpagasus.judging.claims import Claim, KeyClaims
from alpagasus.judging.judges import (Failure, FailureKind, Judge, JudgeFatalError, JudgeReply, JudgeRequest, JudgeRequestError, JudgeTransientError)

log = logging.getLogger(__name__)
WAIT_FOR_OTHERS_S = 0.5  # how often to look again at keys another process is sending
# While requests wait out a Retry-After or a backoff (a judge's ``on_wait``), more workers take
# the next records, up to this many per place in flight: ten records told "come back tomorrow"
# then do not hold up the forty others, and a server that refuses everything still does not get
# every record claimed and reserved at once.
MAX_WORKERS_PER_SLOT = 4


@dataclass
class Outcome:
    """Per request key: the reply (``entries``) or why there is none (``errors``)."""

    entries: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, Failure] = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)
    paid_now: int = 0
    reused: int = 0
    from_other_processes: int = 0  # keys another process sharing the cache paid for meanwhile
    prompt_tokens_now: int = 0
    completion_tokens_now: int = 0
    usd_now: float = 0.0
    usd_before: float = 0.0  # paid by the same stage in earlier runs
    max_usd: float | None = None
    attempts: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    failure_examples: dict[str, str] = field(default_factory=dict)
    long_waits: int = 0
    rate_limit_pauses: int = 0  # 429s that paused every worker (ratelimit.RateLimiter)
    without_usage: int = 0  # replies with no token usage, charged at their worst case
    lost_replies: int = 0   # paid replies that could not be written to the cache
    fatal: str | None = None
    seconds: float = 0.0

    def budget_text(self) -> str:
        spent = self.usd_before + self.usd_now
        if self.max_usd is None:
            return f"spent ${spent:.4f} (no budget)"
        return (f"budget ${self.max_usd:.2f} for this stage: spent ${spent:.4f} "
                f"(${self.usd_before:.4f} in earlier runs), ${max(0.0, self.max_usd - spent):.4f} left")

    def failure_summary(self, top: int = 3) -> str:
        """The commonest attempt failures, each with one example message."""
        kinds = sorted(self.failures_by_kind.items(), key=lambda kv: -kv[1])[:top]
        return "; ".join(f"{label} x{n} (e.g. {self.failure_examples.get(label, '?')!r})" for label, n in kinds)

    def ledger(self) -> dict:
        return {
            "estimate_before_run": self.estimate,
            "requests_sent": self.attempts,
            "judgements_paid_this_run": self.paid_now,
            "judgements_reused_from_cache": self.reused,
            "judgements_from_other_processes": self.from_other_processes,
            "prompt_tokens_this_run": self.prompt_tokens_now,
            "completion_tokens_this_run": self.completion_tokens_now,
            "usd_this_run": round(self.usd_now, 6),
            "usd_stage_before_this_run": round(self.usd_before, 6),
            "usd_stage_total": round(self.usd_before + self.usd_now, 6),
            "budget_usd": self.max_usd,
            "failed_requests_by_kind": self.failures_by_kind,
            "failure_examples": self.failure_examples,
            "server_waits_over_5s": self.long_waits,
            "rate_limit_pauses": self.rate_limit_pauses,
            "replies_without_usage": self.without_usage,
            "replies_lost_unwritable_cache": self.lost_replies,
            "unscored_by_kind": _count_kinds(self.errors.values()),
            "unscored_failed": sum(1 for e in self.errors.values() if e.kind is not FailureKind.BUDGET),
            "unscored_budget": sum(1 for e in self.errors.values() if e.kind is FailureKind.BUDGET),
            "fatal_error": self.fatal,
            "seconds": round(self.seconds, 2),
        }


def _count_kinds(failures) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in failures:
        counts[f.kind.value] = counts.get(f.kind.value, 0) + 1
    return counts


def run_judgements(
    requests: list[JudgeRequest],
    judge: Judge,
    judge_cfg: dict,
    prompt_version: str,
    cache: JudgementCache | None,
    *,
    max_usd: float | None = None,
    stage: str | None = None,
    expected_output_tokens: int = 80,
    desc: str = "judging",
    progress: bool = True,
) -> Outcome:
    """Judge every request once. ``stage`` names what pays (e.g. ``rating:results/scores.jsonl``):
    its spend is tagged in the cache (the path resolved, cost.budget_key), and ``max_usd`` caps
    the stage's total over all runs."""
    out = Outcome(max_usd=max_usd)
    stage = cost.budget_key(stage)
    t0 = time.monotonic()
    unique: dict[str, JudgeRequest] = {}
    for req in requests:
        unique.setdefault(req.key, req)
    pending = []
    # Looked up in the store 500 keys a query (the store is never loaded whole).
    found = cache.get_many(unique) if cache is not None else {}
    for key, req in unique.items():
        entry = found.get(key)
        if entry is not None:
            out.entries[key] = entry
            out.reused += 1
        else:
            pending.append(req)
    del found
    if cache is not None and stage is not None:
        out.usd_before = cache.spent(stage)

    bounds = {r.key: cost.prompt_tokens(judge.model, r.messages) for r in pending}
    out.estimate = cost.estimate(judge_cfg, [r.messages for r in pending], expected_output_tokens,
                                 counts=[bounds[r.key] for r in pending])
    out.estimate["cached"] = out.reused
    out.estimate["duplicates_in_input"] = len(requests) - len(unique)
    if pending and judge_cfg.get("backend") != "verifier":
        log.info(
            "%s with %s (%s): %d requests to send (%d already cached), ~%d input tokens, "
            "expected $%.4f, at most $%.4f (prompts counted %s); %s",
            desc, judge.name, judge.model, len(pending), out.reused, out.estimate["input_tokens"],
            out.estimate["usd_expected"], out.estimate["usd_at_most"], _counted(out.estimate["token_count"]),
            out.budget_text(),
        )
    if pending:
        runner = _BatchRun if hasattr(judge, "complete_many") else _Run
        run = runner(pending, judge, judge_cfg, prompt_version, cache, stage, desc, progress, out)
        run.bounds = bounds
        asyncio.run(run.run())
    out.attempts = judge.attempts
    out.failures_by_kind = dict(judge.failures)
    out.failure_examples = dict(getattr(judge, "failure_examples", {}))
    out.long_waits = getattr(judge, "long_waits", 0)
    out.rate_limit_pauses = getattr(getattr(judge, "limiter", None), "pauses", 0)
    out.seconds = time.monotonic() - t0
    if cache is not None:
        try:
            cache.sync()
        except OSError as exc:
            log.error("could not fsync %s: %s", cache.path, exc)
    return out


def _counted(token_count: str) -> str:
    if token_count == cost.BYTES:
        return "as one token per UTF-8 byte, a bound for any tokenizer (this model's is not known here)"
    return f"exactly with {token_count}"


class _Keeper:
    """What every runner shares: pricing, the budget gate, and keeping a reply (cache first)."""

    def __init__(self, judge, judge_cfg, prompt_version, cache, stage, out: Outcome):
        self.judge, self.cache, self.out = judge, cache, out
        self.prompt_version, self.stage = prompt_version, stage
        # What is sent is what bounds the reply: the judge's own max_tokens where it has one (the
        # schema fills it for an API judge; a local judge has no price, so any count does).
        self.max_tokens = (getattr(judge, "params", None) or {}).get("max_tokens") or judge_cfg.get("max_tokens", 0)
        self.bounds: dict[str, cost.PromptTokens] = {}  # key -> its prompt's tokens, where counted already
        self._worst: dict[str, float] = {}
        self.reserved = 0.0  # worst-case cost of the requests in flight
        self.in_flight = 0
        self.stop = asyncio.Event()

    def worst(self, req: JudgeRequest) -> float:
        """The most this request can cost: its prompt at its bound, its reply at max_tokens."""
        if req.key not in self._worst:
            count = self.bounds.get(req.key) or cost.prompt_tokens(self.judge.model, req.messages)
            self._worst[req.key] = self.judge.usd(count.at_most, self.max_tokens)
        return self._worst[req.key]

    def over_budget(self, worst: float) -> bool:
        out = self.out
        return out.max_usd is not None and out.usd_before + out.usd_now + self.reserved + worst > out.max_usd + 1e-12

    def keep(self, req: JudgeRequest, reply: JudgeReply, worst: float) -> None:
        """Price the reply, write it to the cache, count it. The first write that fails stops
        the run: a paid reply that cannot be kept must not be followed by more."""
        out = self.out
        redact = getattr(self.judge, "redact", None)
        if redact is not None:  # a server may echo the key; a reply's text is written to disk
            reply = replace(reply, text=redact(reply.text), model=redact(reply.model))
        if reply.usage_reported:
            spent = self.judge.usd(reply.prompt_tokens, reply.completion_tokens)
        else:
            spent = worst  # a server that omits usage is charged its worst case, not $0
            out.without_usage += 1
        extra = {}
        if not reply.usage_reported:
            extra["usage_reported"] = False
        if reply.logprobs is not None:
            extra["logprobs"] = reply.logprobs
        if self.stage is not None and spent:
            extra["stage"] = self.stage
        entry = {"key": req.key, "text": reply.text, "prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens, "model": reply.model,
                 "prompt_version": self.prompt_version, "usd": spent, **extra}
        out.usd_now += spent
        out.prompt_tokens_now += reply.prompt_tokens
        out.completion_tokens_now += reply.completion_tokens
        if self.cache is not None and self.judge.cacheable:
            try:
                entry = self.cache.put(req.key, reply.text, reply.prompt_tokens, reply.completion_tokens,
                                       reply.model, self.prompt_version, spent, **extra)
            except OSError as exc:
                out.lost_replies += 1
                out.errors[req.key] = Failure(FailureKind.STOPPED, f"reply paid but not written: {exc}")
                self.unwritable("the judgement cache", self.cache.path, exc, self.in_flight - 1)
                return
            out.paid_now += 1
        out.entries[req.key] = entry
        out.errors.pop(req.key, None)

    def unwritable(self, what: str, path, exc: OSError, others_in_flight: int) -> None:
        """A write that failed (a full disk) stops sending; the requests in flight are still
        awaited, so each reply they bring is kept or counted in ``lost_replies``."""
        out = self.out
        if out.fatal is None:
            out.fatal = (f"cannot write {what} {exc.filename or path}: [Errno {exc.errno}] "
                         f"{exc.strerror or exc}; stopped sending ({max(0, others_in_flight)} more "
                         f"request(s) were in flight)")
            log.error("%s", out.fatal)
        self.stop.set()


class _Run(_Keeper):
    """One run's workers over the pending requests."""

    def __init__(self, pending, judge, judge_cfg, prompt_version, cache, stage, desc, progress, out: Outcome):
        super().__init__(judge, judge_cfg, prompt_version, cache, stage, out)
        self.queue: asyncio.Queue = asyncio.Queue()
        for req in pending:
            self.queue.put_nowait(req)
        self.waiting: list[JudgeRequest] = []  # keys another process is sending
        self.budget_hit = False
        self.claims = KeyClaims(cache.path.parent) if cache is not None and judge.cacheable else None
        self.bar = tqdm(total=len(pending), desc=desc, unit="req", disable=not progress, mininterval=0.5)
        self.slots = max(1, judge.concurrency)
        self.waits = 0  # requests of this run waiting out a Retry-After or a backoff
        self.workers: set[asyncio.Task] = set()
        self.alive = 0  # workers not yet returned (a finished task may still be in the set)
        if hasattr(judge, "on_wait"):
            judge.on_wait = self._on_wait

    def _on_wait(self, change: int) -> None:
        self.waits += change
        if change > 0 and self.alive < min(self.slots + self.waits, MAX_WORKERS_PER_SLOT * self.slots):
            self._spawn()

    def _spawn(self) -> None:
        self.alive += 1
        self.workers.add(asyncio.ensure_future(self._worker()))

    async def _all_workers(self) -> None:
        for _ in range(self.slots):
            self._spawn()
        while self.workers:
            done, _ = await asyncio.wait(set(self.workers), return_when=asyncio.FIRST_COMPLETED)
            self.workers -= done
            for task in done:
                task.result()  # a worker's error is the run's

    def _terminated(self) -> None:
        """SIGTERM (scancel, a preemption, Slurm's time limit, Ctrl-C in snakemake): send nothing
        more, but await what is in flight, so that every reply paid for is kept (Slurm sends
        SIGKILL only KillWait seconds later, 30 by default)."""
        if self.out.fatal is None:
            self.out.fatal = (f"stopped by SIGTERM ({self.in_flight} request(s) in flight were awaited "
                              f"and kept)")
            log.error("SIGTERM: no new requests; awaiting the %d in flight", self.in_flight)
        self.stop.set()

    async def run(self) -> None:
        beat = asyncio.create_task(self._heartbeat()) if self.claims is not None else None
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        try:
            loop.add_signal_handler(signal.SIGTERM, self._terminated)
            on_term = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            on_term = False
        try:
            while True:
                await self._all_workers()
                if self.stop.is_set() or not self.waiting:
                    break
                await asyncio.sleep(WAIT_FOR_OTHERS_S)
                for req in self.waiting:
                    self.queue.put_nowait(req)
                self.waiting = []
        finally:
            if on_term:
                loop.remove_signal_handler(signal.SIGTERM)
                signal.signal(signal.SIGTERM, previous)
            if beat is not None:
                beat.cancel()
            self.bar.close()
            if self.claims is not None:
                self.claims.close()
            if hasattr(self.judge, "on_wait"):
                self.judge.on_wait = None
            await self.judge.aclose()
        for req in [*self.waiting, *_drain(self.queue)]:
            if req.key not in self.out.entries and req.key not in self.out.errors:
                self.out.errors[req.key] = Failure(FailureKind.STOPPED, f"run stopped: {self.out.fatal}")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.claims.ttl_s / 4)
            self.claims.heartbeat(0)

    def _postfix(self) -> None:
        fails = sum(1 for e in self.out.errors.values() if e.kind is not FailureKind.BUDGET)
        self.bar.set_postfix(spent=f"${self.out.usd_before + self.out.usd_now:.2f}", failed=fails, refresh=False)

    async def _worker(self) -> None:
        try:
            await self._work()
        finally:
            self.alive -= 1

    async def _work(self) -> None:
        out = self.out
        while not self.stop.is_set():
            if self.alive > self.slots + self.waits:
                return  # started while others waited; enough of them are back
            try:
                req = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            worst = self.worst(req)
            if self.over_budget(worst):
                out.errors[req.key] = Failure(FailureKind.BUDGET, f"not sent: {out.budget_text()}")
                if not self.budget_hit:
                    self.budget_hit = True
                    log.warning("no new requests: %s, up to $%.4f in flight", out.budget_text(), self.reserved)
                self.bar.update(1)
                continue
            if self.claims is not None:
                try:
                    state = self.claims.claim(req.key, self.cache)
                except OSError as exc:  # nothing sent for this key
                    self.unwritable("the claim journal", self.claims.path, exc, self.in_flight)
                    out.errors[req.key] = Failure(FailureKind.STOPPED, f"run stopped: {out.fatal}")
                    self.bar.update(1)
                    continue
                if state is Claim.BUSY:
                    self.waiting.append(req)
                    continue
                if state is Claim.CACHED:
                    out.entries[req.key] = self.cache.get(req.key)
                    out.from_other_processes += 1
                    self.bar.update(1)
                    continue
            self.reserved += worst
            self.in_flight += 1
            try:
                reply = await self.judge.complete(req)
            except JudgeFatalError as exc:
                if out.fatal is None:
                    out.fatal = str(exc)
                out.errors[req.key] = Failure(FailureKind.STOPPED, str(exc))
                self.stop.set()
            except (JudgeTransientError, JudgeRequestError) as exc:
                out.errors[req.key] = Failure(exc.kind, str(exc))
            else:
                self.keep(req, reply, worst)
            finally:
                self.reserved -= worst
                self.in_flight -= 1
                if self.claims is not None:
                    try:
                        self.claims.release(req.key)
                    except OSError as exc:  # the reply, if any, is already kept or counted
                        self.unwritable("the claim journal", self.claims.path, exc, self.in_flight)
            self.bar.update(1)
            self._postfix()


class _BatchRun(_Keeper):
    """A judge that takes every request at once (``complete_many``: the Batch API) gets this as
    its sink: ``reserve`` is the budget gate for what it is about to submit (the rest fail as
    BUDGET), ``reply`` keeps each reply the moment it is read, ``fail`` records a failure."""

    def __init__(self, pending, judge, judge_cfg, prompt_version, cache, stage, desc, progress, out: Outcome):
        super().__init__(judge, judge_cfg, prompt_version, cache, stage, out)
        self.pending = pending
        self.cache_dir = cache.path.parent if cache is not None else None
        self.desc, self.progress = desc, progress
        self._reserved: dict[str, float] = {}  # key -> worst case of a submitted, unanswered request
        self._budget_hit = False

    def reserve(self, requests: list[JudgeRequest]) -> list[JudgeRequest]:
        allowed = []
        for req in requests:
            if req.key in self._reserved:  # resent after a failed line: already reserved
                allowed.append(req)
                continue
            worst = self.worst(req)
            if self.over_budget(worst):
                self.out.errors[req.key] = Failure(FailureKind.BUDGET, f"not sent: {self.out.budget_text()}")
                if not self._budget_hit:
                    self._budget_hit = True
                    log.warning("no new requests: %s, up to $%.4f submitted", self.out.budget_text(), self.reserved)
                continue
            self._reserved[req.key] = worst
            self.reserved += worst
            allowed.append(req)
        return allowed

    def _release(self, req: JudgeRequest) -> float | None:
        worst = self._reserved.pop(req.key, None)
        if worst is not None:
            self.reserved -= worst
        return worst

    def reply(self, req: JudgeRequest, reply: JudgeReply) -> None:
        worst = self._release(req)
        self.keep(req, reply, self.worst(req) if worst is None else worst)
        if self.stop.is_set():
            raise JudgeFatalError(self.out.fatal or "stopped")

    def fail(self, req: JudgeRequest, failure: Failure) -> None:
        self._release(req)
        self.out.errors[req.key] = failure

    async def run(self) -> None:
        out = self.out
        try:
            await self.judge.complete_many(self.pending, self)
        except JudgeFatalError as exc:
            out.fatal = out.fatal or str(exc)
        except (JudgeTransientError, JudgeRequestError) as exc:  # a files/batches call gave up
            out.fatal = f"{type(exc).__name__}: {exc}; everything already submitted is resumed by the next run"
        except OSError as exc:  # the batch journal or an input file beside it (a full disk)
            out.fatal = out.fatal or (f"cannot write {exc.filename}: [Errno {exc.errno}] {exc.strerror or exc}; "
                                      f"everything already submitted is resumed by the next run")
            log.error("%s", out.fatal)
        finally:
            await self.judge.aclose()
        for req in self.pending:
            if req.key not in out.entries and req.key not in out.errors:
                out.errors[req.key] = Failure(FailureKind.STOPPED, f"run stopped: {out.fatal or 'no reply'}")


def _drain(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
