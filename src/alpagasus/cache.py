"""A persistent, content-addressed store of paid judgements.

Append-only JSON lines, one per judgement, written and flushed the moment a reply arrives: a
process killed at any instant (kill -9) loses only the requests still in flight, and a torn
last line is skipped on the next load. Several processes (rating and judging rules running
side by side) may append to one file; an exclusive flock keeps their lines whole.
Only successful replies are stored: a transient failure is never cached.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

# What a judgement is paid for is defined with the other result identities.
from .identity import judgement_key  # noqa: F401  (re-exported: rating, pairwise)

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


def append_ledger(cache_dir: str | os.PathLike, entry: dict) -> None:
    """The spend history of every run. Rule outputs are removed when a rule fails; this never is."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / LEDGER_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), **entry}) + "\n")


class JudgementCache:
    @classmethod
    def in_dir(cls, cache_dir: str | os.PathLike) -> "JudgementCache":
        return cls(Path(cache_dir) / CACHE_FILE)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] = {}
        self._load()
        self._fh = open(self.path, "a", encoding="utf-8")
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        """A kill mid-write leaves a last line without its newline; the next judgement appended
        to it would be torn too, so terminate it first."""
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
            if torn:
                self._fh.write("\n")
                self._fh.flush()
        finally:
            fcntl.flock(self._fh, fcntl.LOCK_UN)

    def _load(self) -> None:
        if not self.path.exists():
            return
        torn = 0
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    torn += 1
        if torn:
            log.warning("%s: skipped %d unreadable line(s) (a run killed mid-write); those judgements will be redone",
                        self.path, torn)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int, model: str,
            prompt_version: str, usd: float) -> dict:
        entry = {"key": key, "text": text, "prompt_tokens": prompt_tokens,
                 "completion_tokens": completion_tokens, "model": model,
                 "prompt_version": prompt_version, "usd": usd, "time": time.time()}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        try:
            self._fh.write(line)
            self._fh.flush()  # in the kernel now: survives kill -9 of this process
        finally:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._entries[key] = entry
        return entry

    def sync(self) -> None:
        """fsync, for power loss; called at the end of a run and periodically, not per line."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
