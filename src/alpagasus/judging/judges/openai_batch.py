"""The OpenAI Batch API as a judge: the same model, sampling, prompts and cache keys as the
``openai`` judge, at the batch price (half the online one), answered within 24 hours.

The engine hands over every uncached request at once (``complete_many``) with a sink that
prices, caches and counts each reply the moment it is read. What is in flight lives in the
batch journal (batch_journal.py) in the cache dir, so a run killed at any moment (upload,
creation, polling, download) is resumed by the next one without uploading or paying twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import openai
from tqdm import tqdm

from alpagasus.judging.judges.batch_journal import TERMINAL, BatchJournal, Chunk, split_lines
from alpagasus.core.config import filled
from alpagasus.core.identity import judge_sampling
from alpagasus.judging.judges.base import (Failure, FailureKind, JudgeFatalError, JudgeReply, JudgeRequest, JudgeRequestError, JudgeTransientError)
from alpagasus.judging.judges.openai_judge import (CONNECT_RETRIES_BEFORE_FIRST_SUCCESS, SDKJudge, _cause, redact, retry_after_seconds)

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
# What a server without GET /v1/files or GET /v1/batches answers there (not found, method not
# allowed, not implemented): the look-up falls back to uploading or creating again.
NO_LIST = frozenset({404, 405, 501})


def line_failure(status: int | None, message: str) -> Failure:
    """The failure of a result line answered with HTTP ``status`` (None: never executed)."""
    if status is None:
        return Failure(FailureKind.SERVER_ERROR, message)
    if status == 429:
        return Failure(FailureKind.RATE_LIMITED, f"HTTP 429: {message}")
    if status in (408, 409) or status >= 500:
        return Failure(FailureKind.SERVER_ERROR, f"HTTP {status}: {message}")
    return Failure(FailureKind.BAD_REQUEST, f"HTTP {status}: {message}")


class OpenAIBatchJudge(SDKJudge):
    cacheable = True
    concurrency = 1  # the engine's worker pool is not used: complete_many takes everything

    def __init__(self, name: str, cfg: dict, *, backoff_base_s: float | None = None):
        self.name = name
        self.cfg = filled("openai_batch_judge", cfg)  # the defaults of config/schema.yaml
        self.model = self.cfg["model"]
        # Exactly the online judge's: a judgement made by either backend is the other's too.
        self.params = judge_sampling(self.cfg)  # the online judge's: the same cache keys
        self.check_structured()
        self.backoff_base_s = BACKOFF_BASE_S if backoff_base_s is None else backoff_base_s
        self._key = os.environ.get(self.cfg["api_key_env"])
        self.attempts = 0        # request lines in batches this run created (what it may pay for)
        self.api_calls = 0       # files/batches calls, failed ones included
        self.failures: dict[str, int] = {}
        self.batches_created = 0
        self.files_uploaded = 0
        self._successes = 0
        self._seen_running: set[str] = set()    # chunks this run has seen not cancelled
        self._cancelled_live: set[str] = set()  # ... and then cancelled while it waited
        self._unlistable: set[str] = set()      # "files", "batches": lists the server does not serve
        self._client = None

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        raise JudgeFatalError(f"judge {self.name!r} (openai_batch) answers through complete_many, one batch "
                              f"for all requests; this engine called complete() per request")

    def _count(self, label: str, n: int = 1) -> None:
        self.failures[label] = self.failures.get(label, 0) + n

    # -- one request line ---------------------------------------------------------------------

    def request_line(self, request: JudgeRequest) -> bytes:
        body = self.body(request)
        line = {"custom_id": request.key, "method": "POST", "url": ENDPOINT, "body": body}
        return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    def read_result(self, row: dict) -> tuple[JudgeReply | None, Failure | None]:
        """A line of an output or error file: the reply, or why there is none."""
        resp = row.get("response") or {}
        err = row.get("error")
        status = resp.get("status_code") if isinstance(resp, dict) else None
        body = resp.get("body") if isinstance(resp, dict) else None
        if status == 200 and not err:
            try:
                text = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
            if not isinstance(text, str):
                return None, Failure(FailureKind.MALFORMED_REPLY, "the result line is not a chat completion with text")
            usage = body.get("usage") or {}
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            reported = isinstance(pt, int) and isinstance(ct, int)
            return JudgeReply(text=text, prompt_tokens=pt if reported else 0, completion_tokens=ct if reported else 0,
                              model=body.get("model") or self.model, usage_reported=reported), None
        if status is not None:
            message = ((body or {}).get("error") or {}).get("message") if isinstance(body, dict) else None
            return None, line_failure(int(status), str(message or body)[:500])
        if isinstance(err, dict):
            return None, line_failure(None, f"{err.get('code')}: {err.get('message')}")
        return None, Failure(FailureKind.MALFORMED_REPLY, f"unreadable result line: {json.dumps(row)[:200]}")

    # -- the Batch API calls, each retried, none ever repeated after it may have succeeded ----

    async def _api(self, what: str, call, *args, **kwargs):
        last = "no attempt"
        connect_failures = 0
        for attempt in range(self.cfg["api_retries"] + 1):
            self.api_calls += 1
            delay = random.uniform(0, min(BACKOFF_MAX_S, self.backoff_base_s * 2 ** attempt))
            try:
                result = await call(*args, **kwargs)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise JudgeFatalError(f"judge {self.name!r} at {self.where}: {what}: {exc.status_code} "
                                      f"{redact(str(exc.message), self._key)}") from None
            except openai.RateLimitError as exc:
                if getattr(exc, "code", None) == "insufficient_quota":
                    raise JudgeFatalError(f"judge {self.name!r}: the account has no quota left (429 insufficient_quota)") from None
                wait = retry_after_seconds(exc.response.headers)
                delay = delay if wait is None else min(wait, BACKOFF_MAX_S)
                last = "429 rate limited"
                self._count("api_http_429")
            except openai.APITimeoutError:
                last = f"timed out after {self.cfg['timeout_s']}s"
                self._count("api_timeout")
            except openai.APIConnectionError as exc:
                cause = redact(_cause(exc), self._key)
                last = f"connection error: {cause}"
                self._count("api_connection")
                connect_failures += 1
                if self._successes == 0 and connect_failures > CONNECT_RETRIES_BEFORE_FIRST_SUCCESS:
                    raise JudgeFatalError(f"cannot reach {self.where}: {cause}") from None
            except openai.APIStatusError as exc:
                message = redact(str(exc.message), self._key)
                if exc.status_code in (408, 409) or exc.status_code >= 500:
                    last = f"HTTP {exc.status_code}: {message}"
                    self._count(f"api_http_{exc.status_code}")
                else:
                    self._count(f"api_http_{exc.status_code}")
                    raise JudgeRequestError(f"{what}: HTTP {exc.status_code}: {message}") from None
            else:
                self._successes += 1
                return result
            if attempt < self.cfg["api_retries"]:
                log.warning("judge %r: %s failed (%s); retrying in %.1fs", self.name, what, last, delay)
                await asyncio.sleep(delay)
        raise JudgeTransientError(f"{what}: gave up after {self.cfg['api_retries'] + 1} attempts; last: {last}")

    async def _scan_files(self, chunk: Chunk):
        if "files" in self._unlistable:
            return None
        try:
            async for f in self.client.files.list(purpose="batch"):
                if f.filename == chunk.filename:
                    return f
        except openai.APIStatusError as exc:
            if exc.status_code not in NO_LIST:
                raise
            # Uploading again costs nothing: a copy that reached the server before stays unused.
            self._cannot_list("files", exc, f"uploading {chunk.filename} again")
        return None

    async def _scan_batches(self, chunk: Chunk):
        if "batches" in self._unlistable:
            return None
        try:
            async for b in self.client.batches.list(limit=100):
                if (b.metadata or {}).get("alpagasus_chunk") == chunk.id:
                    return b
        except openai.APIStatusError as exc:
            if exc.status_code not in NO_LIST:
                raise
            # Never stuck: creating again may pay twice for this chunk, so it is said loudly.
            self._cannot_list("batches", exc, f"creating the batch of {chunk.filename} again; if the earlier "
                                              f"attempt reached the server, that batch is paid for as well "
                                              f"(metadata alpagasus_chunk={chunk.id})")
        return None

    def _cannot_list(self, what: str, exc: openai.APIStatusError, then: str) -> None:
        """A look-up that cannot be answered is a look-up that found nothing; it is not asked
        again in this run."""
        self._unlistable.add(what)
        self._count(f"api_{what}_list_unavailable")
        log.warning("judge %r: %s cannot list its %s (HTTP %d), so an earlier attempt cannot be looked up: %s",
                    self.name, self.where, what, exc.status_code, then)

    async def _find_or_make(self, what: str, find, make):
        """One call through _api whose retries first look for what an earlier try may have made
        (its answer lost on the way back), so nothing is uploaded or created twice."""
        first = True

        async def once():
            nonlocal first
            if not first and (found := await find()) is not None:
                return found
            first = False
            return await make()

        return await self._api(what, once)

    async def _upload(self, chunk: Chunk, journal: BatchJournal) -> None:
        if chunk.file_id:
            return
        # An upload that began before (a kill, a lost answer) may have reached the server.
        f = await self._api(f"looking up {chunk.filename}", self._scan_files, chunk) if chunk.upload_started else None
        if f is None:
            data = (journal.dir / chunk.input_path).read_bytes()
            journal.append("uploading", chunk.id)
            chunk.upload_started = True
            f = await self._find_or_make(
                f"uploading {chunk.filename}", lambda: self._scan_files(chunk),
                lambda: self.client.files.create(file=(chunk.filename, data, "application/jsonl"), purpose="batch"))
            self.files_uploaded += 1
            log.info("uploaded %s (%d requests, %d bytes) as %s", chunk.filename, len(chunk.custom_ids), len(data), f.id)
        journal.append("uploaded", chunk.id, file_id=f.id)
        chunk.file_id = f.id
        # The server has it now; the local copy (up to 200 MB a chunk) is never needed again.
        (journal.dir / chunk.input_path).unlink(missing_ok=True)

    async def _create(self, chunk: Chunk, journal: BatchJournal) -> None:
        if chunk.batch_id:
            return
        what = f"creating the batch of {chunk.filename}"
        batch = await self._api(what, self._scan_batches, chunk) if chunk.create_started else None
        if batch is None:
            journal.append("creating", chunk.id)
            chunk.create_started = True
            batch = await self._find_or_make(
                what, lambda: self._scan_batches(chunk),
                lambda: self.client.batches.create(input_file_id=chunk.file_id, endpoint=ENDPOINT,
                                                   completion_window="24h", metadata={"alpagasus_chunk": chunk.id}))
            self.batches_created += 1
            self.attempts += len(chunk.custom_ids)
            log.info("created batch %s: %d requests, completion window 24h", batch.id, len(chunk.custom_ids))
        # A batch found already finished (a rerun long after a kill during creation) is recorded
        # as created only: the poll records how it ended, with its result files. Recorded as
        # ended here, its results would be missing and every line sent and paid for again.
        status = None if batch.status in TERMINAL else batch.status
        journal.append("created", chunk.id, batch_id=batch.id, status=status)
        chunk.batch_id, chunk.status = batch.id, status or "validating"

    async def _download(self, file_id: str) -> bytes:
        async def get():
            content = await self.client.files.content(file_id)
            return content.read()
        return await self._api(f"downloading {file_id}", get)

    # -- the whole run ------------------------------------------------------------------------

    async def complete_many(self, requests: list[JudgeRequest], sink) -> None:
        if sink.cache_dir is None:
            raise JudgeFatalError(f"judge {self.name!r} (openai_batch) needs a judgement cache: its batches are "
                                  f"recorded beside it so that a rerun resumes them")
        journal = BatchJournal(sink.cache_dir)
        run = _RunState(journal=journal, sink=sink, wanted={r.key: r for r in requests},
                        chunk_locks=_ChunkLocks(journal))
        try:
            while True:
                todo = set(run.wanted) - run.done
                if not todo:
                    return
                chunks = journal.load()
                live = [c for c in chunks.values() if not c.read and todo & set(c.custom_ids)]
                in_live = {k for c in live for k in c.custom_ids} & todo
                rereads = [c for c in chunks.values()
                           if c.read and c.id not in run.reread
                           and (todo - in_live - run.lost) & (set(c.custom_ids) - set(c.errors))]
                in_reread = {k for c in rereads for k in c.custom_ids if k not in c.errors} & todo

                fresh = []
                for key in sorted(todo - in_live - in_reread):
                    failure = run.last.get(key)
                    if failure is not None and (run.tries[key] > self.cfg["max_retries"]
                                                or failure.kind is FailureKind.BAD_REQUEST):
                        sink.fail(run.wanted[key], Failure(failure.kind, f"no reply after {run.tries[key]} "
                                                                         f"batch(es); last: {failure.message}"))
                        run.done.add(key)
                    else:
                        fresh.append(run.wanted[key])
                if fresh:
                    allowed = sink.reserve(fresh)
                    kept = {r.key for r in allowed}
                    run.done.update(r.key for r in fresh if r.key not in kept)  # the sink marked them budget
                    if allowed:
                        live += self._plan(allowed, run)
                mine = [c for c in live if run.chunk_locks.take(c.id)]
                theirs = [c for c in live if c.id not in run.chunk_locks]
                if not (mine or rereads or theirs):
                    continue
                for c in rereads:
                    run.reread.add(c.id)
                    answered = await self._read(c, run, record=False)
                    run.lost |= {k for k in c.custom_ids if k not in c.errors} - answered
                if mine:
                    await self._drive(mine, run)
                if theirs and not mine and not rereads:
                    log.info("%d batch(es) are being driven by another process; waiting", len(theirs))
                    await asyncio.sleep(self.cfg["poll_interval_s"])
        finally:
            run.chunk_locks.release()

    def _plan(self, requests: list[JudgeRequest], run: "_RunState") -> list[Chunk]:
        lines = []
        for r in requests:
            line = self.request_line(r)
            if len(line) > self.cfg["max_bytes_per_file"]:  # no file can hold it: the Batch API never sees it
                run.sink.fail(r, Failure(FailureKind.BAD_REQUEST, f"{len(line)} bytes, over the "
                                                                  f"{self.cfg['max_bytes_per_file']} bytes of a batch file"))
                run.done.add(r.key)
            else:
                lines.append((r.key, line))
        groups = split_lines(lines, self.cfg["max_requests_per_file"], self.cfg["max_bytes_per_file"])
        made = run.journal.plan(groups, model=self.model, base_url=self.cfg["base_url"],
                                api_key_env=self.cfg["api_key_env"], lock=run.chunk_locks.take)
        for c in made:
            log.info("planned chunk %s: %d requests", c.id, len(c.custom_ids))
        return made

    async def _drive(self, chunks: list[Chunk], run: "_RunState") -> None:
        for c in chunks:
            await self._upload(c, run.journal)
            await self._create(c, run.journal)
        total = sum(len(c.custom_ids) for c in chunks)
        bar = tqdm(total=total, desc=getattr(run.sink, "desc", "batch"), unit="req",
                   disable=not getattr(run.sink, "progress", True), mininterval=0.5)
        progress = {c.id: 0 for c in chunks}
        interval = self.cfg["poll_interval_s"]
        waiting = list(chunks)
        try:
            while waiting:
                for c in list(waiting):
                    if c.status not in TERMINAL:
                        await self._poll(c, run.journal, progress)
                    if c.status in TERMINAL:
                        progress[c.id] = len(c.custom_ids)
                        waiting.remove(c)
                        await self._read(c, run, record=True)
                bar.n = sum(progress.values())
                bar.refresh()
                if waiting:
                    await asyncio.sleep(interval)
                    interval = min(interval * 1.5, self.cfg["max_poll_interval_s"])
        finally:
            bar.close()

    async def _poll(self, c: Chunk, journal: BatchJournal, progress: dict) -> None:
        try:
            b = await self._api(f"checking batch {c.batch_id}", self.client.batches.retrieve, c.batch_id)
        except JudgeRequestError as exc:
            raise JudgeFatalError(
                f"{exc}: batch {c.batch_id} of {journal.path} is unknown to {self.where} (another base_url or "
                f"organisation than the run that created it?); see it with `alpagasus batches --cache-dir "
                f"{journal.dir.parent}`") from None
        if b.status in ("cancelling", "cancelled"):
            if c.id in self._seen_running:
                # Someone cancelled it while this run waits (alpagasus batches --cancel): stop,
                # do not resend; a rerun sends what it left unanswered.
                self._cancelled_live.add(c.id)
        else:
            self._seen_running.add(c.id)
        counts = b.request_counts
        done_n = (counts.completed + counts.failed) if counts else 0
        if b.status != c.status or done_n != progress[c.id]:
            log.info("batch %s: %s, %d/%d completed, %d failed", c.batch_id, b.status,
                     counts.completed if counts else 0, len(c.custom_ids), counts.failed if counts else 0)
        progress[c.id] = done_n
        c.status = b.status
        if b.status in TERMINAL:
            c.output_file_id, c.error_file_id = b.output_file_id, b.error_file_id
            c.request_counts = counts.model_dump() if counts else {}
            c.batch_errors = [f"{e.code}: {e.message}" for e in ((b.errors.data or []) if b.errors else [])]
            journal.append("ended", c.id, status=b.status, output_file_id=b.output_file_id,
                           error_file_id=b.error_file_id, request_counts=c.request_counts,
                           batch_errors=c.batch_errors)
            if b.status != "completed":
                self._count(f"batch_{b.status}")
                then = "a rerun sends" if c.id in self._cancelled_live else "sending again"
                log.warning("batch %s ended %s%s; %s its unfinished requests", c.batch_id, b.status,
                            f" ({'; '.join(c.batch_errors)})" if c.batch_errors else "", then)

    async def _read(self, c: Chunk, run: "_RunState", *, record: bool) -> set[str]:
        """Every result line of a terminal batch into the cache (through the sink) as it is
        read; the requests without a reply are journaled with their reason. Returns the keys
        answered."""
        wanted, done = run.wanted, run.done
        ids = set(c.custom_ids)
        answered: set[str] = set()
        errors: dict[str, Failure] = {}
        for file_id in (c.output_file_id, c.error_file_id):
            if not file_id:
                continue
            try:
                data = await self._download(file_id)
            except JudgeRequestError as exc:  # 404: the file expired or was deleted
                log.warning("batch %s: %s", c.batch_id, exc)
                continue
            for raw in data.splitlines():
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError:
                    self._count("unreadable_result_line")
                    continue
                key = row.get("custom_id") if isinstance(row, dict) else None
                if key not in ids or key in answered:
                    continue
                reply, failure = self.read_result(row)
                if reply is not None:
                    answered.add(key)
                    errors.pop(key, None)
                    if key in wanted and key not in done:
                        run.sink.reply(wanted[key], reply)
                        done.add(key)
                else:
                    errors[key] = failure
                    self._count(f"line_{failure.kind.value}")
        why = f" ({'; '.join(c.batch_errors)})" if c.batch_errors else ""
        unfinished = Failure(FailureKind.SERVER_ERROR, f"not executed: batch {c.batch_id} ended {c.status}{why}")
        for key in ids - answered:
            errors.setdefault(key, unfinished)
        log.info("batch %s (%s): %d replies read into the cache, %d requests without a reply", c.batch_id, c.status,
                 len(answered), len(errors))
        if record:
            run.journal.append("read", c.id, errors={k: [f.kind.value, f.message] for k, f in errors.items()})
            c.read = True
            c.errors = {k: [f.kind.value, f.message] for k, f in errors.items()}
            for key, failure in errors.items():
                if key not in wanted or key in done:
                    continue
                if c.id in self._cancelled_live:
                    run.sink.fail(wanted[key], Failure(FailureKind.STOPPED, f"batch {c.batch_id} was cancelled "
                                                                            f"while this run waited; a rerun sends it again"))
                    done.add(key)
                else:
                    run.tries[key] += 1
                    run.last[key] = failure
        return answered


class _ChunkLocks:
    """Chunks this process drives: an flock per chunk, so two runs sharing a cache dir never
    upload, create or poll the same chunk twice; the kernel drops it when a process dies.
    (Not the engine's per-key claims, claims.KeyClaims: the batch judge does not use those.)"""

    def __init__(self, journal: BatchJournal):
        self.journal = journal
        self._held: dict[str, object] = {}

    def __contains__(self, chunk_id: str) -> bool:
        return chunk_id in self._held

    def take(self, chunk_id: str) -> bool:
        if chunk_id in self._held:
            return True
        self.journal.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.journal.dir / f"chunk-{chunk_id}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._held[chunk_id] = fh
        return True

    def release(self) -> None:
        for fh in self._held.values():
            fh.close()
        self._held.clear()


@dataclass
class _RunState:
    """What one ``complete_many`` call knows while it plans, drives and reads chunks."""

    journal: BatchJournal
    sink: object                         # the engine's _BatchRun: reserve, reply, fail
    wanted: dict[str, JudgeRequest]      # key -> request, every key this call must settle
    chunk_locks: _ChunkLocks
    done: set[str] = field(default_factory=set)        # keys answered, failed for good or over budget
    tries: Counter = field(default_factory=Counter)    # key -> chunks read this run without its reply
    last: dict[str, Failure] = field(default_factory=dict)  # key -> why its latest chunk had no reply
    reread: set[str] = field(default_factory=set)      # chunks an earlier run read, read again now
    lost: set[str] = field(default_factory=set)        # keys a journal chunk answered, absent from its output now


def batch_status(cache_dir, *, cancel: bool = False) -> list[dict]:
    """Every batch in the journal of ``cache_dir`` with its status and counts, as the server
    reports them now; with ``cancel``, the unfinished ones are cancelled (a rerun then sends
    their unanswered requests again)."""
    from alpagasus.judging.judges.batch_journal import BatchJournal

    journal = BatchJournal(cache_dir)
    if not journal.exists():
        raise FileNotFoundError(f"{journal.path}: no batch journal (no batch judge has run with this cache dir)")
    rows, clients = [], {}
    try:
        for c in journal.load().values():
            row = {"chunk": c.id, "batch_id": c.batch_id, "requests": len(c.custom_ids), "status": c.status,
                   "completed": c.request_counts.get("completed"), "failed": c.request_counts.get("failed"),
                   "results_read": c.read, "unanswered": len(c.errors) if c.read else None}
            if c.batch_id and not c.terminal:
                where = (c.base_url, c.api_key_env)
                if where not in clients:
                    key = os.environ.get(c.api_key_env)
                    if not key:
                        raise RuntimeError(f"the environment variable {c.api_key_env} is not set (needed for batch {c.batch_id})")
                    clients[where] = openai.OpenAI(api_key=key, base_url=c.base_url)
                client = clients[where]
                b = client.batches.retrieve(c.batch_id)
                if cancel and b.status in ("validating", "in_progress", "finalizing"):
                    b = client.batches.cancel(c.batch_id)
                    row["cancel_requested"] = True
                counts = b.request_counts
                row.update(status=b.status, completed=counts.completed if counts else None,
                           failed=counts.failed if counts else None)
            rows.append(row)
    finally:
        for client in clients.values():
            client.close()
    return rows
