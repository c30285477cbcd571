"""A persistent, content-addressed store of paid judgements, with bounded memory.

One SQLite database, ``judgements.sqlite`` (standard library ``sqlite3``), keyed by the judgement
key: a lookup reads a few pages of an on-disk B-tree, so opening a store of 10M judgements costs
what opening one of ten does, and nothing is loaded whole (the page cache is capped at
``CACHE_MIB``). Each reply is committed the moment it arrives, in its own transaction: once
``put`` returns, the judgement is in the kernel and survives a kill -9 of this process (a kill
mid-commit leaves an uncommitted transaction that SQLite discards on the next open), so a run
loses only the requests still in flight. ``sync()`` (the end of a run) checkpoints the WAL,
fsyncing it, for power loss. Several processes share one store: SQLite's locks serialise their
commits (waiting up to ``BUSY_TIMEOUT_S``), every read sees what the others committed, and
claims.KeyClaims keeps them from paying one key twice. A write that fails (a full disk, a lock
never granted) raises OSError naming the file, and the engine stops the run.

On a local filesystem the store is in WAL mode (readers never wait for a writer). On a shared
cluster filesystem (NFS, Lustre, GPFS, BeeGFS, CephFS, ...) WAL is unsafe: its index is shared
memory, which processes on two hosts do not share, so it runs in rollback-journal mode with
``synchronous=FULL`` instead, relying only on POSIX (fcntl) locks, which the filesystem must
honour (NFS with lockd or v4; Lustre mounted with ``-o flock``): see docs/judging.md.
``ALPAGASUS_CACHE_JOURNAL=wal|delete`` overrides the choice.

Stores written by earlier versions, ``judgements.jsonl`` (one JSON line per judgement), are
read into the database on first open, streamed and in one transaction, and nothing is paid
again; the JSON lines file is left where it was (a later line appended to it by an older
process is imported on the next open). Only successful replies are stored: a transient failure
is never cached.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

# What a judgement is paid for is defined with the other result identities.
from alpagasus.core.io import write_json, write_jsonl
from alpagasus.core.identity import judgement_key  # noqa: F401  (re-exported: rating, pairwise)
from alpagasus.judging.cost import budget_key

log = logging.getLogger(__name__)


CACHE_FILE = "judgements.sqlite"
LEGACY_FILE = "judgements.jsonl"   # what versions before the SQLite store wrote; migrated on open
LEDGER_FILE = "ledger.jsonl"
SCHEMA_VERSION = 1                 # PRAGMA user_version of a store this code writes
BUSY_TIMEOUT_S = 120.0             # how long a commit waits for another process's lock
CACHE_MIB = 64                     # SQLite's page cache per open store
JOURNAL_ENV = "ALPAGASUS_CACHE_JOURNAL"
# Filesystems shared by several hosts, where WAL's shared-memory index is not shared.
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph",
                       "glusterfs", "ocfs2", "gfs2", "afs", "9p", "panfs", "orangefs", "pvfs2", "wekafs"}
_MIGRATE_BATCH = 10_000
_SQLITE_ERRNO = {13: errno.ENOSPC, 10: errno.EIO, 8: errno.EROFS, 5: errno.EBUSY, 6: errno.EBUSY,
                 14: errno.EACCES, 3: errno.EACCES, 11: errno.EIO, 26: errno.EINVAL, 15: errno.ENOLCK}


class StoreError(OSError):
    """A judgement store that cannot be opened or read (one line naming the file). An OSError, so
    the CLI prints it as one line and a rule's log ends with it."""


def cached_keys(cache_dir: str | os.PathLike, keys) -> set[str]:
    """Which of ``keys`` already have a judgement in ``cache_dir`` (for estimates: sends nothing).
    Looks each key up; the store is never loaded whole."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / CACHE_FILE).exists() and not (cache_dir / LEGACY_FILE).exists():
        return set()
    with JudgementCache.in_dir(cache_dir) as cache:
        return cache.having(keys)


def filesystem_type(path: str | os.PathLike, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The type of the filesystem holding ``path`` (from ``mountinfo``; "" if unknown)."""
    target = os.path.realpath(path)
    best, kind = -1, ""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = fields[4].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > best:
                    best, kind = len(mount), right.split()[0]
    except OSError:
        return ""
    return kind


def journal_mode(directory: str | os.PathLike, mountinfo: str = "/proc/self/mountinfo") -> str:
    """``wal`` on a local filesystem; ``delete`` (rollback journal) on one shared by hosts."""
    override = os.environ.get(JOURNAL_ENV, "").strip().lower()
    if override:
        if override not in ("wal", "delete"):
            raise StoreError(f"{JOURNAL_ENV}={override!r}: expected 'wal' or 'delete'")
        return override
    kind = filesystem_type(directory, mountinfo)
    network = kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.") and kind[5:] in NETWORK_FILESYSTEMS
    return "delete" if network else "wal"


def _os_error(exc: sqlite3.Error, path: Path) -> OSError:
    """A failed SQLite write as the OSError the engine stops on (errno and file named)."""
    code = getattr(exc, "sqlite_errorcode", None)
    num = _SQLITE_ERRNO.get((code or 0) & 0xFF, errno.EIO)
    text = os.strerror(num) if num == errno.ENOSPC else f"{os.strerror(num)} ({exc})"
    return OSError(num, text, str(path))


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


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY NOT NULL,
    entry TEXT NOT NULL,            -- the judgement as JSON, without its key
    stage TEXT,                     -- what paid (as tagged by the engine), for spent()
    usd REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- Dollars per stage tag, kept by triggers in the same transaction as each judgement: spent()
-- reads a few rows, never the whole store. A key written again replaces its judgement (and its
-- spend), as the JSON lines store's last line won.
CREATE TABLE IF NOT EXISTS spend (stage TEXT PRIMARY KEY NOT NULL, usd REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS spend_insert AFTER INSERT ON judgements WHEN NEW.stage IS NOT NULL BEGIN
    INSERT INTO spend VALUES (NEW.stage, NEW.usd) ON CONFLICT(stage) DO UPDATE SET usd = usd + excluded.usd;
END;
CREATE TRIGGER IF NOT EXISTS spend_update AFTER UPDATE ON judgements BEGIN
    UPDATE spend SET usd = usd - OLD.usd WHERE OLD.stage IS NOT NULL AND stage = OLD.stage;
    INSERT INTO spend SELECT NEW.stage, NEW.usd WHERE NEW.stage IS NOT NULL
        ON CONFLICT(stage) DO UPDATE SET usd = usd + excluded.usd;
END;
CREATE TRIGGER IF NOT EXISTS spend_delete AFTER DELETE ON judgements WHEN OLD.stage IS NOT NULL BEGIN
    UPDATE spend SET usd = usd - OLD.usd WHERE stage = OLD.stage;
END;
PRAGMA user_version = {SCHEMA_VERSION};
"""

_PUT = ("INSERT INTO judgements (key, entry, stage, usd) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET entry = excluded.entry, stage = excluded.stage, usd = excluded.usd")


def _row(entry: dict) -> tuple:
    body = {k: v for k, v in entry.items() if k != "key"}
    stage = entry.get("stage")
    usd = entry.get("usd") or 0.0
    return (entry["key"], json.dumps(body, ensure_ascii=False), stage if isinstance(stage, str) else None,
            float(usd) if isinstance(usd, (int, float)) else 0.0)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED and their extended codes)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


@contextlib.contextmanager
def _transaction(con: sqlite3.Connection):
    """A write transaction, committed whole or rolled back (and the error raised on); IMMEDIATE:
    the write lock is taken at its start, so two writers wait rather than fail mid-way."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        raise


class JudgementCache:
    @classmethod
    def in_dir(cls, cache_dir: str | os.PathLike) -> "JudgementCache":
        return cls(Path(cache_dir) / CACHE_FILE)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.legacy = self.path.parent / LEGACY_FILE
        self.journal = journal_mode(self.path.parent)
        self._con: sqlite3.Connection | None = None
        self._data_version = None
        deadline, pause = time.monotonic() + BUSY_TIMEOUT_S, 0.05
        while True:
            try:
                self._con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                            check_same_thread=False)
                self._open()
                break
            except sqlite3.Error as exc:
                self._close_quietly()
                # Two connections opening a new store at once: SQLite answers some of the opening
                # statements (the switch to WAL) "locked" at once, without its busy wait (seen in
                # CI: two runs sharing a cache_dir). Opening is idempotent: wait and open again.
                if isinstance(exc, sqlite3.OperationalError) and _busy(exc) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(2 * pause, 1.0)
                    continue
                raise StoreError(f"cannot open the judgement store {self.path}: {exc}" + _hint(exc)) from None
            except StoreError:
                self._close_quietly()
                raise
        self._migrate()

    def _open(self) -> None:
        con = self._con
        version = con.execute("PRAGMA user_version").fetchone()[0]  # reads the header: not a database?
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: a judgement store of version {version}, newer than this alpagasus "
                             f"reads ({SCHEMA_VERSION}); use the alpagasus that wrote it, or another cache_dir")
        con.execute(f"PRAGMA cache_size = -{CACHE_MIB * 1024}")
        mode = con.execute(f"PRAGMA journal_mode = {self.journal}").fetchone()[0]
        if mode != self.journal:
            # Another process holds it open in the other mode (or the filesystem refused WAL).
            log.warning("%s: journal mode %s, not %s (another process has it open so)", self.path, mode,
                        self.journal)
            self.journal = mode
        con.execute(f"PRAGMA synchronous = {'NORMAL' if self.journal == 'wal' else 'FULL'}")
        if version < SCHEMA_VERSION:
            with _transaction(con):
                for statement in _split(_SCHEMA):
                    con.execute(statement)

    def _migrate(self) -> None:
        """Import what ``judgements.jsonl`` holds beyond what was imported already, streamed in
        one transaction (a kill mid-way imports nothing; the next open starts again)."""
        try:
            size = self.legacy.stat().st_size
        except FileNotFoundError:
            return
        done = self._meta("legacy_offset") or 0
        if size <= done:
            return
        con = self._con
        t0 = time.monotonic()
        try:
            with _transaction(con):  # one process migrates; the others wait, then find it done
                done = self._meta("legacy_offset") or 0
                offset, imported, torn = done, 0, 0
                with open(self.legacy, "rb") as fh:
                    fh.seek(done)
                    batch = []
                    for line in fh:
                        if not line.endswith(b"\n"):
                            break  # still being written (or torn by a kill): read next time
                        offset += len(line)
                        if not line.strip():
                            continue
                        try:
                            entry = json.loads(line.decode("utf-8", errors="replace"))
                            row = _row(entry)
                        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
                            torn += 1
                            continue
                        batch.append(row)
                        if len(batch) >= _MIGRATE_BATCH:
                            con.executemany(_PUT, batch)
                            imported += len(batch)
                            batch.clear()
                    con.executemany(_PUT, batch)
                    imported += len(batch)
                con.execute("INSERT INTO meta VALUES ('legacy_offset', ?) ON CONFLICT(name) DO UPDATE "
                            "SET value = excluded.value", (offset,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot import {self.legacy} into {self.path}: {exc}" + _hint(exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot import {self.legacy} into {self.path}: [Errno {exc.errno}] "
                             f"{exc.strerror or exc}") from None
        if imported or torn:
            log.info("%s: imported %d judgement(s) from %s in %.1f s (nothing is paid again; %s may be "
                     "removed)", self.path, imported, self.legacy, time.monotonic() - t0, self.legacy.name)
        if torn:
            log.warning("%s: skipped %d unreadable line(s) (a run killed mid-write); those judgements will be "
                        "redone", self.legacy, torn)

    def _meta(self, name: str):
        row = self._read("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _read(self, sql: str, args=()):
        try:
            return self._con.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the judgement store {self.path}: {exc}" + _hint(exc)) from None

    def refresh(self) -> int:
        """Every lookup already sees what other processes committed (nothing is held in memory to
        bring up to date). Kept for callers; returns 1 if the store changed since the last call."""
        version = self._read("PRAGMA data_version").fetchone()[0]
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return int(changed)

    def spent(self, stage: str) -> float:
        """Dollars paid by ``stage`` (as tagged by the engine), over every run that used this cache.
        Tags are compared resolved (cost.budget_key): one output spelled two ways is one budget."""
        want = budget_key(stage)
        return sum(usd for tag, usd in self._read("SELECT stage, usd FROM spend") if budget_key(tag) == want)

    def __contains__(self, key: str) -> bool:
        return self._read("SELECT 1 FROM judgements WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return self._read("SELECT count(*) FROM judgements").fetchone()[0]

    def get(self, key: str) -> dict | None:
        row = self._read("SELECT entry FROM judgements WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        entry = json.loads(row[0])
        entry["key"] = key
        return entry

    def get_many(self, keys) -> dict[str, dict]:
        """The judgements of those ``keys`` that have one. Looked up in sorted runs of 500 (one
        query each): consecutive queries read neighbouring pages of the B-tree."""
        found: dict[str, dict] = {}
        for run in _sorted_runs(keys):
            sql = f"SELECT key, entry FROM judgements WHERE key IN ({','.join('?' * len(run))})"
            for key, body in self._read(sql, run):
                entry = json.loads(body)
                entry["key"] = key
                found[key] = entry
        return found

    def entries(self):
        """Every judgement, streamed in key order (for tools and tests; lookups never need it)."""
        for key, body in self._read("SELECT key, entry FROM judgements ORDER BY key"):
            yield {"key": key, **json.loads(body)}

    def having(self, keys) -> set[str]:
        """Which of ``keys`` have a judgement (the entries themselves are not read)."""
        found: set[str] = set()
        for run in _sorted_runs(keys):
            sql = f"SELECT key FROM judgements WHERE key IN ({','.join('?' * len(run))})"
            found.update(k for (k,) in self._read(sql, run))
        return found

    def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int, model: str,
            prompt_version: str, usd: float, **extra) -> dict:
        """Commit one paid judgement: when this returns it survives a kill -9 of this process.
        ``extra`` holds what else was paid for or must be known later (logprobs, usage_reported,
        the stage that paid), stored as given. A failed write raises OSError naming the store."""
        entry = {"key": key, "text": text, "prompt_tokens": prompt_tokens,
                 "completion_tokens": completion_tokens, "model": model,
                 "prompt_version": prompt_version, "usd": usd, "time": time.time(), **extra}
        try:
            self._con.execute(_PUT, _row(entry))  # autocommit: one transaction, committed here
        except sqlite3.Error as exc:
            raise _os_error(exc, self.path) from None
        return entry

    def put_many(self, entries) -> int:
        """Commit many judgements in one transaction (all or none): an import's path."""
        con = self._con
        n = 0
        try:
            with _transaction(con):
                for i, entry in enumerate(entries):
                    con.execute(_PUT, _row(entry))
                    n = i + 1
        except sqlite3.Error as exc:
            raise _os_error(exc, self.path) from None
        return n

    def sync(self) -> None:
        """For power loss: a WAL checkpoint (fsyncs the WAL and the database); called at the end of
        a run, not per judgement. (In rollback mode every commit is fsynced already.)"""
        if self._con is None or self.journal != "wal":
            return
        try:
            self._con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise _os_error(exc, self.path) from None

    def _close_quietly(self) -> None:
        if self._con is not None:
            with contextlib.suppress(sqlite3.Error):
                self._con.close()
            self._con = None

    def close(self) -> None:
        if self._con is not None:
            try:
                self.sync()
            except OSError as exc:
                log.error("could not fsync %s: %s", self.path, exc)
            self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _sorted_runs(keys, chunk: int = 100_000, run: int = 500):
    """``keys`` (any iterable) in sorted chunks of ``chunk``, as lists of ``run`` (memory: one chunk)."""
    it = iter(keys)
    while True:
        block = sorted(k for _, k in zip(range(chunk), it))
        if not block:
            return
        for i in range(0, len(block), run):
            yield block[i:i + run]


def _split(script: str) -> list[str]:
    """The schema's statements, one by one (triggers hold semicolons of their own)."""
    out, buf = [], []
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        buf.append(line)
        text = "\n".join(buf)
        if text.rstrip().endswith(";") and sqlite3.complete_statement(text):
            out.append(text)
            buf = []
    return out


def _hint(exc: sqlite3.Error) -> str:
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code == 26:  # SQLITE_NOTADB
        return " (not a judgement store: move it away, or point cache_dir elsewhere)"
    name = getattr(exc, "sqlite_errorname", "") or ""
    if code == 15 or name.startswith("SQLITE_IOERR") and "LOCK" in name:  # PROTOCOL, IOERR_LOCK, _RDLOCK...
        return (" (the filesystem refused a lock: on Lustre mount with -o flock; on NFS lockd must run; "
                f"see docs/judging.md, {JOURNAL_ENV})")
    return ""


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
