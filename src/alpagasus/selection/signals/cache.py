"""Per-record values that cost compute (a causal LM's losses, an embedding), kept once.

One append-only JSONL file per cache key (alpagasus.core.identity.signal_cache_key: what the
model is, the keys that define the values) under ``{cache_dir}/signals/``, one line per record
content (``record_sha256``), appended a batch at a time the moment it is computed: a job killed
midway keeps what it computed, a torn last line is skipped on the next load, and a new record
set, or a signal file removed, computes only the records never computed. Several jobs (ifd and
perplexity of one model, side by side) may append to one file; an exclusive flock keeps their
lines whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class ValueCache:
    def __init__(self, cache_dir: str | os.PathLike, key: str, about: dict | None = None):
        self.path = Path(cache_dir) / "signals" / f"{key[:32]}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if about is not None and not self.path.with_suffix(".json").exists():
            # What the file holds, for a person reading the cache dir (never read back).
            with contextlib.suppress(OSError):
                self.path.with_suffix(".json").write_text(json.dumps(about, indent=2, sort_keys=True) + "\n")

    def _load(self) -> None:
        if not self.path.exists():
            return
        torn = 0
        with open(self.path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    torn += 1  # a job killed mid-write: recomputed
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[entry["record_sha256"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    torn += line.strip() != b""
        if torn:
            log.warning("%s: skipped %d unreadable line(s) (a job killed mid-write); those records are recomputed",
                        self.path, torn)

    def __contains__(self, record_sha256: str) -> bool:
        return record_sha256 in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, record_sha256: str) -> dict | None:
        return self.entries.get(record_sha256)

    def put_many(self, entries: list[dict]) -> None:
        """Append computed entries (each with ``record_sha256``) in one write, whole lines only."""
        if not entries:
            return
        data = b"".join((json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8") for e in entries)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            start = os.lseek(self._fd, 0, os.SEEK_END)
            with open(self.path, "rb") as fh:  # a torn line left by a killed job is ended first
                if start and (fh.seek(start - 1), fh.read(1))[1] != b"\n":
                    data = b"\n" + data
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # no torn line behind a failed write (a full disk)
                raise
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        for e in entries:
            self.entries[e["record_sha256"]] = e

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ValueCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
