"""Per-key claims, so that processes sharing one judgement cache never pay for a key twice.

Two rating runs (two overlays with one cache_dir, two Snakemake jobs, a CLI run beside a rule)
each read the cache when they start; without coordination both would send every key the other
is sending. Before a request is sent, its key is claimed: under an exclusive flock on
``claims/.lock`` the claimer re-reads what other processes have appended to the cache since it
last looked, and either finds the judgement there (no request), finds the key claimed by another
live process (wait for it), or claims it and sends.

A process's claims are one append-only journal, ``claims/<host>-<pid>.claims``, of ``+key`` and
``-key`` lines: a claim costs one small append, not a file created and removed per key (at 500
requests a second that difference is most of a core). Other processes read the journals
incrementally, from where they last stopped.

A claim never blocks forever: a journal names its host and pid and is touched while its
requests are in flight, so its claims are void when that process is dead (same host) or when
the journal has not been touched for ``ttl_s`` (another host, a frozen process).

A journal line that cannot be written (a full disk) raises OSError with the journal as its
``filename``, and nothing more is appended to that journal: a torn ``+ke`` followed by the next
line would read as a key nobody claimed. The claims it still lists are void when it is removed
at ``close()``, and another process finds a judgement in the cache before it looks at claims.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

CLAIMS_DIR = "claims"
DEFAULT_TTL_S = 60.0
SUFFIX = ".claims"


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


class _Journal:
    """What we know of another process's journal: its live keys, read up to ``offset``."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.keys: set[str] = set()
        host, _, pid = path.name[: -len(SUFFIX)].rpartition("-")
        self.host = host
        self.pid = int(pid) if pid.isdigit() else None

    def read(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            if line.startswith("+"):
                self.keys.add(line[1:])
            elif line.startswith("-"):
                self.keys.discard(line[1:])


class KeyClaims:
    def __init__(self, cache_dir: str | os.PathLike, *, ttl_s: float = DEFAULT_TTL_S):
        self.dir = Path(cache_dir) / CLAIMS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.host = socket.gethostname().replace("-", "_")
        self.pid = os.getpid()
        self.path = self.dir / f"{self.host}-{self.pid}{SUFFIX}"
        self.held: set[str] = set()
        self.taken_over = 0  # keys whose claim by a dead or frozen process was ignored
        self._others: dict[str, _Journal] = {}
        self._dir_mtime = None
        self._lock_fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        # A journal left by an earlier process with our pid (pid reuse) is void: start afresh.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        self._broken: OSError | None = None  # the write that failed; nothing is appended after it
        self._last_beat = time.monotonic()
        self._sweep()

    def _sweep(self) -> None:
        """Remove the journals of dead processes on this host (a kill -9 leaves them)."""
        for path in self.dir.glob(f"{self.host}-*{SUFFIX}"):
            journal = _Journal(path)
            if path != self.path and journal.pid is not None and not _pid_alive(journal.pid):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def _append(self, line: str) -> None:
        if self._broken is not None:
            raise OSError(self._broken.errno, self._broken.strerror, self._broken.filename)
        data = line.encode("utf-8")
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._broken = OSError(exc.errno, exc.strerror, str(self.path))
            raise self._broken from None
        if written != len(data):  # the disk filled up within the line
            self._broken = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            raise self._broken

    def _dead(self, journal: _Journal) -> bool:
        if journal.host == self.host and journal.pid is not None and not _pid_alive(journal.pid):
            return True
        try:
            return time.time() - journal.path.stat().st_mtime > self.ttl_s
        except FileNotFoundError:
            return True

    def _busy_elsewhere(self, key: str) -> bool:
        """Is ``key`` claimed by another live process? Reads what their journals added."""
        mtime = os.stat(self.dir).st_mtime_ns
        if mtime != self._dir_mtime:  # a journal appeared or went
            self._dir_mtime = mtime
            names = {p.name for p in self.dir.iterdir() if p.name.endswith(SUFFIX) and p != self.path}
            self._others = {n: self._others.get(n) or _Journal(self.dir / n) for n in names}
        for name, journal in list(self._others.items()):
            try:
                journal.read()
            except FileNotFoundError:
                del self._others[name]
                continue
            if key in journal.keys:
                if self._dead(journal):
                    self.taken_over += 1
                    continue
                return True
        return False

    def claim(self, key: str, cache) -> Claim:
        """Claim ``key`` unless ``cache`` (re-read first) has it or a live process holds it."""
        if key in self.held:
            return Claim.CLAIMED
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            cache.refresh()
            if key in cache:
                return Claim.CACHED
            if self._busy_elsewhere(key):
                return Claim.BUSY
            self._append(f"+{key}\n")
            self.held.add(key)
            return Claim.CLAIMED
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def release(self, key: str) -> None:
        """Raises OSError (naming the journal) if the release cannot be written; the key is
        released here all the same, and void for others once the journal is closed."""
        if key in self.held:
            self.held.discard(key)
            self._append(f"-{key}\n")

    def heartbeat(self, every_s: float | None = None) -> None:
        """Touch our journal (at most every ``every_s``): our claims stay alive."""
        every_s = self.ttl_s / 4 if every_s is None else every_s
        now = time.monotonic()
        if now - self._last_beat < every_s:
            return
        self._last_beat = now
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.held.clear()
        os.close(self._fd)
        try:
            self.path.unlink()  # nothing of ours is claimed any more
        except FileNotFoundError:
            pass
        os.close(self._lock_fd)
