"""A persistent, content-addressed store of paid judgements.

Append-only JSON lines, one per judgement, written and flushed the moment a reply arrives: a
process killed at any instant (kill -9) loses only the requests still in flight, and a torn
last line is skipped on the next load. Several processes (rating and judging rules running
side by side) may append to one file; an exclusive flock keeps their lines whole.
Only successful replies are stored: a transient failure is never cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path

# What a judgement is paid for is defined with the other result identities.
from alpagasus.core.io import write_json, write_jsonl
from alpagasus.core.identity import judgement_key  # noqa: F401  (re-exported: rating, pairwise)
from alpagasus.judging.cost import budget_key

log = logging.getLogger(__name__)


CACHE_FILE = "judgements.jsonl"
LEDGER_FILE = "ledger.jsonl"


def cached_keys(cache_dir: str | os.PathLike, keys) -> set[str]:
    """Which of ``keys`` already have a judgement in ``cache_dir`` (for estimates: sends nothing)."""
    path = Path(cache_dir) / CACHE_FILE
    if not path.exists():
        return set()
    with JudgementCache(path) as cache:
        return {k for k in keys if k in cache}


def append_ledger(cache_dir: str | os.PathLike, entry: dict) -> OSError | None:
    """The spend history of every run. Rule outputs are removed when a rule fails; this never is.
    A history line that cannot be written (a full disk) is logged and returned, never raised:
    it must not hide the run's own error. A line is appended whole or not at all."""
    path = Path(cache_dir) / LEDGER_FILE
    line = (json.dumps({"time": time.time(), **entry}) + "\n").encode("utf-8")
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        log.error("could not append to %s: [Errno %s] %s", path, exc.errno, exc.strerror)
        return OSError(exc.errno, exc.strerror, str(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # no torn history line
            log.error("could not append to %s: [Errno %s] %s", path, exc.errno, exc.strerror)
            return OSError(exc.errno, exc.strerror, str(path))
    finally:
        os.close(fd)
    return None


class JudgementCache:
    @classmethod
    def in_dir(cls, cache_dir: str | os.PathLike) -> "JudgementCache":
        return cls(Path(cache_dir) / CACHE_FILE)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] = {}
        self._load()
        # Unbuffered appends: a line is either in the kernel or its write failed right here
        # (a full disk), never left in a buffer to be half-written later.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        """A kill mid-write leaves a last line without its newline; the next judgement appended
        to it would be torn too, so terminate it first."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
            if torn:
                self._write_all(b"\n")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _load(self) -> None:
        self._offset = 0
        if self.path.exists():
            self.refresh()

    def refresh(self) -> int:
        """Read what was appended since the last look (other processes share the file).
        Returns the number of new entries. Only whole lines are read; a line still being
        written is read next time."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size <= self._offset:
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read(size - self._offset)
        end = data.rfind(b"\n") + 1
        if end == 0:
            return 0
        self._offset += end
        new = torn = 0
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line.decode("utf-8", errors="replace"))
                key = entry["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                torn += 1
                continue
            new += key not in self._entries
            self._entries[key] = entry
        if torn:
            log.warning("%s: skipped %d unreadable line(s) (a run killed mid-write); those judgements will be redone",
                        self.path, torn)
        return new

    def spent(self, stage: str) -> float:
        """Dollars paid by ``stage`` (as tagged by the engine), over every run that used this cache.
        Tags are compared resolved (cost.budget_key): one output spelled two ways is one budget."""
        want = budget_key(stage)
        resolved: dict = {}
        total = 0.0
        for e in self._entries.values():
            tag = e.get("stage")
            if tag not in resolved:
                resolved[tag] = budget_key(tag)
            if resolved[tag] == want:
                total += e.get("usd") or 0.0
        return total

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int, model: str,
            prompt_version: str, usd: float, **extra) -> dict:
        """Append one paid judgement. ``extra`` holds what else was paid for or must be known
        later (logprobs, usage_reported, the stage that paid), stored as given."""
        entry = {"key": key, "text": text, "prompt_tokens": prompt_tokens,
                 "completion_tokens": completion_tokens, "model": model,
                 "prompt_version": prompt_version, "usd": usd, "time": time.time(), **extra}
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                self._write_all(line)  # in the kernel now: survives kill -9 of this process
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # no torn line left behind a failed write
                raise
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._entries[key] = entry
        return entry

    def sync(self) -> None:
        """fsync, for power loss; called at the end of a run and periodically, not per line."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            except OSError as exc:
                log.error("could not fsync %s: %s", self.path, exc)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def errno_text(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror or exc}"


def write_ledger(ledger_path, cache_dir, ledger: dict, stage: str | None = None) -> str:
    """A stage's cost file, and the run's line in the cache's history (rating and pairwise
    judging alike; the history line names ``stage`` where the ledger does not). Either may meet a
    full disk:
    the one written holds the ledger; a ledger written nowhere goes to the log. Returns what
    the error line must add ("" if both were written)."""
    try:
        write_json(ledger_path, ledger)
        cost_error = None
    except OSError as exc:
        cost_error = exc
        log.error("cannot write %s: %s", ledger_path, errno_text(exc))
    history_error = append_ledger(cache_dir, {"stage": stage, **ledger} if stage else ledger)
    if cost_error is None:
        return ""
    history = Path(cache_dir) / LEDGER_FILE
    if history_error is None:
        return (f"; cannot write {ledger_path}: {errno_text(cost_error)} (this run's ledger is the "
                f"last line of {history})")
    log.error("this run's ledger, written nowhere else: %s", json.dumps(ledger))
    return (f"; cannot write {ledger_path}: {errno_text(cost_error)}, nor {history}: "
            f"{errno_text(history_error)} (this run's ledger is in the log)")


def write_results(path, rows, ledger_path, error_cls) -> None:
    """A stage's results, after its ledger: a full disk here loses nothing paid (every reply is
    cached), so it is one ``error_cls`` line naming the file and where the ledger is."""
    try:
        write_jsonl(path, rows)
    except OSError as exc:
        raise error_cls(f"cannot write {path}: {errno_text(exc)}; every reply is cached and the ledger is in "
                        f"{ledger_path}: a rerun writes it without sending anything") from None
