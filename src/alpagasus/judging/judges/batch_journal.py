"""The durable record of what was sent to the OpenAI Batch API, in the cache dir.

A batch is paid for once it is created, and its results arrive hours later, so the process that
created it may be long gone (killed, preempted, the rule rerun) when they do. Every step is
therefore written here *before* the next one begins, and a rerun picks up each chunk of
requests exactly where it stopped:

    planned  -> the chunk's custom_ids and its input file (on disk, beside the journal)
    uploading, uploaded (file_id)
    creating, created (batch_id)
    ended    (terminal status, output/error file ids, request counts)
    read     (which custom_ids got no reply, and why)

``uploading``/``creating`` mark an attempt whose answer may have been lost (a kill between the
server's receipt and our write): the next run first looks the file up by its name, the batch by
its metadata, and only uploads or creates when the server has none, or cannot say (a server
without GET /v1/files or GET /v1/batches): a look-up that cannot be answered never stops a run.
Only ``ended`` makes a chunk terminal, since it carries the result files. A custom_id is planned
into a new chunk only while no unread chunk holds it, under an exclusive lock, so no key is
ever in two live batches (nor twice in one file): duplicates are impossible by construction.

The journal is append-only JSON lines, flushed and fsynced per event; a torn last line (kill
mid-write) is skipped on load.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BATCH_DIR = "batches"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "journal.lock"

# The Batch API's limits per input file.
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class Chunk:
    """One input file and the batch made of it."""

    id: str
    custom_ids: list[str]
    input_path: str
    model: str = ""
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    planned_at: float = 0.0
    upload_started: bool = False
    file_id: str | None = None
    create_started: bool = False
    batch_id: str | None = None
    status: str = "planned"
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict = field(default_factory=dict)
    batch_errors: list = field(default_factory=list)  # why a batch failed as a whole
    read: bool = False
    # custom_id -> [failure kind value, message], for requests of this chunk with no reply
    errors: dict[str, list] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """The name the input file is uploaded under: how a lost upload is found again."""
        return f"alpagasus-{self.id}.jsonl"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def split_lines(lines: list[tuple[str, bytes]], max_requests: int = MAX_REQUESTS_PER_FILE,
                max_bytes: int = MAX_BYTES_PER_FILE) -> list[list[tuple[str, bytes]]]:
    """Consecutive groups of (custom_id, line) within the Batch API's per-file limits.

    A single line over ``max_bytes`` cannot be sent at all: ValueError naming it."""
    groups: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for cid, line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"request {cid}: {len(line)} bytes, over the Batch API's {max_bytes} bytes per file")
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append((cid, line))
        size += len(line)
    if current:
        groups.append(current)
    return groups


class BatchJournal:
    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir) / BATCH_DIR
        self.path = self.dir / JOURNAL_FILE

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def locked(self):
        """Exclusive across processes: planning reads the journal and appends to it atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, event: str, chunk: str, **fields) -> None:
        """Raises OSError naming the journal when it cannot be written (a full disk): the step
        it records is then not taken."""
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"event": event, "chunk": chunk, "time": time.time(), **fields}, ensure_ascii=False) + "\n"
        with _naming(self.path), open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())  # the next step (paying) must never outlive this record
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self) -> dict[str, Chunk]:
        chunks: dict[str, Chunk] = {}
        if not self.path.exists():
            return chunks
        torn = 0
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith("\n"):
                    torn += 1
                    continue
                try:
                    ev = json.loads(line)
                    _apply(chunks, ev)
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{self.path}: line {n}: not a journal event ({exc}); the batch journal "
                                     f"is written only by alpagasus, do not edit it") from None
        if torn:
            log.warning("%s: skipped a torn last line (a run killed mid-write)", self.path)
        return chunks

    def plan(self, groups: list[list[tuple[str, bytes]]], *, model: str, base_url: str | None,
             api_key_env: str, lock=None) -> list[Chunk]:
        """Write each group's input file and record it as a chunk; keys that another process
        planned meanwhile are left out (they are already on their way). ``lock(chunk_id)`` is
        called before a chunk is recorded, so no other process can take it up first."""
        made = []
        with self.locked():
            live = {cid for c in self.load().values() if not c.read for cid in c.custom_ids}
            for group in groups:
                group = [(cid, line) for cid, line in group if cid not in live]
                if not group:
                    continue
                chunk_id = uuid.uuid4().hex[:16]
                input_path = self.dir / f"input-{chunk_id}.jsonl"
                tmp = input_path.with_suffix(".tmp")
                try:
                    with _naming(input_path), open(tmp, "wb") as fh:
                        for _, line in group:
                            fh.write(line)
                        fh.flush()
                        os.fsync(fh.fileno())
                except OSError:
                    tmp.unlink(missing_ok=True)  # no half-written input file left behind
                    raise
                os.replace(tmp, input_path)
                ids = [cid for cid, _ in group]
                if lock is not None:
                    lock(chunk_id)
                self.append("planned", chunk_id, custom_ids=ids, input_path=input_path.name, model=model,
                            base_url=base_url, api_key_env=api_key_env)
                live.update(ids)
                made.append(Chunk(id=chunk_id, custom_ids=ids, input_path=input_path.name, model=model,
                                  base_url=base_url, api_key_env=api_key_env, planned_at=time.time()))
        return made


@contextlib.contextmanager
def _naming(path: Path):
    """An OSError from a write (which has no file name of its own) names ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def _apply(chunks: dict[str, Chunk], ev: dict) -> None:
    kind, cid = ev["event"], ev["chunk"]
    if kind == "planned":
        chunks[cid] = Chunk(id=cid, custom_ids=list(ev["custom_ids"]), input_path=ev["input_path"],
                            model=ev.get("model", ""), base_url=ev.get("base_url"),
                            api_key_env=ev.get("api_key_env", "OPENAI_API_KEY"), planned_at=ev["time"])
        return
    c = chunks[cid]
    if kind == "uploading":
        c.upload_started = True
    elif kind == "uploaded":
        c.file_id, c.status = ev["file_id"], "uploaded"
    elif kind == "creating":
        c.create_started = True
    elif kind == "created":
        # Only "ended" makes a chunk terminal: it carries the result files (a terminal status
        # in "created", as earlier versions wrote for a batch found finished, has none).
        status = ev.get("status")
        c.batch_id, c.status = ev["batch_id"], status if status and status not in TERMINAL else "validating"
    elif kind == "ended":
        c.status = ev["status"]
        c.output_file_id, c.error_file_id = ev.get("output_file_id"), ev.get("error_file_id")
        c.request_counts = ev.get("request_counts") or {}
        c.batch_errors = list(ev.get("batch_errors") or [])
    elif kind == "read":
        c.read = True
        c.errors = dict(ev.get("errors") or {})
    else:
        raise KeyError(f"unknown event {kind!r}")
