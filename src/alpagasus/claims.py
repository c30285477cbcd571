"""Per-key claims, so that processes sharing one judgement cache never pay for a key twice.

Two rating runs (two overlays with one cache_dir, two Snakemake jobs, a CLI run beside a rule)
each read the cache when they start; without coordination both would send every key the other
is sending. Before a request is sent, its key is claimed: under an exclusive flock on
``claims/.lock`` the claimer re-reads what other processes have appended to the cache since it
last looked, and either finds the judgement there (no request), finds a live claim by another
process (wait for it), or writes ``claims/<key>`` naming itself and sends. The claim goes when
the reply is in the cache or the request has failed.

A claim never blocks forever: it names its host and pid and is refreshed (mtime) while its
request is in flight, so it is stale when that process is dead (same host) or when it has not
been refreshed for ``ttl_s`` (another host, a frozen process). A stale claim is taken over.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import socket
import time
from pathlib import Path

CLAIMS_DIR = "claims"
DEFAULT_TTL_S = 60.0


class Claim(enum.Enum):
    CLAIMED = "claimed"  # ours now: send it
    CACHED = "cached"    # another process has written the judgement meanwhile
    BUSY = "busy"        # another live process is sending it: wait, then look again


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KeyClaims:
    def __init__(self, cache_dir: str | os.PathLike, *, ttl_s: float = DEFAULT_TTL_S):
        self.dir = Path(cache_dir) / CLAIMS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.held: set[str] = set()
        self.taken_over = 0  # stale claims of dead or frozen processes taken over
        self._lock_fh = open(self.dir / ".lock", "a+")
        self._last_beat = time.monotonic()

    def _path(self, key: str) -> Path:
        return self.dir / key

    def _stale(self, path: Path) -> bool:
        try:
            st = path.stat()
            owner = json.loads(path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            owner = {}  # torn by a kill mid-write: judge by age alone
            st = path.stat()
        if owner.get("host") == self.host and isinstance(owner.get("pid"), int):
            if owner["pid"] != self.pid and not _pid_alive(owner["pid"]):
                return True
        return time.time() - st.st_mtime > self.ttl_s

    def claim(self, key: str, cache) -> Claim:
        """Claim ``key`` unless ``cache`` (re-read first) has it or a live process holds it."""
        if key in self.held:
            return Claim.CLAIMED
        fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
        try:
            cache.refresh()
            if key in cache:
                return Claim.CACHED
            path = self._path(key)
            if path.exists():
                if not self._stale(path):
                    return Claim.BUSY
                self.taken_over += 1
            tmp = path.with_name(f".{key}.{self.pid}")
            tmp.write_text(json.dumps({"host": self.host, "pid": self.pid, "time": time.time()}),
                           encoding="utf-8")
            os.replace(tmp, path)
            self.held.add(key)
            return Claim.CLAIMED
        finally:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)

    def release(self, key: str) -> None:
        if key in self.held:
            self.held.discard(key)
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                pass

    def heartbeat(self, every_s: float | None = None) -> None:
        """Refresh our claims' mtime (at most every ``every_s``): a live request stays claimed."""
        every_s = self.ttl_s / 4 if every_s is None else every_s
        now = time.monotonic()
        if now - self._last_beat < every_s:
            return
        self._last_beat = now
        for key in list(self.held):
            try:
                os.utime(self._path(key))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        for key in list(self.held):
            self.release(key)
        self._lock_fh.close()
