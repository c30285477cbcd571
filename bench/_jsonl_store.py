"""Today's judgement store before the SQLite one (src/alpagasus/judging/cache.py at 5fdf660),
verbatim but for this docstring and its imports: the baseline bench_scale.py measures the store
against (lookup and append rates, load time, memory at 1M judgements). Not used by the pipeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

class JudgementCache:
    @classmethod
    def in_dir(cls, cache_dir: str | os.PathLike) -> "JudgementCache":
        return cls(Path(cache_dir) / "judgements.jsonl")

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
        want = stage
        resolved: dict = {}
        total = 0.0
        for e in self._entries.values():
            tag = e.get("stage")
            if tag not in resolved:
                resolved[tag] = tag
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


